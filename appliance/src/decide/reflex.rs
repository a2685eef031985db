//! The appliance's reflex: what it does on its own when a composed device has failed. Pure:
//! State in, the orders to give out. The host monitor (`runtime::monitor`) gives them as the
//! appliance's own orders, so they are checked by `decide` like any order, journaled with the
//! appliance as their maker, and carried out (and resumed after a crash) by the reconciler.
//!
//! The rule: a device whose health is Failed, still in service, held by a system with no
//! operation in flight, is taken out of service and its system fails over to a replacement
//! (placement picks the best healthy free device of the same kind and at least the capacity).
//! Taking it out of service first makes the reflex fire once per fault: a second detection of
//! the same fault finds the device out of service and does nothing, and a failover that cannot
//! be made (no spare, a mounted device) is not retried until an operator returns the device to
//! service. A busy system waits: the monitor looks again when its operation has ended.

use crate::decide::command::Verb;
use crate::model::{DeviceId, Health, OperationId, State, SystemName};

/// What the reflex does about one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reflex {
    /// Take `device` out of service and fail `system` over to a replacement.
    FailOver {
        system: SystemName,
        device: DeviceId,
        /// The health reason, for the out-of-service record.
        reason: String,
    },
    /// `system` has `op` in flight; look again when it has ended.
    Wait { system: SystemName, op: OperationId },
}

impl Reflex {
    /// The orders, in the order they are given.
    pub fn orders(&self) -> Vec<Verb> {
        match self {
            Reflex::FailOver {
                system,
                device,
                reason,
            } => vec![
                Verb::SetService {
                    device: device.clone(),
                    in_service: false,
                    reason: format!("failed: {reason}; taken out of service by the appliance"),
                },
                Verb::Failover {
                    system: system.clone(),
                    device: device.clone(),
                },
            ],
            Reflex::Wait { .. } => Vec::new(),
        }
    }
}

/// The reflex for `device`, if any.
pub fn reflex(state: &State, device: &DeviceId) -> Option<Reflex> {
    let found = state.devices.get(device)?;
    let Health::Failed(reason) = &found.health else {
        return None;
    };
    if !found.in_service {
        return None;
    }
    let system = state.systems.get(found.holder.as_ref()?)?;
    if !system.devices.contains_key(device) {
        // Held for a compose that has not attached it yet: the compose's own outcome decides.
        return None;
    }
    if let Some(op) = system.pending {
        return Some(Reflex::Wait {
            system: system.name.clone(),
            op,
        });
    }
    Some(Reflex::FailOver {
        system: system.name.clone(),
        device: device.clone(),
        reason: reason.clone(),
    })
}

/// Every device the reflex has something to do about, in device order.
pub fn sweep(state: &State) -> Vec<Reflex> {
    state
        .devices
        .keys()
        .filter_map(|device| reflex(state, device))
        .collect()
}
