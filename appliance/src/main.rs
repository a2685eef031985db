//! The appliance binary: serve the core, inspect the journal, and run as PID 1 in its image.
fn main() {}
