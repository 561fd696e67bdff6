//! From an image reference to a verified, unpacked, shareable root filesystem on disk.

pub mod digest;
pub mod manifest;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod store;
pub mod unpack;

pub use digest::Digest;
pub use reference::Reference;
