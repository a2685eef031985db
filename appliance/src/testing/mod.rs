//! For tests, benchmarks and running without QEMU (feature `sim`): the simulated fabric and its
//! volumes in memory, the seeded simulation harness, synthetic journals, and a real slapd for
//! the directory's tests. The image's firmware is built without it.

pub mod sim;
pub mod simulation;
pub mod slapd;
pub mod synth;
pub mod volumes;
