//! The fabric link to the QEMU bench's emulated switch over a virtio-serial port.
