//! Alarms: a fault the appliance saw on a device, with its evidence, from the observation that
//! raised it to its end (the device recovered, or an operator cleared it), and the failover it
//! started. State keeps the active ones; the journal keeps them all.

use rkyv::{Archive, Deserialize as RkyvDeserialize, Serialize as RkyvSerialize};
use serde::{Deserialize, Serialize};

use super::domain::Health;
use super::ids::{AlarmId, DeviceId, OperationId, SystemName};

/// How bad a fault is: Critical for a failed device (the reflex acts on it), Warning for a
/// degraded one (a link down inside its grace period).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    /// The severity of a health, if it is not Ok.
    pub fn of(health: &Health) -> Option<Severity> {
        match health {
            Health::Ok => None,
            Health::Degraded(_) => Some(Severity::Warning),
            Health::Failed(_) => Some(Severity::Critical),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// An active alarm.
#[derive(Debug, Clone, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub struct Alarm {
    pub id: AlarmId,
    pub device: DeviceId,
    /// The system holding the device when the alarm was raised, if any.
    pub system: Option<SystemName>,
    pub severity: Severity,
    /// What is wrong, as the device's health says it ("NVMe SMART critical warning 0x04").
    pub message: String,
    /// What the appliance saw, and where ("critical_warning=0x04 from SMART log page 0x02 of
    /// 0000:01:00.0 in slot 3").
    pub evidence: String,
    /// When the host saw it (ms since the epoch, the host's clock).
    pub at_ms: u64,
    /// Sequence of the event that raised it.
    pub raised_at: u64,
    /// The failover it started, once one has been requested for its device (the newest).
    pub failover: Option<OperationId>,
    /// Failovers for it that ended failed (the reflex gives up after the policy's attempts).
    pub failovers_failed: u32,
}

/// How an alarm ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmEnd {
    /// The device reported healthy again.
    Recovered,
    /// An operator cleared it.
    Cleared,
}

impl AlarmEnd {
    pub fn name(self) -> &'static str {
        match self {
            AlarmEnd::Recovered => "recovered",
            AlarmEnd::Cleared => "cleared",
        }
    }
}
