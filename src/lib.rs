//! Keel
