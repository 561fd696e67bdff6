//! Whole-spec tests: a busybox container end to end, option interplay, and the rootfs readers.
