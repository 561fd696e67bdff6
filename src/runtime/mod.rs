//! The container runtime: the OCI spec builder, shims, logs and the shim protocol.
pub mod logs;
pub mod protocol;
pub mod spec;
pub mod cgroups;
