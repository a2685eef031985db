//! `qemu up | bench`: boots the appliance image under QEMU with the emulated fabric.
fn main() {}
