//! Test bed (skeleton).
