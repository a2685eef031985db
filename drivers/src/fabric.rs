//! The two traits the appliance's reconciler programs against:
//! - [`Fabric`]: the PCIe switch's side (its pool of devices, its downstream ports toward this
//!   server, attach and detach). Implemented by the QEMU bench's emulated switch link (virtio
//!   serial) and by the appliance's in-process simulated fabric.
//! - [`Host`]: this server's side, what the kernel shows once a device is attached (hotplug slot
//!   powered, device enumerated, driver bound, NVMe identified). Implemented on real sysfs /
//!   uevents / NVMe admin commands, and by the simulated fabric.
//!
//! Both are synchronous: the reconciler calls them from a blocking thread. Every error names the
//! operation, the path or device, and the value.
//!
//! AGREED INTERFACE: written before the implementations so the core, the drivers and the bench can
//! be built in parallel. Add to it freely; change a signature only together with its callers.

use std::sync::mpsc::Receiver;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::PciAddress;

/// A PCI class code (base class, subclass, programming interface), e.g. 0x010802 for NVMe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClassCode(pub u32);

impl ClassCode {
    pub const NVME: ClassCode = ClassCode(0x010802);
    pub const ETHERNET: ClassCode = ClassCode(0x020000);
    pub const INFINIBAND: ClassCode = ClassCode(0x020700);
    pub const SAS: ClassCode = ClassCode(0x010700);

    /// Display controllers (0x03xxxx): GPUs and their stand-ins.
    pub fn is_display(self) -> bool {
        self.0 >> 16 == 0x03
    }
    pub fn is_nvme(self) -> bool {
        self.0 == Self::NVME.0
    }
    pub fn is_ethernet(self) -> bool {
        self.0 >> 8 == 0x0200
    }
    pub fn is_infiniband(self) -> bool {
        self.0 >> 8 == 0x0207
    }
    /// Storage host bus adapters: SCSI (0x0100, e.g. QEMU's `virtio-scsi-pci` or `mptsas1068`), RAID (0x0104),
    /// SAS (0x0107) and Fibre Channel (0x0c04) controllers.
    pub fn is_storage_hba(self) -> bool {
        matches!(self.0 >> 8, 0x0100 | 0x0104 | 0x0107 | 0x0c04)
    }
}

/// A device in the switch's pool, as the switch describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolDevice {
    /// The switch's name for the device, unique in the fabric (e.g. "nvme-3", "gpu-0").
    pub id: String,
    pub class: ClassCode,
    pub vendor_id: u16,
    pub device_id: u16,
    pub serial: String,
    pub model: String,
    pub firmware: String,
    /// NVMe capacity, or GPU memory; 0 where it has no meaning.
    pub capacity_bytes: u64,
    /// Which switch the device sits behind.
    pub switch: String,
    /// The port it is attached to now, if any.
    pub attached_port: Option<u16>,
}

/// A downstream port of the fabric toward this server, seen by the server as a hotplug slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FabricPort {
    pub id: u16,
    pub switch: String,
    /// The hotplug slot number the server's kernel shows for this port (/sys/bus/pci/slots/N).
    pub slot: u32,
    /// Pool device attached to this port now, if any.
    pub attached: Option<String>,
}

/// What the switch holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub devices: Vec<PoolDevice>,
    pub ports: Vec<FabricPort>,
}

/// Something the switch reports on its own, without being asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FabricEvent {
    /// The link between port `port` and the device in it went down, or came up again;
    /// `reason` is the switch's own words ("link training failed", "surprise down").
    PortLink { port: u16, up: bool, reason: String },
}

/// The switch side of the fabric.
pub trait Fabric: Send + Sync {
    fn inventory(&self) -> Result<Inventory, FabricError>;
    /// The switch's own reports, in the order it sent them; may be called once. A report that
    /// comes before this is called is kept for it.
    fn events(&self) -> Result<Receiver<FabricEvent>, FabricError>;
    /// Connects pool device `device` to `port`; returns once the switch has done it (the host
    /// may see the device later: use [`Host::wait_for_device`]).
    fn attach(&self, device: &str, port: u16) -> Result<(), FabricError>;
    fn detach(&self, device: &str, port: u16) -> Result<(), FabricError>;
}

/// Which driver a device should be bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DriverChoice {
    /// The kernel's NVMe driver.
    Nvme,
    /// vfio-pci, for passthrough to a VM.
    VfioPci,
    /// Whatever the kernel picks (virtio-net, mlx5...).
    Default,
    /// Unbound.
    None,
}

/// A device as this server's kernel shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostDevice {
    pub address: PciAddress,
    pub slot: Option<u32>,
    pub vendor_id: u16,
    pub device_id: u16,
    pub class: ClassCode,
    /// The bound driver's name, if any.
    pub driver: Option<String>,
}

/// What NVMe Identify Controller returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvmeIdentity {
    pub serial: String,
    pub model: String,
    pub firmware: String,
    /// Total NVM capacity, 0 when the controller does not report it.
    pub capacity_bytes: u64,
    pub namespaces: u32,
}

/// Something the host saw happen on its own (a uevent, a SMART warning, a link going down).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostObservation {
    DeviceAdded {
        address: PciAddress,
        slot: Option<u32>,
    },
    DeviceRemoved {
        address: PciAddress,
        slot: Option<u32>,
    },
    /// NVMe SMART critical-warning bits became non-zero (or changed).
    NvmeCriticalWarning { address: PciAddress, bits: u8 },
    /// The SMART log's media and data integrity errors count of an NVMe controller rose (by
    /// `rose_by` since the last read, to `media_errors`).
    NvmeMediaErrors {
        address: PciAddress,
        media_errors: u128,
        rose_by: u128,
    },
    /// A read probe of an NVMe controller's namespace failed (an I/O error: the drive's media
    /// errors) or got no answer in time; `evidence` says which and where.
    NvmeReadFailed {
        address: PciAddress,
        evidence: String,
    },
    /// The PCIe AER uncorrectable-error counters of a device in a slot (or of its slot's port)
    /// rose; `fatal` when a fatal error type did; `evidence` names the counters and by how much.
    PcieUncorrectable {
        address: PciAddress,
        fatal: bool,
        evidence: String,
    },
    /// An RDMA or Ethernet port's link state changed.
    LinkChanged { address: PciAddress, up: bool },
}

/// The server's side: what the kernel shows.
pub trait Host: Send + Sync {
    /// Waits until a device is enumerated in hotplug slot `slot`; returns it.
    fn wait_for_device(&self, slot: u32, timeout: Duration) -> Result<HostDevice, HostError>;
    /// Waits until no device is present in `slot`.
    fn wait_for_removal(&self, slot: u32, timeout: Duration) -> Result<(), HostError>;
    /// Powers hotplug slot `slot` off or on from the server's side: off, the kernel removes the
    /// device in it at once and the slot's power goes off (an orderly removal, without the
    /// attention button's 5 s wait); on, the slot is powered for what the switch attaches next.
    fn set_slot_power(&self, slot: u32, on: bool) -> Result<(), HostError>;
    /// Binds `address` to `driver` and waits until the kernel shows it bound.
    fn bind(
        &self,
        address: PciAddress,
        driver: DriverChoice,
        timeout: Duration,
    ) -> Result<(), HostError>;
    /// Identify Controller of an NVMe device bound to the nvme driver.
    fn identify_nvme(&self, address: PciAddress) -> Result<NvmeIdentity, HostError>;
    /// Sets the network interfaces of the NIC at `address` administratively up (so that its
    /// carrier is reported: a link down is seen only on an interface that is up); returns their
    /// names. A host without network interfaces has none to bring up.
    fn bring_up(&self, address: PciAddress) -> Result<Vec<String>, HostError> {
        let _ = address;
        Ok(Vec::new())
    }
    /// Devices currently present in hotplug slots.
    fn present(&self) -> Result<Vec<HostDevice>, HostError>;
    /// A stream of observations; may be called once.
    fn observations(&self) -> Result<Receiver<HostObservation>, HostError>;
}

/// Errors of the switch side.
#[derive(Debug, thiserror::Error)]
pub enum FabricError {
    #[error("fabric has no device {device:?}")]
    UnknownDevice { device: String },
    #[error("fabric has no port {port}")]
    UnknownPort { port: u16 },
    #[error("switch refused {operation} of {device} at port {port}: {reason}")]
    Refused {
        operation: &'static str,
        device: String,
        port: u16,
        reason: String,
    },
    #[error("fabric link {operation} failed: {reason}")]
    Link {
        operation: &'static str,
        reason: String,
    },
    #[error("fabric link timed out after {timeout_ms} ms during {operation}")]
    Timeout {
        operation: &'static str,
        timeout_ms: u64,
    },
}

/// Errors of the host side.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds {value:?}, which is not {expected}")]
    BadValue {
        path: String,
        value: String,
        expected: &'static str,
    },
    #[error("timed out after {timeout_ms} ms waiting for {what}")]
    Timeout { what: String, timeout_ms: u64 },
    #[error("{operation} on {address}: {reason}")]
    Device {
        operation: &'static str,
        address: PciAddress,
        reason: String,
    },
}
