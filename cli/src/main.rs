//! The hushwall command.
fn main() {}
