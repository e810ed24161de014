//! Placeholder until the fan-out bench lands.
fn main() {}
