//! Image manifests, indexes and configs: media types, validation, platform selection.
