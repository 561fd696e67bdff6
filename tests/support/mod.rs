//! Integration-test support: real components, no mocks.
//!
//! - [`registry`]: a real CNCF distribution registry (`docker-registry`) on loopback, in
//!   plain, basic-auth, bearer-token (with our own [`token`] server) or TLS mode.
//! - [`layer`], [`image`]: layer, image and index builders; pushing to a registry; OCI
//!   layouts, OCI archives and `docker save` archives; expected flattened trees.
//! - [`fixtures`]: the named fixture images of TESTBED.md, built from the host's busybox.
//! - [`proxy`]: a fault-injecting HTTP proxy in front of a registry.
//! - [`env`]: ports, temp roots, the `dockmaster` command, docker config and certs.d trees,
//!   skopeo and podman kept away from the host's state.
//!
//! Each test binary includes this with `mod support;` and uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod agent;
pub mod containers;
pub mod env;
pub mod fixtures;
pub mod git_server;
pub mod http;
pub mod image;
pub mod layer;
pub mod netns;
pub mod proxy;
pub mod registry;
pub mod token;

pub use env::*;
pub use fixtures::{
    busybox, busybox_rootfs, busybox_with, httpd_with_healthcheck, large_incompressible,
    multilayer_whiteouts, platform_index, tamper_blob, tampered,
};
pub use image::{push, write_docker_archive, write_oci_archive, write_oci_layout};
pub use image::{Format, Healthcheck, Image, ImageBuilder, Index, Platform, Pushable, Pusher};
pub use layer::{Blob, Compression, Entry, EntryKind, Layer, LayerBuilder, Meta, Tree};
pub use proxy::{FaultProxy, ProxyRequest};
pub use registry::{Mode, Registry};
pub use token::TokenServer;
