//! The hardware, behind small traits: the fabric switch link and the server's PCI, NVMe, RDMA,
//! mounts and watchdog, with Linux implementations on sysfs, netlink, io_uring and /dev.
//!
//! `drivers` never sees a domain type of the appliance: it speaks of PCI addresses, slots, pool
//! devices and ports.
//!
//! - [`fabric`]: the agreed [`Fabric`] and [`Host`] traits; [`serial_fabric`] the switch link.
//! - [`linux::LinuxHost`]: [`Host`] on the real kernel, built from the modules below.
//! - [`link`]: rtnetlink link monitor (RTM_NEWLINK/DELLINK, per-interface dedup, netdev to
//!   PCI function, RDMA ports of the netdev).
//! - [`aer`]: PCIe AER uncorrectable-error counters of a slot's device and its port.
//! - [`pci`] (sysfs devices, slots, power, remove/rescan, bind), [`uevent`] (netlink listener,
//!   parser, async stream), [`nvme`] (admin commands over io_uring / ioctl, Identify, SMART, read
//!   probe), [`rdma`] (sysfs ports, rxe links over RDMA netlink, link up), [`mount`]
//!   (mount/unmount verified in mountinfo, mkfs), [`watchdog`], [`sysfs`] (attribute helpers),
//!   [`netlink`] (the datagram receive and deadline wait the two netlink monitors share).
//! - [`volume`]: volumes this server mounts itself (the NAS gateway): NVMe namespaces, md
//!   RAID1 mirrors through mdadm and md's sysfs, filesystems mounted and verified.
//! - What PID 1 needs at boot: [`module`] (`finit_module`), [`netconf`] (static IPv4 address,
//!   link up and default route through the AF_INET ioctls), [`mount`] and [`watchdog`].
//! - Shared helpers: [`wait_until`] / [`try_wait_until`] (the deadline helper for states that
//!   raise no event) and [`error_chain`] (an error and its sources on one line).
//! - [`selftest::run_in_guest`]: the real-kernel tests run inside the QEMU guest.
//!
//! Every sysfs, /dev and /proc path is built from a root passed in, so tests run on fake trees
//! (tests/fixtures: recorded in the QEMU guest, on the build host, or written by hand).

pub mod aer;
mod errors;
pub mod fabric;
pub mod link;
pub mod linux;
pub mod module;
pub mod mount;
pub mod netconf;
pub mod netlink;
pub mod nvme;
pub mod pci;
pub mod pci_address;
pub mod rdma;
pub mod selftest;
pub mod serial_fabric;
pub mod sysfs;
pub mod uevent;
pub mod volume;
mod wait;
pub mod watchdog;

pub use errors::error_chain;
pub use wait::{try_wait_until, wait_until};

pub use fabric::{
    ClassCode, DriverChoice, Fabric, FabricError, FabricEvent, FabricPort, Host, HostDevice,
    HostError, HostObservation, Inventory, NvmeIdentity, PoolDevice,
};
pub use pci_address::PciAddress;
