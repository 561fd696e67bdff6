//! The container runtime: the OCI spec builder, shims, logs and the shim protocol.
pub mod cgroups;
pub mod init;
pub mod logs;
pub mod protocol;
pub mod spec;
