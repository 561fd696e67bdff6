//! dockmaster: a declarative GitOps agent for single Linux hosts.
//!
//! The binary (`src/main.rs`) decides what the process is before any async runtime starts;
//! everything else lives in modules named after the concepts they own.

pub mod agent;
pub mod api;
pub mod cli;
pub mod config;
pub mod error;
pub mod fsutil;
pub mod health;
pub mod image;
pub mod jobs;
pub mod manifest;
pub mod metrics;
pub mod network;
pub mod plan;
pub mod process;
pub mod reconcile;
pub mod runtime;
pub mod schedule;
pub mod source;
pub mod volume;
