//! Scheduling decisions (being written).
