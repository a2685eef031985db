//! Topology files: the fabric's pool devices and downstream ports, in TOML, as used by the
//! simulated fabric and (with the same format) by the QEMU bench's emulated switch.
//!
//! ```toml
//! [appliance]            # optional
//! id = "cdi-la-01"
//! site = "los-angeles"
//!
//! [[port]]               # a downstream port toward this server = a hotplug slot on it
//! id = 1
//! switch = "sw0"
//! slot = 1
//!
//! [[device]]             # the fields of drivers::PoolDevice, plus optional `rdma`
//! id = "gpu-0"
//! class = 0x030000
//! vendor_id = 0x10de
//! device_id = 0x2230
//! serial = "GPU0001"
//! model = "RTX A6000"
//! firmware = "94.02.5c"
//! capacity_bytes = 51539607552
//! switch = "sw0"
//! ```
//! Errors name the file, the line and the reason.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use drivers::{ClassCode, FabricPort, Inventory, PoolDevice};
use serde::Deserialize;
use toml::Spanned;

use crate::model::domain::{valid_name, Identity};

/// Most devices and ports a topology may describe.
pub const TOPOLOGY_ENTRIES_MAX: usize = 65_536;
/// Largest topology file read.
pub const TOPOLOGY_FILE_BYTES_MAX: u64 = 16 << 20;

/// A device of the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyDevice {
    pub device: PoolDevice,
    /// A NIC that does RDMA (RoCE); InfiniBand-class NICs always do.
    pub rdma: bool,
}

/// A parsed, validated topology.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Topology {
    pub identity: Option<Identity>,
    pub devices: Vec<TopologyDevice>,
    pub ports: Vec<FabricPort>,
}

impl Topology {
    /// The switch's view: devices (none attached) and ports (all free).
    pub fn inventory(&self) -> Inventory {
        Inventory {
            devices: self.devices.iter().map(|d| d.device.clone()).collect(),
            ports: self.ports.clone(),
        }
    }

    /// The NICs the topology declares RoCE-capable.
    pub fn rdma_nics(&self) -> BTreeSet<String> {
        self.devices
            .iter()
            .filter(|d| d.rdma)
            .map(|d| d.device.id.clone())
            .collect()
    }
}

/// Why a topology file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("read topology {file}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("topology {file} is {bytes} bytes, more than the {limit_bytes} allowed")]
    TooLarge {
        file: PathBuf,
        bytes: u64,
        limit_bytes: u64,
    },
    #[error("{file}:{line}: {reason}")]
    Parse {
        file: PathBuf,
        line: usize,
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    appliance: Option<RawAppliance>,
    #[serde(default)]
    port: Vec<RawPort>,
    #[serde(default)]
    device: Vec<RawDevice>,
    /// The QEMU bench's shelf disks behind its HBAs: the bench's business, read and not used
    /// here (the appliance finds disks behind an HBA on the host).
    #[serde(default)]
    #[allow(dead_code)]
    disk: Vec<RawDisk>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawDisk {
    id: String,
    capacity_bytes: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAppliance {
    id: String,
    site: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    id: Spanned<i64>,
    switch: Spanned<String>,
    slot: Spanned<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    id: Spanned<String>,
    class: Spanned<i64>,
    vendor_id: Spanned<i64>,
    device_id: Spanned<i64>,
    serial: String,
    model: String,
    firmware: String,
    capacity_bytes: Option<Spanned<i64>>,
    switch: Spanned<String>,
    #[serde(default)]
    rdma: bool,
    /// The QEMU bench's shelf disks behind an HBA (see `RawFile::disk`).
    #[serde(default)]
    #[allow(dead_code)]
    disks: Vec<String>,
}

/// Reads and parses a topology file.
pub fn load(file: &Path) -> Result<Topology, TopologyError> {
    let read = |source| TopologyError::Read {
        file: file.to_path_buf(),
        source,
    };
    let bytes = std::fs::metadata(file).map_err(read)?.len();
    if bytes > TOPOLOGY_FILE_BYTES_MAX {
        return Err(TopologyError::TooLarge {
            file: file.to_path_buf(),
            bytes,
            limit_bytes: TOPOLOGY_FILE_BYTES_MAX,
        });
    }
    let text = std::fs::read_to_string(file).map_err(read)?;
    parse(&text, file)
}

/// Parses a topology; `file` only names the source in errors.
pub fn parse(text: &str, file: &Path) -> Result<Topology, TopologyError> {
    let fail = |offset: usize, reason: String| TopologyError::Parse {
        file: file.to_path_buf(),
        line: line_of(text, offset),
        reason,
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        fail(offset, e.message().trim().to_string())
    })?;
    let mut switches = BTreeSet::new();
    let mut devices = Vec::with_capacity(raw.device.len());
    let mut ids = BTreeSet::new();
    for d in &raw.device {
        let device = convert_device(d).map_err(|(offset, reason)| fail(offset, reason))?;
        if !ids.insert(device.device.id.clone()) {
            return Err(fail(
                d.id.span().start,
                format!("device id {:?} appears twice", device.device.id),
            ));
        }
        switches.insert(device.device.switch.clone());
        devices.push(device);
    }
    let ports = convert_ports(&raw.port).map_err(|(offset, reason)| fail(offset, reason))?;
    if devices.len() + ports.len() > TOPOLOGY_ENTRIES_MAX {
        return Err(fail(
            0,
            format!(
                "{} entries, more than the {TOPOLOGY_ENTRIES_MAX} allowed",
                devices.len() + ports.len()
            ),
        ));
    }
    let identity = raw.appliance.map(|a| Identity {
        appliance_id: a.id,
        site: a.site,
    });
    Ok(Topology {
        identity,
        devices,
        ports,
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn ranged<T: TryFrom<i64>>(
    value: &Spanned<i64>,
    what: &str,
    max: u64,
) -> Result<T, (usize, String)> {
    let v = *value.get_ref();
    if v < 0 || v as u64 > max {
        return Err((
            value.span().start,
            format!("{what} {v} is out of range 0..={max}"),
        ));
    }
    T::try_from(v).map_err(|_| (value.span().start, format!("{what} {v} is out of range")))
}

fn name(value: &Spanned<String>, what: &str) -> Result<String, (usize, String)> {
    if !valid_name(value.get_ref()) {
        return Err((
            value.span().start,
            format!("{what} {:?} is not a valid name", value.get_ref()),
        ));
    }
    Ok(value.get_ref().clone())
}

fn convert_device(d: &RawDevice) -> Result<TopologyDevice, (usize, String)> {
    let class: u32 = ranged(&d.class, "class", 0xff_ffff)?;
    let device = PoolDevice {
        id: name(&d.id, "device id")?,
        class: ClassCode(class),
        vendor_id: ranged(&d.vendor_id, "vendor_id", u64::from(u16::MAX))?,
        device_id: ranged(&d.device_id, "device_id", u64::from(u16::MAX))?,
        serial: d.serial.clone(),
        model: d.model.clone(),
        firmware: d.firmware.clone(),
        capacity_bytes: match &d.capacity_bytes {
            Some(c) => ranged(c, "capacity_bytes", i64::MAX as u64)?,
            None => 0,
        },
        switch: name(&d.switch, "switch")?,
        attached_port: None,
    };
    Ok(TopologyDevice {
        device,
        rdma: d.rdma,
    })
}

fn convert_ports(raw: &[RawPort]) -> Result<Vec<FabricPort>, (usize, String)> {
    let mut ids = BTreeSet::new();
    let mut slots = BTreeSet::new();
    let mut ports = Vec::with_capacity(raw.len());
    for p in raw {
        let id: u16 = ranged(&p.id, "port id", u64::from(u16::MAX))?;
        let slot: u32 = ranged(&p.slot, "slot", u64::from(u32::MAX))?;
        if !ids.insert(id) {
            return Err((p.id.span().start, format!("port id {id} appears twice")));
        }
        if !slots.insert(slot) {
            return Err((
                p.slot.span().start,
                format!("slot {slot} is used by two ports"),
            ));
        }
        ports.push(FabricPort {
            id,
            switch: name(&p.switch, "switch")?,
            slot,
            attached: None,
        });
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Topology {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/sample.toml");
        load(&file).expect("the committed sample parses")
    }

    #[test]
    fn sample_has_the_agreed_shape() {
        let t = sample();
        let count = |kind| {
            t.devices
                .iter()
                .filter(|d| crate::runtime::adapt::kind_of(d.device.class) == kind)
                .count()
        };
        use crate::model::domain::DeviceKind::*;
        assert_eq!(
            (count(Gpu), count(Nvme), count(Nic), count(Hba)),
            (8, 8, 4, 2)
        );
        assert_eq!(t.ports.len(), 12);
        assert!(t.identity.is_some());
    }

    #[test]
    fn errors_name_file_line_and_reason() {
        let file = Path::new("bad.toml");
        let cases = [
            ("[[port]]\nid = 1\nswitch = \"sw0\"\nslot = 1\n[[port]]\nid = 1\nswitch = \"sw0\"\nslot = 2\n", 6, "appears twice"),
            ("[[port]]\nid = 1\nswitch = \"sw0\"\nslot = -4\n", 4, "out of range"),
            ("[[device]]\nid = \"g\"\n", 1, "missing field"),
            ("[[port]]\nid = 1\nswitch = \"sw0\"\nslot = 1\ncolour = 3\n", 5, "unknown field"),
            ("x = [\n", 1, "unclosed array"),
        ];
        for (text, line, reason) in cases {
            match parse(text, file) {
                Err(TopologyError::Parse {
                    file: f,
                    line: l,
                    reason: r,
                }) => {
                    assert_eq!(f, file);
                    assert_eq!(l, line, "{text:?}: {r}");
                    assert!(r.contains(reason), "{text:?}: {r}");
                }
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }
}
