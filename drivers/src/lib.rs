//! The hardware, behind small traits: the fabric switch link and the server's PCI, NVMe, RDMA,
//! mounts and watchdog, with Linux implementations on sysfs, netlink, io_uring and /dev.
//!
//! `drivers` never sees a domain type of the appliance: it speaks of PCI addresses, slots, pool
//! devices and ports.

pub mod fabric;
pub mod serial_fabric;
pub mod pci_address;

pub use fabric::{
    ClassCode, DriverChoice, Fabric, FabricError, FabricPort, Host, HostDevice, HostError, HostObservation,
    Inventory, NvmeIdentity, PoolDevice,
};
pub use pci_address::PciAddress;
