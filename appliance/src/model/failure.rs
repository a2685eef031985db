//! Why an operation failed, as its outcome event journals it. Typed, so that what reads the
//! journal after it (the failover policy, alarms, the doors) can tell a device that vanished from
//! a bind that timed out; `code` is the stable name every door shows.

use rkyv::{Archive, Deserialize as RkyvDeserialize, Serialize as RkyvSerialize};
use serde::{Deserialize, Serialize};

use super::ids::{DeviceId, PortId};

/// Which switch step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchStep {
    Attach,
    Detach,
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// Journaled by a build before failures were typed (event schema 1): only its text is known.
    Unclassified { reason: String },
    /// The switch's inventory could not be read.
    InventoryUnavailable { reason: String },
    /// The switch refused to attach or detach the device.
    SwitchRefused {
        device: DeviceId,
        port: PortId,
        step: SwitchStep,
        reason: String,
    },
    /// The switch no longer lists the device.
    DeviceVanished { device: DeviceId },
    /// The device did not show up in its slot.
    NotInSlot {
        device: DeviceId,
        slot: u32,
        reason: String,
    },
    /// The device did not leave its slot.
    StillInSlot {
        device: DeviceId,
        slot: u32,
        reason: String,
    },
    /// The slot shows a device of another PCI class.
    WrongClass {
        device: DeviceId,
        slot: u32,
        expected: u32,
        found: u32,
    },
    /// The driver did not bind within its timeout.
    BindTimeout {
        device: DeviceId,
        driver: String,
        reason: String,
    },
    /// The driver refused to bind (or unbind).
    BindFailed {
        device: DeviceId,
        driver: String,
        reason: String,
    },
    /// NVMe Identify Controller failed.
    IdentifyFailed { device: DeviceId, reason: String },
    /// NVMe Identify Controller names another drive than the pool says.
    SerialMismatch {
        device: DeviceId,
        expected: String,
        found: String,
    },
    /// State does not hold what the operation names (State changed under it, or a bug).
    Inconsistent { what: String },
    /// A volume this server holds (a mirror, its filesystem, its mount) refused a step.
    Volume {
        target: String,
        step: String,
        reason: String,
    },
}

impl Failure {
    /// The stable code of this kind of failure, as every door shows it.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Unclassified { .. } => "unclassified",
            Failure::InventoryUnavailable { .. } => "inventory_unavailable",
            Failure::SwitchRefused { .. } => "switch_refused",
            Failure::DeviceVanished { .. } => "device_vanished",
            Failure::NotInSlot { .. } => "not_in_slot",
            Failure::StillInSlot { .. } => "still_in_slot",
            Failure::WrongClass { .. } => "wrong_class",
            Failure::BindTimeout { .. } => "bind_timeout",
            Failure::BindFailed { .. } => "bind_failed",
            Failure::IdentifyFailed { .. } => "identify_failed",
            Failure::SerialMismatch { .. } => "serial_mismatch",
            Failure::Inconsistent { .. } => "inconsistent",
            Failure::Volume { .. } => "volume_failed",
        }
    }

    /// The device the failure is about, if it is about one.
    pub fn device(&self) -> Option<&DeviceId> {
        match self {
            Failure::SwitchRefused { device, .. }
            | Failure::DeviceVanished { device }
            | Failure::NotInSlot { device, .. }
            | Failure::StillInSlot { device, .. }
            | Failure::WrongClass { device, .. }
            | Failure::BindTimeout { device, .. }
            | Failure::BindFailed { device, .. }
            | Failure::IdentifyFailed { device, .. }
            | Failure::SerialMismatch { device, .. } => Some(device),
            Failure::Unclassified { .. }
            | Failure::InventoryUnavailable { .. }
            | Failure::Inconsistent { .. }
            | Failure::Volume { .. } => None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unclassified { reason } => f.write_str(reason),
            Failure::InventoryUnavailable { reason } => {
                write!(f, "read the switch's inventory: {reason}")
            }
            Failure::SwitchRefused {
                device,
                port,
                step,
                reason,
            } => {
                let step = match step {
                    SwitchStep::Attach => "attach",
                    SwitchStep::Detach => "detach",
                };
                write!(f, "{step} {device} at port {port}: {reason}")
            }
            Failure::DeviceVanished { device } => {
                write!(f, "{device} vanished from the switch's pool")
            }
            Failure::NotInSlot {
                device,
                slot,
                reason,
            } => write!(f, "{device} did not show up in slot {slot}: {reason}"),
            Failure::StillInSlot {
                device,
                slot,
                reason,
            } => write!(f, "{device} did not leave slot {slot}: {reason}"),
            Failure::WrongClass {
                device,
                slot,
                expected,
                found,
            } => write!(
                f,
                "slot {slot} shows class {found:06x}, {device} is {expected:06x}"
            ),
            Failure::BindTimeout {
                device,
                driver,
                reason,
            } => write!(f, "bind {device} to {driver} timed out: {reason}"),
            Failure::BindFailed {
                device,
                driver,
                reason,
            } => write!(f, "bind {device} to {driver}: {reason}"),
            Failure::IdentifyFailed { device, reason } => write!(f, "identify {device}: {reason}"),
            Failure::SerialMismatch {
                device,
                expected,
                found,
            } => write!(
                f,
                "{device} identifies as serial {found:?}, expected {expected:?}"
            ),
            Failure::Inconsistent { what } => write!(f, "state does not hold {what}"),
            Failure::Volume {
                target,
                step,
                reason,
            } => write!(f, "{step} for {target}: {reason}"),
        }
    }
}
