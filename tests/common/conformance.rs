//! Where the external conformance data lives: `$DOCKMASTER_CONFORMANCE`, else
//! `../shared/conformance` beside the repository (as in CI). Missing data fails loudly.

use std::path::PathBuf;

pub fn conformance_dir() -> PathBuf {
    let dir = std::env::var_os("DOCKMASTER_CONFORMANCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance"));
    assert!(
        dir.join("README.md").is_file(),
        "conformance data not found at {} (set DOCKMASTER_CONFORMANCE)",
        dir.display()
    );
    dir
}
