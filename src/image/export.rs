//! `image export`: the flattened root filesystem of an image, built by applying its layer
//! blobs in order with whiteouts applied (the same writer as snapshots, in Apply mode).

use std::io::BufReader;
use std::path::Path;

use super::metadata::ImageRecord;
use super::unpack::WhiteoutMode;
use super::{layer, ImageError, ImageStore};

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
        let compression = layer::compression(&layer.digest, &layer.media_type)?;
        let f = store.content.open_blob(&layer.digest)?;
        layer::apply_verified(
            BufReader::with_capacity(1 << 20, f),
            compression,
            &layer.digest,
            &layer.diff_id,
            out,
            WhiteoutMode::Apply,
        )?;
    }
    Ok(())
}
