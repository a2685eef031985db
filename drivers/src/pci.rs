//! The PCI bus through sysfs: devices and hotplug slots, slot power, remove and rescan, driver
//! binding through `driver_override` + `drivers_probe`, and classification by class code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, info_span};

use crate::sysfs::{self, SysfsError};
use crate::{try_wait_until, ClassCode, PciAddress};

/// How often a bind is re-checked: `drivers_probe` probes synchronously, so the link is normally
/// there on the first check; the re-check covers drivers that finish probing asynchronously.
pub const BIND_RECHECK_MS: u64 = 10;

/// Errors of the PCI bus.
#[derive(Debug, thiserror::Error)]
pub enum PciError {
    #[error("enumerate PCI devices")]
    Enumerate(#[source] SysfsError),
    #[error("read device {address}")]
    ReadDevice {
        address: PciAddress,
        #[source]
        source: SysfsError,
    },
    #[error("device {address} vanished (no {path})")]
    Vanished { address: PciAddress, path: String },
    #[error("{path} names {value:?}, which is not a PCI address")]
    BadAddress { path: String, value: String },
    #[error("read slot {slot}")]
    ReadSlot {
        slot: String,
        #[source]
        source: SysfsError,
    },
    #[error("slot {slot} does not exist under {path}")]
    NoSlot { slot: String, path: String },
    #[error("set power of slot {slot}")]
    SlotPower {
        slot: String,
        #[source]
        source: SysfsError,
    },
    #[error("remove device {address}")]
    Remove {
        address: PciAddress,
        #[source]
        source: SysfsError,
    },
    #[error("rescan the PCI bus")]
    Rescan(#[source] SysfsError),
    #[error("bind {address} to {driver}")]
    Bind {
        address: PciAddress,
        driver: String,
        #[source]
        source: SysfsError,
    },
    #[error("bind {address} to {driver}: no such driver loaded ({path} missing)")]
    NoDriver {
        address: PciAddress,
        driver: String,
        path: String,
    },
    #[error("bind {address} to {driver}: still bound to {actual:?} after {timeout_ms} ms")]
    BindTimeout {
        address: PciAddress,
        driver: String,
        actual: Option<String>,
        timeout_ms: u64,
    },
}

/// What a device is for, from its class code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeviceRole {
    /// Display controllers (0x03xxxx): GPUs and their stand-ins.
    Display,
    Nvme,
    Ethernet,
    Infiniband,
    /// Storage HBAs: SCSI, RAID, SAS and Fibre Channel controllers.
    Sas,
    Other,
}

/// Classifies a class code (display 0x03xx, NVMe 0x010802, Ethernet 0x0200, InfiniBand 0x0207,
/// storage HBAs 0x0100 / 0x0104 / 0x0107 / 0x0c04).
pub fn classify(class: ClassCode) -> DeviceRole {
    if class.is_display() {
        DeviceRole::Display
    } else if class.is_nvme() {
        DeviceRole::Nvme
    } else if class.is_ethernet() {
        DeviceRole::Ethernet
    } else if class.is_infiniband() {
        DeviceRole::Infiniband
    } else if class.is_storage_hba() {
        DeviceRole::Sas
    } else {
        DeviceRole::Other
    }
}

/// A PCI function as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciDevice {
    pub address: PciAddress,
    pub vendor_id: u16,
    pub device_id: u16,
    pub subsystem_vendor_id: Option<u16>,
    pub subsystem_device_id: Option<u16>,
    pub class: ClassCode,
    pub driver: Option<String>,
    /// `None` when the platform has no NUMA information (sysfs shows -1).
    pub numa_node: Option<u32>,
    /// e.g. "8.0 GT/s PCIe"; `None` for conventional PCI functions.
    pub link_speed: Option<String>,
    pub link_width: Option<u32>,
    pub iommu_group: Option<u32>,
}

impl PciDevice {
    pub fn role(&self) -> DeviceRole {
        classify(self.class)
    }
}

/// A hotplug slot (`/sys/bus/pci/slots/NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciSlot {
    /// The slot's name; on q35 `pcie-root-port` slots this is the `slot=` number.
    pub name: String,
    /// `domain:bus:device` of the slot's downstream device ("0000:01:00"), when the kernel knows.
    pub address: Option<(u16, u8, u8)>,
    /// Whether the slot is powered; `None` when the slot has no power control.
    pub power: Option<bool>,
}

impl PciSlot {
    /// The slot's number, when its name is one.
    pub fn number(&self) -> Option<u32> {
        self.name.parse().ok()
    }

    /// Whether `address` sits in this slot.
    pub fn holds(&self, address: PciAddress) -> bool {
        self.address == Some((address.domain, address.bus, address.device))
    }
}

/// The PCI bus under a sysfs root.
#[derive(Debug, Clone)]
pub struct PciBus {
    root: PathBuf,
}

impl PciBus {
    /// `root` is "/" in production, a fake tree in tests.
    pub fn new(root: &Path) -> PciBus {
        PciBus {
            root: root.to_path_buf(),
        }
    }

    fn devices_dir(&self) -> PathBuf {
        sysfs::under(&self.root, "sys/bus/pci/devices")
    }

    fn slots_dir(&self) -> PathBuf {
        sysfs::under(&self.root, "sys/bus/pci/slots")
    }

    /// The sysfs directory of a device.
    pub fn device_dir(&self, address: PciAddress) -> PathBuf {
        self.devices_dir().join(address.to_string())
    }

    /// Every device; one that vanishes between listing and reading is left out.
    pub fn devices(&self) -> Result<Vec<PciDevice>, PciError> {
        let _span = info_span!("pci_enumerate").entered();
        let dir = self.devices_dir();
        let mut devices = Vec::new();
        for name in sysfs::list(&dir).map_err(PciError::Enumerate)? {
            let address = name
                .parse::<PciAddress>()
                .map_err(|_| PciError::BadAddress {
                    path: dir.display().to_string(),
                    value: name.clone(),
                })?;
            match self.device(address) {
                Ok(device) => devices.push(device),
                Err(PciError::Vanished { .. }) => {
                    debug!(%address, "device vanished while enumerating")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(devices)
    }

    /// One device, read from sysfs now.
    pub fn device(&self, address: PciAddress) -> Result<PciDevice, PciError> {
        let dir = self.device_dir(address);
        let read_err = |source: SysfsError| {
            if source.is_not_found() && !dir.exists() {
                PciError::Vanished {
                    address,
                    path: dir.display().to_string(),
                }
            } else {
                PciError::ReadDevice { address, source }
            }
        };
        let hex = |name: &str, expected| -> Result<u32, SysfsError> {
            let path = dir.join(name);
            let value = sysfs::read(&path)?;
            sysfs::parse_hex(&path, &value, expected)
        };
        let vendor_id = hex("vendor", "a 16-bit hex vendor id").map_err(read_err)?;
        let device_id = hex("device", "a 16-bit hex device id").map_err(read_err)?;
        let class = hex("class", "a 24-bit hex class code").map_err(read_err)?;
        if class > 0xff_ffff {
            let path = dir.join("class").display().to_string();
            let source = SysfsError::Parse {
                path,
                value: format!("{class:#x}"),
                expected: "a 24-bit hex class code",
            };
            return Err(PciError::ReadDevice { address, source });
        }
        let optional = self.optional_attributes(&dir).map_err(read_err)?;
        Ok(PciDevice {
            address,
            vendor_id: u16_of(&dir.join("vendor"), vendor_id).map_err(read_err)?,
            device_id: u16_of(&dir.join("device"), device_id).map_err(read_err)?,
            class: ClassCode(class),
            ..optional
        })
    }

    /// The attributes a device may lack; returned in a `PciDevice` whose identity is filled later.
    fn optional_attributes(&self, dir: &Path) -> Result<PciDevice, SysfsError> {
        let opt_hex16 = |name: &str| -> Result<Option<u16>, SysfsError> {
            let path = dir.join(name);
            match sysfs::read_optional(&path)? {
                Some(v) => Ok(Some(u16_of(
                    &path,
                    sysfs::parse_hex(&path, &v, "a 16-bit hex id")?,
                )?)),
                None => Ok(None),
            }
        };
        let numa_path = dir.join("numa_node");
        let numa_node = match sysfs::read_optional(&numa_path)? {
            Some(v) => Some(sysfs::parse_dec::<i32>(
                &numa_path,
                &v,
                "a NUMA node number or -1",
            )?),
            None => None,
        };
        let width_path = dir.join("current_link_width");
        let link_width = match sysfs::read_optional(&width_path)? {
            Some(v) => Some(sysfs::parse_dec::<u32>(&width_path, &v, "a link width")?),
            None => None,
        };
        let group_path = dir.join("iommu_group");
        let iommu_group = match sysfs::link_name(&group_path)? {
            Some(v) => Some(sysfs::parse_dec::<u32>(
                &group_path,
                &v,
                "an IOMMU group number",
            )?),
            None => None,
        };
        Ok(PciDevice {
            address: PciAddress {
                domain: 0,
                bus: 0,
                device: 0,
                function: 0,
            },
            vendor_id: 0,
            device_id: 0,
            subsystem_vendor_id: opt_hex16("subsystem_vendor")?,
            subsystem_device_id: opt_hex16("subsystem_device")?,
            class: ClassCode(0),
            driver: sysfs::link_name(&dir.join("driver"))?,
            numa_node: numa_node.and_then(|n| u32::try_from(n).ok()),
            link_speed: sysfs::read_optional(&dir.join("current_link_speed"))?
                .filter(|s| !s.starts_with("Unknown")),
            link_width: link_width.filter(|w| *w > 0),
            iommu_group,
        })
    }

    /// Every hotplug slot.
    pub fn slots(&self) -> Result<Vec<PciSlot>, PciError> {
        let dir = self.slots_dir();
        let names = match sysfs::list(&dir) {
            Ok(names) => names,
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            Err(e) => return Err(PciError::Enumerate(e)),
        };
        names.into_iter().map(|name| self.slot(&name)).collect()
    }

    /// One slot.
    pub fn slot(&self, name: &str) -> Result<PciSlot, PciError> {
        let dir = self.slots_dir().join(name);
        if !dir.is_dir() {
            return Err(PciError::NoSlot {
                slot: name.to_string(),
                path: dir.display().to_string(),
            });
        }
        let err = |source| PciError::ReadSlot {
            slot: name.to_string(),
            source,
        };
        let address_path = dir.join("address");
        let address = match sysfs::read_optional(&address_path).map_err(err)? {
            Some(v) => Some(parse_slot_address(&address_path, &v).map_err(err)?),
            None => None,
        };
        let power_path = dir.join("power");
        let power = match sysfs::read_optional(&power_path).map_err(err)?.as_deref() {
            Some("1") => Some(true),
            Some("0") => Some(false),
            None => None,
            Some(other) => {
                return Err(err(SysfsError::Parse {
                    path: power_path.display().to_string(),
                    value: other.to_string(),
                    expected: "0 or 1",
                }))
            }
        };
        Ok(PciSlot {
            name: name.to_string(),
            address,
            power,
        })
    }

    /// The devices in a slot (functions of the device at the slot's address).
    pub fn devices_in_slot(&self, slot: &PciSlot) -> Result<Vec<PciDevice>, PciError> {
        Ok(self
            .devices()?
            .into_iter()
            .filter(|d| slot.holds(d.address))
            .collect())
    }

    /// The slot that holds `address`, if any.
    pub fn slot_of(&self, address: PciAddress) -> Result<Option<PciSlot>, PciError> {
        Ok(self.slots()?.into_iter().find(|s| s.holds(address)))
    }

    /// Powers a slot on or off (`echo 1 > /sys/bus/pci/slots/N/power`).
    pub fn set_slot_power(&self, name: &str, on: bool) -> Result<(), PciError> {
        let _span = info_span!("pci_slot_power", slot = name, on).entered();
        let path = self.slots_dir().join(name).join("power");
        sysfs::write(&path, if on { "1" } else { "0" }).map_err(|source| PciError::SlotPower {
            slot: name.to_string(),
            source,
        })
    }

    /// Removes a device from the kernel's view (`echo 1 > .../remove`).
    pub fn remove(&self, address: PciAddress) -> Result<(), PciError> {
        let _span = info_span!("pci_remove", %address).entered();
        sysfs::write(&self.device_dir(address).join("remove"), "1")
            .map_err(|source| PciError::Remove { address, source })
    }

    /// Rescans every bus (`echo 1 > /sys/bus/pci/rescan`).
    pub fn rescan(&self) -> Result<(), PciError> {
        let _span = info_span!("pci_rescan").entered();
        sysfs::write(&sysfs::under(&self.root, "sys/bus/pci/rescan"), "1").map_err(PciError::Rescan)
    }

    /// Binds `address` to `driver` through `driver_override` + `drivers_probe`, and waits until
    /// sysfs shows it bound. `None` leaves the device unbound (override set to "none", which no
    /// driver matches).
    pub fn bind(
        &self,
        address: PciAddress,
        driver: Option<&str>,
        timeout: Duration,
    ) -> Result<(), PciError> {
        let wanted = driver.unwrap_or("none");
        let _span = info_span!("pci_bind", %address, driver = wanted).entered();
        let bind_err = |source| PciError::Bind {
            address,
            driver: wanted.to_string(),
            source,
        };
        if let Some(name) = driver {
            let path = sysfs::under(&self.root, "sys/bus/pci/drivers").join(name);
            if !path.is_dir() {
                let path = path.display().to_string();
                return Err(PciError::NoDriver {
                    address,
                    driver: name.to_string(),
                    path,
                });
            }
        }
        let dir = self.device_dir(address);
        let current = sysfs::link_name(&dir.join("driver")).map_err(bind_err)?;
        if current.as_deref() == driver {
            return Ok(());
        }
        sysfs::write(&dir.join("driver_override"), wanted).map_err(bind_err)?;
        if current.is_some() {
            sysfs::write(&dir.join("driver").join("unbind"), &address.to_string())
                .map_err(bind_err)?;
        }
        if driver.is_some() {
            let probe = sysfs::under(&self.root, "sys/bus/pci/drivers_probe");
            sysfs::write(&probe, &address.to_string()).map_err(bind_err)?;
        }
        self.wait_bound(address, driver, timeout)
    }

    /// Clears `driver_override` and lets the kernel pick the driver again.
    pub fn bind_default(&self, address: PciAddress, timeout: Duration) -> Result<String, PciError> {
        let _span = info_span!("pci_bind_default", %address).entered();
        let bind_err = |source| PciError::Bind {
            address,
            driver: "default".to_string(),
            source,
        };
        let dir = self.device_dir(address);
        sysfs::write(&dir.join("driver_override"), "\n").map_err(bind_err)?;
        if sysfs::link_name(&dir.join("driver"))
            .map_err(bind_err)?
            .is_some()
        {
            sysfs::write(&dir.join("driver").join("unbind"), &address.to_string())
                .map_err(bind_err)?;
        }
        let probe = sysfs::under(&self.root, "sys/bus/pci/drivers_probe");
        sysfs::write(&probe, &address.to_string()).map_err(bind_err)?;
        let interval = Duration::from_millis(BIND_RECHECK_MS);
        let bound = try_wait_until(timeout, interval, || sysfs::link_name(&dir.join("driver")))
            .map_err(bind_err)?;
        bound.ok_or(PciError::BindTimeout {
            address,
            driver: "default".to_string(),
            actual: None,
            timeout_ms: timeout.as_millis() as u64,
        })
    }

    fn wait_bound(
        &self,
        address: PciAddress,
        driver: Option<&str>,
        timeout: Duration,
    ) -> Result<(), PciError> {
        let link = self.device_dir(address).join("driver");
        let bind_err = |source| PciError::Bind {
            address,
            driver: driver.unwrap_or("none").to_string(),
            source,
        };
        let interval = Duration::from_millis(BIND_RECHECK_MS);
        let check = || -> Result<Option<()>, SysfsError> {
            Ok((sysfs::link_name(&link)?.as_deref() == driver).then_some(()))
        };
        if try_wait_until(timeout, interval, check)
            .map_err(bind_err)?
            .is_some()
        {
            return Ok(());
        }
        Err(PciError::BindTimeout {
            address,
            driver: driver.unwrap_or("none").to_string(),
            actual: sysfs::link_name(&link).map_err(bind_err)?,
            timeout_ms: timeout.as_millis() as u64,
        })
    }
}

fn u16_of(path: &Path, value: u32) -> Result<u16, SysfsError> {
    u16::try_from(value).map_err(|_| SysfsError::Parse {
        path: path.display().to_string(),
        value: format!("{value:#x}"),
        expected: "a 16-bit id",
    })
}

/// Parses a slot's `address` file: "0000:01:00" (domain:bus:device).
pub fn parse_slot_address(path: &Path, value: &str) -> Result<(u16, u8, u8), SysfsError> {
    let bad = || SysfsError::Parse {
        path: path.display().to_string(),
        value: value.to_string(),
        expected: "a slot address DDDD:BB:DD",
    };
    let parts: Vec<&str> = value.split(':').collect();
    let [domain, bus, device] = parts.as_slice() else {
        return Err(bad());
    };
    let domain = u16::from_str_radix(domain, 16).map_err(|_| bad())?;
    let bus = u8::from_str_radix(bus, 16).map_err(|_| bad())?;
    let device = u8::from_str_radix(device, 16).map_err(|_| bad())?;
    if device > 0x1f {
        return Err(bad());
    }
    Ok((domain, bus, device))
}
