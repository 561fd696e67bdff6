//! Safe layer application: decompression, whiteouts, and a tar writer that never escapes its directory.
