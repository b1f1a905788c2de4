//! Work in progress (skeleton).
