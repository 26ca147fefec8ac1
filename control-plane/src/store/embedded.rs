//! Embedded backend.
