//! Drains: an operator's order to move every system off a device, or off every device of a
//! switch, before maintenance. The drain takes the devices out of service at once (nothing new
//! is placed on them) and leaves each held one marked draining; the reflex then fails its
//! system over to a replacement, one operation per system at a time, through the same saga as
//! a failed device's. A device stops draining when its system no longer holds it, or when an
//! operator puts it back in service (which cancels what is left of the drain for it).

use rkyv::{Archive, Deserialize as RkyvDeserialize, Serialize as RkyvSerialize};
use serde::{Deserialize, Serialize};

use super::ids::{DeviceId, SwitchName};

/// What a drain empties.
#[derive(Debug, Clone, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainScope {
    Device(DeviceId),
    Switch(SwitchName),
}

impl std::fmt::Display for DrainScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DrainScope::Device(device) => write!(f, "device {device}"),
            DrainScope::Switch(switch) => write!(f, "switch {switch}"),
        }
    }
}

/// A held device being drained (what the drain was, and why, is its event's, in the journal).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub struct Drain {
    /// Failovers off the device that ended failed (the reflex gives up after the policy's
    /// attempts, and the device stays draining for an operator).
    pub failovers_failed: u32,
}
