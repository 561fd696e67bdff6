//! Safe layer application: decompression, whiteouts, and a tar writer that never escapes its
//! directory.
//!
//! `apply_layer` reads an uncompressed layer tar and applies it onto a directory the way
//! containerd's `archive.Apply` does, so a layer means the same thing here as under `docker`:
//! absolute entry names and symlinks are resolved *inside* the target (an absolute symlink or
//! a `..` in a link target that would leave it stays at its top, exactly like a chroot), an
//! entry *name* that climbs out with `..` is refused (as Docker's archive code does), nothing
//! outside the target is ever created, modified or followed, and whiteouts are either
//! applied (flattening) or converted to overlayfs form (one snapshot per layer).

mod apply;
mod root;
mod tar;
#[cfg(test)]
mod tests;

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::{Categorized, Category};

/// How a layer blob is compressed: the manifest module owns the media type table, this
/// module the decoders.
pub use super::manifest::LayerCompression as Compression;

impl Compression {
    /// From an OCI/Docker layer media type (parameters after `;` are ignored); `None` for a
    /// media type that is not a known layer type.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        super::manifest::layer_compression(media_type)
    }

    /// Sniffs the compression from the first bytes of a blob (gzip `1f 8b`, zstd
    /// `28 b5 2f fd`); anything else is taken as uncompressed.
    pub fn detect(prefix: &[u8]) -> Compression {
        if prefix.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Wraps a compressed stream in a streaming decoder (multi-member gzip, multi-frame zstd).
pub fn decompress<'a, R: Read + Send + 'a>(
    r: R,
    c: Compression,
) -> Result<Box<dyn Read + Send + 'a>, UnpackError> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(
            BufReader::with_capacity(128 << 10, r),
        )),
        Compression::Zstd => {
            Box::new(
                zstd::Decoder::new(r).map_err(|source| UnpackError::Decoder {
                    compression: c,
                    source,
                })?,
            )
        }
    })
}

/// What to do with whiteout entries (`.wh.NAME`, `.wh..wh..opq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Layers are stacked onto one directory: `.wh.NAME` deletes NAME, an opaque marker
    /// empties its directory of what earlier layers put there.
    Apply,
    /// The target is one layer's own (initially empty) snapshot, used as an overlayfs
    /// lowerdir: `.wh.NAME` becomes a 0/0 character device, an opaque marker becomes the
    /// `trusted.overlay.opaque=y` xattr. Hardlinks must point inside the same layer.
    Overlay,
}

#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions<'a> {
    /// Names the layer in errors (e.g. its digest).
    pub layer: &'a str,
    pub whiteouts: WhiteoutMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Archive members applied (metadata records such as PAX headers not counted).
    pub entries: u64,
    /// Bytes of regular-file data written.
    pub bytes: u64,
}

/// Why a layer could not be applied; every variant names the layer, entry errors the entry.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer {layer}: cannot open the target directory {path}: {source}")]
    Target {
        layer: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("layer {layer}: reading the layer stream at byte {offset}: {source}")]
    Read {
        layer: String,
        offset: u64,
        source: io::Error,
    },
    #[error("layer {layer}: malformed tar at byte {offset}: {reason}")]
    Malformed {
        layer: String,
        offset: u64,
        reason: String,
    },
    #[error("layer {layer}: entry {entry:?} refused: {reason}")]
    Refused {
        layer: String,
        entry: String,
        reason: String,
    },
    #[error("layer {layer}: entry {entry:?}: {op}: {source}")]
    Entry {
        layer: String,
        entry: String,
        op: &'static str,
        source: io::Error,
    },
    #[error("starting the {compression:?} decoder: {source}")]
    Decoder {
        compression: Compression,
        source: io::Error,
    },
}

impl Categorized for UnpackError {
    fn category(&self) -> Category {
        match self {
            UnpackError::Malformed { .. } | UnpackError::Refused { .. } => Category::Invalid,
            UnpackError::Read { source, .. } => match source.kind() {
                io::ErrorKind::InvalidData
                | io::ErrorKind::InvalidInput
                | io::ErrorKind::UnexpectedEof => Category::Invalid,
                _ => Category::Transient,
            },
            // Errors of the machine (disk full, I/O, out of fds) versus errors the layer's
            // content provokes (a file where a directory must be, a hardlink to a directory).
            UnpackError::Entry { source, .. } => match source.raw_os_error() {
                Some(
                    libc::ENOSPC
                    | libc::EDQUOT
                    | libc::EIO
                    | libc::EROFS
                    | libc::ENOMEM
                    | libc::EMFILE
                    | libc::ENFILE,
                ) => Category::Internal,
                _ => Category::Invalid,
            },
            UnpackError::Target { .. } | UnpackError::Decoder { .. } => Category::Internal,
        }
    }
}

/// Applies an uncompressed tar stream onto `dest` (see the module docs for the rules).
///
/// Reads the stream to its very end, end-of-archive blocks and trailing bytes included, so a
/// hashing reader underneath sees the whole diff. File data is streamed through a fixed
/// buffer; nothing is synced (the caller syncs the finished directory once).
pub fn apply_layer<R: Read>(
    tar: R,
    dest: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, UnpackError> {
    apply::apply(tar, dest, opts)
}

/// `mkdir -p` of `path` inside the directory tree at `root`, resolving symlinks as if `root`
/// were `/` (nothing is created outside it). For a container's working directory, which
/// Docker creates when the image lacks it.
pub fn create_dir_in_root(root: &std::path::Path, path: &str) -> std::io::Result<()> {
    let comps: Vec<&[u8]> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::as_bytes)
        .collect();
    if comps.contains(&&b".."[..]) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{path:?} contains `..`"),
        ));
    }
    root::Root::open(root, 0o022)?
        .resolve(&comps, true)
        .map(|_| ())
}
