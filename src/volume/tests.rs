//! Unit tests of the volume store and the copy-up.
