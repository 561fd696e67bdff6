//! The small error category every module's error maps to: it decides retry or fail.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Bad input: fix the input, retrying will not help.
    Invalid,
    NotFound,
    Conflict,
    /// Network hiccups, 5xx, timeouts: retry with backoff.
    Transient,
    Internal,
}

/// Implemented by every module error so callers can decide whether to retry.
pub trait Categorized {
    fn category(&self) -> Category;
}
