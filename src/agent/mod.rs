//! The GitOps agent (`dockmaster agent`): follows git sources, converges the host to them and
//! keeps it there; publishes status, events and metrics.

pub mod status;
