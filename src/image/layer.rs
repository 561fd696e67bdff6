//! One way to turn a compressed layer blob into files: decompress, apply with the safe
//! writer, read the stream to its end and check the diff ID. Snapshots (overlay form) and
//! exports (whiteouts applied) differ only in the whiteout mode.

use std::io::{self, Read};
use std::path::Path;

use super::digest::{Digest, HashingReader};
use super::unpack::{self, ApplyOptions, Compression, WhiteoutMode};
use super::ImageError;

/// The layer's compression from its media type, or a clear error naming the layer.
pub fn compression(layer: &Digest, media_type: &str) -> Result<Compression, ImageError> {
    Compression::from_media_type(media_type).ok_or_else(|| ImageError::UnsupportedLayer {
        digest: layer.clone(),
        media_type: media_type.to_string(),
    })
}

/// Applies the compressed layer `reader` onto `dest` and verifies its diff ID.
pub fn apply_verified<R: Read + Send>(
    reader: R,
    compression: Compression,
    layer: &Digest,
    diff_id: &Digest,
    dest: &Path,
    whiteouts: WhiteoutMode,
) -> Result<(), ImageError> {
    let name = layer.to_string();
    let unpack_err = |source| ImageError::Unpack {
        layer: layer.clone(),
        source,
    };
    let decompressed = unpack::decompress(reader, compression).map_err(unpack_err)?;
    let mut hashing = HashingReader::new(decompressed, diff_id.algorithm());
    let opts = ApplyOptions {
        layer: &name,
        whiteouts,
    };
    unpack::apply_layer(&mut hashing, dest, &opts).map_err(unpack_err)?;
    // apply_layer reads to the end of the tar; anything after it still counts for the diff ID.
    io::copy(&mut hashing, &mut io::sink()).map_err(|source| ImageError::LayerRead {
        layer: layer.clone(),
        source,
    })?;
    let (_, actual, _) = hashing.finish();
    if actual != *diff_id {
        return Err(ImageError::DiffIdMismatch {
            layer: layer.clone(),
            expected: diff_id.clone(),
            actual,
        });
    }
    Ok(())
}
