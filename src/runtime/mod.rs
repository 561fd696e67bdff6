//! The container runtime: the OCI spec builder, shims, logs and the shim protocol.
pub mod cgroups;
pub mod container;
pub mod create;
pub mod engine;
pub mod init;
pub mod lifecycle;
pub mod logs;
pub mod protocol;
pub mod rootfs;
pub mod seccomp;
pub mod shim;
pub mod signal;
pub mod spec;
