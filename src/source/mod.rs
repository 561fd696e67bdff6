//! Where manifests come from: git repositories mirrored locally, read at a commit.
