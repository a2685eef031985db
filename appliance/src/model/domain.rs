//! The domain model: devices in the fabric's pools, the ports toward this server, composed
//! systems, their mounts, tenants and the appliance's identity. Plain data: no I/O, and no
//! hardware types (`runtime::adapt` turns what the drivers report into these).

use std::collections::BTreeMap;

use rkyv::{Archive, Deserialize as RkyvDeserialize, Serialize as RkyvSerialize};
use serde::{Deserialize, Serialize};

pub use super::ids::{DeviceId, OperationId, PortId, SwitchName, SystemName, TenantName};

/// Most devices one system may hold.
pub const SYSTEM_DEVICES_MAX: usize = 32;
/// Most GPUs one system may hold.
pub const SYSTEM_GPUS_MAX: usize = 20;
/// Longest name (device, system, tenant, mount target) accepted.
pub const NAME_BYTES_MAX: usize = 128;

const _: () = assert!(SYSTEM_GPUS_MAX <= SYSTEM_DEVICES_MAX);

/// What a pool device is, derived from its PCI class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
#[serde(rename_all = "lowercase")]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
pub enum DeviceKind {
    Gpu,
    Nvme,
    Nic,
    Hba,
    Other,
}

impl DeviceKind {
    /// Every kind, in the order pools are listed.
    pub const ALL: [DeviceKind; 5] = [
        DeviceKind::Gpu,
        DeviceKind::Nvme,
        DeviceKind::Nic,
        DeviceKind::Hba,
        DeviceKind::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Gpu => "gpu",
            DeviceKind::Nvme => "nvme",
            DeviceKind::Nic => "nic",
            DeviceKind::Hba => "hba",
            DeviceKind::Other => "other",
        }
    }
}

impl std::str::FromStr for DeviceKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "gpu" => Ok(DeviceKind::Gpu),
            "nvme" => Ok(DeviceKind::Nvme),
            "nic" => Ok(DeviceKind::Nic),
            "hba" => Ok(DeviceKind::Hba),
            "other" => Ok(DeviceKind::Other),
            _ => Err(format!(
                "{text:?} is not a device kind (gpu, nvme, nic, hba, other)"
            )),
        }
    }
}

/// A device's health as last observed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Ok,
    Degraded(String),
    Failed(String),
}

impl Health {
    pub fn is_ok(&self) -> bool {
        matches!(self, Health::Ok)
    }

    /// "ok", "degraded" or "failed".
    pub fn name(&self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Degraded(_) => "degraded",
            Health::Failed(_) => "failed",
        }
    }

    /// Why the device is not healthy, if it is not.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Health::Ok => None,
            Health::Degraded(why) | Health::Failed(why) => Some(why),
        }
    }
}

/// What the appliance knows about one pool device.
#[derive(Debug, Clone, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub struct Device {
    pub id: DeviceId,
    pub kind: DeviceKind,
    /// PCI class code (base, sub, prog-if).
    pub class: u32,
    pub vendor_id: u16,
    pub device_id: u16,
    pub serial: String,
    pub model: String,
    pub firmware: String,
    /// NVMe capacity or GPU memory; 0 where it has no meaning.
    pub capacity_bytes: u64,
    /// Whether a NIC does RDMA (InfiniBand class, or RoCE per the topology).
    pub rdma: bool,
    /// The switch the device sits behind.
    pub switch: SwitchName,
    /// The port it is (being) attached to, if any.
    pub port: Option<PortId>,
    pub health: Health,
    /// False once an operator takes it out of service.
    pub in_service: bool,
    /// False once the fabric no longer reports it.
    pub present: bool,
    /// The system holding it (composed, or being composed), if any.
    pub holder: Option<SystemName>,
    /// The composition reservation holding it for a client's preview, if any.
    #[serde(default)]
    pub reservation: Option<String>,
    /// Sequence of the last event that changed this device (the ETag).
    pub version: u64,
}

impl Device {
    /// Free for a new compose: present, healthy, in service, held by nobody and reserved for
    /// nobody.
    pub fn is_available(&self) -> bool {
        self.present
            && self.in_service
            && self.health.is_ok()
            && self.holder.is_none()
            && self.reservation.is_none()
    }
}

/// A downstream port of the fabric toward this server (a hotplug slot on the server).
#[derive(Debug, Clone, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub struct Port {
    pub id: PortId,
    pub switch: SwitchName,
    pub slot: u32,
    /// The device attached (or being attached) here, if any.
    pub device: Option<DeviceId>,
}

/// What a system is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Workstation,
    RenderNode,
    NasGateway,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Workstation, Role::RenderNode, Role::NasGateway];

    /// The role as operators type it (`--role render_node`) and as every door prints it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Workstation => "workstation",
            Role::RenderNode => "render_node",
            Role::NasGateway => "nas_gateway",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "workstation" => Ok(Role::Workstation),
            "render_node" | "render-node" => Ok(Role::RenderNode),
            "nas_gateway" | "nas-gateway" => Ok(Role::NasGateway),
            _ => Err(format!(
                "{text:?} is not a role (workstation, render_node, nas_gateway)"
            )),
        }
    }
}

/// Where one device of a system stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachState {
    /// Compose (or failover) requested, not yet done.
    Attaching,
    Attached,
    /// Decompose (or failover away) requested, not yet done.
    Detaching,
}

impl AttachState {
    pub fn name(self) -> &'static str {
        match self {
            AttachState::Attaching => "attaching",
            AttachState::Attached => "attached",
            AttachState::Detaching => "detaching",
        }
    }
}

/// One device of a system and the port it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub struct Attachment {
    pub port: PortId,
    pub state: AttachState,
}

/// What a mount mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountSource {
    /// A namespace of an NVMe composed into the same system.
    Namespace { device: DeviceId, namespace: u32 },
    /// A network export (NFS/SMB), e.g. server "nas1", path "/projects".
    Export { server: String, path: String },
    /// A RAID1 mirror (Linux md) over NVMe drives composed into a NAS gateway, which runs on
    /// this server: the mount is made here, at the target itself.
    Mirror { devices: Vec<DeviceId> },
    /// A filesystem, found by its UUID, on the disks behind a storage HBA composed into a NAS
    /// gateway (mounted on this server); a standby HBA that reaches the same disks takes over.
    Disk { hba: DeviceId, uuid: String },
}

impl MountSource {
    /// Whether this server makes the mount itself (a gateway's mirror or disk).
    pub fn is_local(&self) -> bool {
        matches!(self, MountSource::Mirror { .. } | MountSource::Disk { .. })
    }

    /// The composed devices the mount lives on.
    pub fn devices(&self) -> Vec<&DeviceId> {
        match self {
            MountSource::Namespace { device, .. } => vec![device],
            MountSource::Export { .. } => Vec::new(),
            MountSource::Mirror { devices } => devices.iter().collect(),
            MountSource::Disk { hba, .. } => vec![hba],
        }
    }

    /// Whether the mount lives on `device`.
    pub fn uses(&self, device: &str) -> bool {
        self.devices().iter().any(|d| d.as_str() == device)
    }

    /// The same mount with `to` in place of `from` (a failover moves the mount with it).
    pub fn replace(&mut self, from: &DeviceId, to: &DeviceId) {
        match self {
            MountSource::Namespace { device, .. } | MountSource::Disk { hba: device, .. }
                if device == from =>
            {
                *device = to.clone()
            }
            MountSource::Mirror { devices } => {
                for device in devices.iter_mut().filter(|d| *d == from) {
                    *device = to.clone();
                }
            }
            _ => {}
        }
    }
}

/// A mount's condition as this server last saw it (mirrors and disks: a system's other mounts
/// are made by the system itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountCondition {
    /// Mounted (a mirror: every member in sync).
    Clean,
    /// Mounted; md rebuilds onto a new member.
    Rebuilding,
    /// Mounted with a member missing and no rebuild running.
    Degraded,
    /// Not in mountinfo.
    Unmounted,
}

impl MountCondition {
    pub fn name(self) -> &'static str {
        match self {
            MountCondition::Clean => "clean",
            MountCondition::Rebuilding => "rebuilding",
            MountCondition::Degraded => "degraded",
            MountCondition::Unmounted => "unmounted",
        }
    }
}

/// Where a mount stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountState {
    Mounting,
    Mounted,
    Unmounting,
}

impl MountState {
    pub fn name(self) -> &'static str {
        match self {
            MountState::Mounting => "mounting",
            MountState::Mounted => "mounted",
            MountState::Unmounting => "unmounting",
        }
    }
}

/// A mount requested for a system.
#[derive(Debug, Clone, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub struct Mount {
    pub source: MountSource,
    /// Mount point inside the system, e.g. "/mnt/scratch".
    pub target: String,
    pub filesystem: String,
    pub options: String,
    pub state: MountState,
    /// As this server last saw it (mirrors only).
    pub condition: Option<MountCondition>,
}

/// A composed system.
#[derive(Debug, Clone, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub struct System {
    pub name: SystemName,
    pub tenant: TenantName,
    pub role: Role,
    pub devices: BTreeMap<DeviceId, Attachment>,
    /// Keyed by mount target.
    pub mounts: BTreeMap<String, Mount>,
    /// The operation in flight on this system, if any (one at a time).
    pub pending: Option<OperationId>,
    /// Why the last operation failed, if it did.
    pub last_failure: Option<String>,
    /// Sequence of the last event that changed this system (the ETag).
    pub version: u64,
}

/// A tenant (a studio, a department).
#[derive(Debug, Clone, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub struct Tenant {
    pub name: TenantName,
    pub version: u64,
}

/// The appliance's own identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub struct Identity {
    pub appliance_id: String,
    pub site: String,
}

/// Checks a name: non-empty, bounded, printable without spaces.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
}
