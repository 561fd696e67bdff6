//! One run as a container (being written).
