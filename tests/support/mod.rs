//! Integration-test support: real components, no mocks.
//!
//! - [`registry`]: a real CNCF distribution registry (`docker-registry`) on loopback, in
//!   plain, basic-auth, bearer-token (with our own token server) or TLS mode.
//! - [`fixtures`]: image, layer, index builders and the named fixture images, pushing to a
//!   registry and writing OCI layouts and archives.
//! - [`proxy`]: a fault-injecting HTTP proxy in front of a registry.
//! - [`env`]: ports, temp roots, the `dockmaster` command, docker config and certs.d trees.
//!
//! Each test binary includes this with `mod support;` and uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod env;

pub use env::*;
pub mod http;
pub mod registry;
pub mod token;

pub use registry::{Mode, Registry};
pub use token::TokenServer;
pub mod image;
pub mod layer;

pub use image::{push, write_docker_archive, write_oci_archive, write_oci_layout};
pub use image::{Format, Healthcheck, Image, ImageBuilder, Index, Platform, Pushable, Pusher};
pub use layer::{Blob, Compression, Entry, EntryKind, Layer, LayerBuilder, Meta, Tree};
pub mod fixtures;

pub use fixtures::{
    busybox, busybox_rootfs, busybox_with, httpd_with_healthcheck, large_incompressible,
    multilayer_whiteouts, platform_index, tamper_blob, tampered,
};
pub mod proxy;

pub use proxy::{FaultProxy, ProxyRequest};
