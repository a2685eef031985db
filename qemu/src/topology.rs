//! The bench's reader of a topology file: the switches' pools of devices and the downstream
//! ports (hotplug slots) toward the appliance, turned into the emulated switch's configuration.
//!
//! The format is the appliance's (`appliance::topology`, sample in
//! appliance/topologies/sample.toml): TOML with `[[port]]` and `[[device]]` tables whose fields
//! are those of `drivers::FabricPort` and `drivers::PoolDevice`. `qemu` must not depend on
//! `appliance`, so this reader deserializes the same tables leniently (unknown keys such as
//! `rdma` are ignored), keeps `[appliance]`'s `id` and `site` for the kernel command line
//! (`appliance.id=... appliance.site=...`, PID 1's identity), and derives from each device's PCI class the QEMU device
//! that emulates it. The switch reports the vendor and device ids the guest will really see
//! (QEMU's), since the host compares what it enumerates with what the switch said.

use std::collections::BTreeSet;
use std::path::Path;

use drivers::{ClassCode, FabricPort, PoolDevice};
use serde::Deserialize;

/// At most this many ports: each is a `pcie-root-port` on pcie.0, which has 32 slots and needs a
/// few for the management NIC, the data disk, the watchdog and the serial link.
pub const PORTS_MAX: usize = 24;
/// At most this many pool devices (Liqid's fabric limit).
pub const DEVICES_MAX: usize = 255;
/// Largest emulated NVMe drive (sparse, so this bounds the apparent size, not the use).
pub const NVME_BYTES_MAX: u64 = 16 << 40;

/// Errors reading a topology.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("read topology {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: line {line}: {reason}")]
    Parse {
        file: String,
        line: usize,
        reason: String,
    },
    #[error("{file}: {what} {value:?}: {reason}")]
    Invalid {
        file: String,
        what: &'static str,
        value: String,
        reason: String,
    },
}

/// What kind of QEMU device a pool device becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// `-device nvme` over a sparse raw file.
    Nvme,
    /// `-device virtio-net-pci` over a user-networking backend.
    Nic,
    /// `-device bochs-display` (class 0x0300) standing in for a GPU.
    Gpu,
    /// `-device virtio-scsi-pci` (a SCSI storage controller, class 0x0100) standing in for a SAS
    /// HBA, with its shelf disks as `scsi-hd` behind it. (QEMU's `mptsas1068` was the first
    /// choice: hot-added, the guest's mptsas driver binds but its SAS discovery finds no disk.)
    Hba,
}

/// One pool device as the bench emulates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchDevice {
    pub kind: DeviceKind,
    /// What the switch reports; `attached_port` is the state at boot (normally None).
    pub pool: PoolDevice,
    /// An HBA's shelf disks (ids of [`BenchDisk`]s), put behind it as `scsi-hd` devices when
    /// the switch attaches it; two HBAs naming the same disks are a dual-ported shelf.
    pub disks: Vec<String>,
}

/// A shelf disk: a sparse file and its block backend, defined at QEMU's start, so that it
/// outlives every HBA it is put behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchDisk {
    pub id: String,
    pub capacity_bytes: u64,
}

/// The emulated fabric: its pool and its ports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BenchTopology {
    pub devices: Vec<BenchDevice>,
    pub ports: Vec<FabricPort>,
    /// The shelf disks behind the HBAs.
    pub disks: Vec<BenchDisk>,
    /// `[appliance]`'s id and site, when the file has them.
    pub identity: Option<Identity>,
}

/// Who the appliance is: its id and site (shown by its Managers and Chassis resources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    pub site: String,
}

impl Identity {
    /// The kernel command line that hands it to PID 1.
    pub fn cmdline(&self) -> String {
        format!("appliance.id={} appliance.site={}", self.id, self.site)
    }
}

#[derive(Debug, Deserialize)]
struct FileTables {
    #[serde(default)]
    appliance: Option<ApplianceTable>,
    #[serde(default, rename = "port")]
    ports: Vec<PortTable>,
    #[serde(default, rename = "device")]
    devices: Vec<DeviceTable>,
    #[serde(default, rename = "disk")]
    disks: Vec<DiskTable>,
}

/// A disk of a dual-ported shelf, reached through whichever HBA naming it is attached.
#[derive(Debug, Deserialize)]
struct DiskTable {
    id: String,
    capacity_bytes: u64,
}

#[derive(Debug, Deserialize)]
struct ApplianceTable {
    id: String,
    site: String,
}

#[derive(Debug, Deserialize)]
struct PortTable {
    id: u16,
    #[serde(default = "default_switch")]
    switch: String,
    slot: u32,
}

#[derive(Debug, Deserialize)]
struct DeviceTable {
    id: String,
    class: u32,
    serial: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    firmware: String,
    #[serde(default)]
    capacity_bytes: u64,
    #[serde(default = "default_switch")]
    switch: String,
    /// An HBA's shelf: the disks the bench puts behind it when it is attached.
    #[serde(default)]
    disks: Vec<String>,
}

fn default_switch() -> String {
    "sw0".to_string()
}

impl BenchTopology {
    /// Reads and checks a topology file.
    pub fn load(path: &Path) -> Result<BenchTopology, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses topology text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<BenchTopology, TopologyError> {
        let tables: FileTables = toml::from_str(text).map_err(|e| TopologyError::Parse {
            file: file.to_string(),
            line: e.span().map_or(0, |span| line_of(text, span.start)),
            reason: e.message().to_string(),
        })?;
        let ports = tables
            .ports
            .into_iter()
            .map(|p| FabricPort {
                id: p.id,
                switch: p.switch,
                slot: p.slot,
                attached: None,
            })
            .collect();
        let devices = tables
            .devices
            .into_iter()
            .map(|d| device(d, file))
            .collect::<Result<_, _>>()?;
        let identity = tables.appliance.map(|a| Identity {
            id: a.id,
            site: a.site,
        });
        let disks = tables
            .disks
            .into_iter()
            .map(|d| BenchDisk {
                id: d.id,
                capacity_bytes: d.capacity_bytes,
            })
            .collect();
        let topology = BenchTopology {
            devices,
            ports,
            disks,
            identity,
        };
        topology.check(file)?;
        Ok(topology)
    }

    /// A small default fabric: two NVMe drives, a GPU stand-in and a NIC behind four ports.
    pub fn sample() -> BenchTopology {
        Self::parse(SAMPLE, "built-in sample").unwrap_or_default()
    }

    fn check(&self, file: &str) -> Result<(), TopologyError> {
        let invalid = |what, value: String, reason: &str| TopologyError::Invalid {
            file: file.to_string(),
            what,
            value,
            reason: reason.to_string(),
        };
        if self.ports.len() > PORTS_MAX {
            return Err(invalid(
                "port count",
                self.ports.len().to_string(),
                "more than the 24 root ports q35 can hold",
            ));
        }
        if self.devices.len() > DEVICES_MAX {
            return Err(invalid(
                "device count",
                self.devices.len().to_string(),
                "more than 255 devices",
            ));
        }
        if let Some(identity) = &self.identity {
            for (what, value) in [
                ("appliance id", &identity.id),
                ("appliance site", &identity.site),
            ] {
                if value.is_empty()
                    || !value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    return Err(invalid(
                        what,
                        value.clone(),
                        "must be non-empty ASCII letters, digits, -, _ or . (it goes on the kernel command line)",
                    ));
                }
            }
        }
        let mut ids = BTreeSet::new();
        let mut slots = BTreeSet::new();
        for port in &self.ports {
            if !ids.insert(port.id) {
                return Err(invalid("port id", port.id.to_string(), "appears twice"));
            }
            if port.slot == 0 || port.slot > 255 || !slots.insert(port.slot) {
                return Err(invalid(
                    "port slot",
                    port.slot.to_string(),
                    "must be unique and in 1..=255",
                ));
            }
        }
        let mut disks = BTreeSet::new();
        for disk in &self.disks {
            let well_formed = !disk.id.is_empty()
                && disk
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !well_formed || !disks.insert(disk.id.clone()) {
                return Err(invalid(
                    "disk id",
                    disk.id.clone(),
                    "must be unique, non-empty ASCII letters, digits, - or _",
                ));
            }
            if !(1..=NVME_BYTES_MAX).contains(&disk.capacity_bytes) {
                return Err(invalid(
                    "disk capacity_bytes",
                    disk.capacity_bytes.to_string(),
                    "a disk needs 1 B..=16 TiB",
                ));
            }
        }
        let mut names = BTreeSet::new();
        for device in &self.devices {
            let id = &device.pool.id;
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(
                    "device id",
                    id.clone(),
                    "must be non-empty ASCII letters, digits, - or _",
                ));
            }
            if !names.insert(id.clone()) {
                return Err(invalid("device id", id.clone(), "appears twice"));
            }
            if device.kind == DeviceKind::Nvme
                && !(1..=NVME_BYTES_MAX).contains(&device.pool.capacity_bytes)
            {
                return Err(invalid(
                    "capacity_bytes",
                    device.pool.capacity_bytes.to_string(),
                    "NVMe needs 1 B..=16 TiB",
                ));
            }
            for disk in &device.disks {
                if device.kind != DeviceKind::Hba {
                    return Err(invalid("disks", id.clone(), "only an HBA has shelf disks"));
                }
                if !self.disks.iter().any(|d| d.id == *disk) {
                    return Err(invalid("disk", disk.clone(), "no [[disk]] has this id"));
                }
            }
            if device.pool.serial.is_empty() || device.pool.serial.len() > 20 {
                return Err(invalid(
                    "serial",
                    device.pool.serial.clone(),
                    "must be 1 to 20 characters (NVMe SN)",
                ));
            }
        }
        Ok(())
    }
}

/// The PCI vendor and device ids, and the class when it differs from the pool's, that QEMU's
/// emulation of each kind shows the guest (bochs-display is a display controller of class
/// 0x038000, not a VGA 0x030000).
pub fn emulated_ids(kind: DeviceKind) -> (u16, u16, Option<ClassCode>) {
    match kind {
        DeviceKind::Nvme => (0x1b36, 0x0010, None),
        DeviceKind::Nic => (0x1af4, 0x1000, Some(ClassCode::ETHERNET)),
        DeviceKind::Gpu => (0x1234, 0x1111, Some(ClassCode(0x038000))),
        DeviceKind::Hba => (0x1af4, 0x1048, Some(ClassCode(0x010000))),
    }
}

fn device(table: DeviceTable, file: &str) -> Result<BenchDevice, TopologyError> {
    let class = ClassCode(table.class);
    let kind = if class.is_nvme() {
        DeviceKind::Nvme
    } else if class.is_display() {
        DeviceKind::Gpu
    } else if class.is_ethernet() || class.is_infiniband() {
        DeviceKind::Nic
    } else if class.is_storage_hba() {
        DeviceKind::Hba
    } else {
        return Err(TopologyError::Invalid {
            file: file.to_string(),
            what: "device class",
            value: format!("{}: {:#08x}", table.id, table.class),
            reason: "the bench emulates NVMe, display, Ethernet/InfiniBand and SAS classes only"
                .into(),
        });
    };
    let (vendor_id, device_id, emulated_class) = emulated_ids(kind);
    let disks = table.disks;
    let pool = PoolDevice {
        id: table.id,
        class: emulated_class.unwrap_or(class),
        vendor_id,
        device_id,
        serial: table.serial,
        model: table.model,
        firmware: table.firmware,
        capacity_bytes: table.capacity_bytes,
        switch: table.switch,
        attached_port: None,
    };
    Ok(BenchDevice { kind, pool, disks })
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |before| before.matches('\n').count() + 1)
}

/// The built-in sample fabric, small enough for quick tests (same format as a topology file).
pub const SAMPLE: &str = r#"
[appliance]
id = "bench"
site = "qemu"

[[port]]
id = 1
switch = "sw0"
slot = 1
[[port]]
id = 2
switch = "sw0"
slot = 2
[[port]]
id = 3
switch = "sw0"
slot = 3
[[port]]
id = 4
switch = "sw0"
slot = 4

[[device]]
id = "nvme-0"
class = 0x010802
vendor_id = 0x1b36
device_id = 0x0010
serial = "POOLNVME0000"
model = "QEMU NVMe Ctrl"
firmware = "1.0"
capacity_bytes = 1073741824
switch = "sw0"
[[device]]
id = "nvme-1"
class = 0x010802
vendor_id = 0x1b36
device_id = 0x0010
serial = "POOLNVME0001"
model = "QEMU NVMe Ctrl"
firmware = "1.0"
capacity_bytes = 1073741824
switch = "sw0"
[[device]]
id = "gpu-0"
class = 0x030000
vendor_id = 0x1234
device_id = 0x1111
serial = "POOLGPU0000"
model = "bochs-display"
firmware = "1.0"
capacity_bytes = 16777216
switch = "sw0"
[[device]]
id = "nic-0"
class = 0x020000
vendor_id = 0x1af4
device_id = 0x1000
serial = "POOLNIC0000"
model = "virtio-net"
firmware = "1.0"
capacity_bytes = 0
switch = "sw0"
rdma = true
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_parses() {
        let topology = BenchTopology::parse(SAMPLE, "sample").unwrap();
        assert_eq!(topology.ports.len(), 4);
        assert_eq!(topology.devices.len(), 4);
        let nvme = &topology.devices[0];
        assert_eq!(nvme.kind, DeviceKind::Nvme);
        assert_eq!(nvme.pool.class, ClassCode::NVME);
        assert_eq!(nvme.pool.serial, "POOLNVME0000");
        assert_eq!(topology.devices[2].kind, DeviceKind::Gpu);
        assert_eq!(
            topology.devices[2].pool.class,
            ClassCode(0x038000),
            "bochs-display's class"
        );
    }

    #[test]
    fn a_syntax_error_names_the_line() {
        let text = "[[port]]\nid = 1\nslot = = 3\n";
        let err = BenchTopology::parse(text, "bad.toml").unwrap_err();
        assert!(
            matches!(&err, TopologyError::Parse { line: 3, .. }),
            "{err}"
        );
        assert!(err.to_string().starts_with("bad.toml: line 3:"), "{err}");
    }

    #[test]
    fn duplicate_slots_are_refused() {
        let text = "[[port]]\nid = 1\nslot = 3\n[[port]]\nid = 2\nslot = 3\n";
        let err = BenchTopology::parse(text, "dup.toml").unwrap_err();
        assert!(err.to_string().contains("port slot \"3\""), "{err}");
    }

    #[test]
    fn an_unemulated_class_is_refused() {
        let text = "[[device]]\nid = \"x\"\nclass = 0x120000\nserial = \"S\"\n";
        let err = BenchTopology::parse(text, "k.toml").unwrap_err();
        assert!(err.to_string().contains("x: 0x120000"), "{err}");
    }

    #[test]
    fn the_appliance_sample_is_read_with_emulated_ids() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../appliance/topologies/sample.toml");
        let topology = BenchTopology::load(&path).unwrap();
        assert_eq!(topology.ports.len(), 12);
        let hba = topology
            .devices
            .iter()
            .find(|d| d.pool.id == "hba-0")
            .unwrap();
        assert_eq!(hba.kind, DeviceKind::Hba);
        let gpu = topology
            .devices
            .iter()
            .find(|d| d.pool.id == "gpu-0")
            .unwrap();
        assert_eq!(
            (gpu.kind, gpu.pool.vendor_id, gpu.pool.serial.as_str()),
            (DeviceKind::Gpu, 0x1234, "GPU1000")
        );
        let identity = topology.identity.unwrap();
        assert_eq!(
            identity.cmdline(),
            "appliance.id=cdi-la-01 appliance.site=los-angeles"
        );
    }

    #[test]
    fn an_identity_that_would_break_the_command_line_is_refused() {
        let text = "[appliance]\nid = \"la 01\"\nsite = \"x\"\n";
        let err = BenchTopology::parse(text, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t.toml") && err.contains("appliance id") && err.contains("la 01"),
            "{err}"
        );
    }
}
