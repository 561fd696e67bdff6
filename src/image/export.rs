//! `image export`: the flattened root filesystem of an image, built by applying its layer
//! blobs in order with whiteouts applied (the same writer as snapshots, in Apply mode).

use std::io::{self, BufReader};
use std::path::Path;

use super::digest::HashingReader;
use super::metadata::ImageRecord;
use super::unpack::{self, ApplyOptions, Compression, WhiteoutMode};
use super::{ImageError, ImageStore};

pub fn export(store: &ImageStore, image: &ImageRecord, out: &Path) -> Result<(), ImageError> {
    let io_err = |source| ImageError::Io {
        path: out.to_path_buf(),
        source,
    };
    if out.exists() {
        if std::fs::read_dir(out).map_err(io_err)?.next().is_some() {
            return Err(ImageError::Invalid(format!(
                "export target {} is not empty",
                out.display()
            )));
        }
    } else {
        std::fs::create_dir_all(out).map_err(io_err)?;
    }
    for layer in &image.layers {
        let compression = Compression::from_media_type(&layer.media_type).ok_or_else(|| {
            ImageError::UnsupportedLayer {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
            }
        })?;
        let f = store.content.open_blob(&layer.digest)?;
        let name = layer.digest.to_string();
        let unpack_err = |e| ImageError::Unpack {
            layer: layer.digest.clone(),
            source: e,
        };
        let decompressed = unpack::decompress(BufReader::with_capacity(1 << 20, f), compression)
            .map_err(unpack_err)?;
        let mut hashing = HashingReader::new(decompressed, layer.diff_id.algorithm());
        unpack::apply_layer(
            &mut hashing,
            out,
            &ApplyOptions {
                layer: &name,
                whiteouts: WhiteoutMode::Apply,
            },
        )
        .map_err(unpack_err)?;
        io::copy(&mut hashing, &mut io::sink()).map_err(|e| ImageError::LayerRead {
            layer: layer.digest.clone(),
            source: e,
        })?;
        let (_, actual, _) = hashing.finish();
        if actual != layer.diff_id {
            return Err(ImageError::DiffIdMismatch {
                layer: layer.digest.clone(),
                expected: layer.diff_id.clone(),
                actual,
            });
        }
    }
    Ok(())
}
