//! Builds the bootable image: Debian kernel, resolved modules, a cpio initramfs whose /init is the appliance, and a data disk.
