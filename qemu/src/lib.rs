//! The QEMU test bench: q35 VM, QMP client, the emulated fabric switch, serial console access.
