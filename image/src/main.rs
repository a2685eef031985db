//! `image build`: builds the kernel, initramfs and data disk of the appliance image.
fn main() {}
