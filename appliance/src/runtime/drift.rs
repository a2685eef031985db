//! Drift repair: the hardware moved without the appliance asking (a device attached where State
//! says free, detached where State says composed, gone from the switch's pool). Run by the
//! reconciler's dispatcher between operations, never at the same time as one.

use tracing::{info, warn};

use std::collections::BTreeSet;

use super::adapt::{inventory_commands, vanished_commands};
use super::reconciler::{attach_one, detach_one, Drivers};
use crate::core::CoreHandle;
use crate::decide::command::{Command, Observation};
use crate::model::{AttachState, Device, Health, PortId, State};

/// Records the devices that left the switch's pool and those that came (back) into it, then
/// repairs the drift of the rest.
pub fn repair(core: &CoreHandle, drivers: &Drivers) {
    if let Ok(inventory) = drivers.fabric.inventory() {
        let state = core.state();
        // A device back in the pool keeps what State knew of its RDMA (RoCE comes from the
        // topology at start); a new one is taken as the switch describes it.
        let rdma: BTreeSet<String> = state
            .devices
            .values()
            .filter(|d| d.rdma)
            .map(|d| d.id.to_string())
            .collect();
        let arrived = inventory_commands(&inventory, &state, &rdma)
            .into_iter()
            .filter(|command| match command {
                Command::Observe(Observation::Device { facts }) => {
                    state.devices.get(&facts.id).is_none_or(|d| !d.present)
                }
                _ => false,
            });
        let commands: Vec<Command> = vanished_commands(&inventory, &state)
            .into_iter()
            .chain(arrived)
            .collect();
        drop(state);
        for command in commands {
            if let Err(e) = core.submit(command) {
                warn!(error = %e, "a change of the switch's pool not recorded");
            }
        }
    }
    for note in converge(drivers, &core.state()) {
        info!(%note, "drift");
    }
}

/// Repairs drift for devices of idle systems and free devices: attaches what State holds as
/// attached (unless it has failed: a failed device off its port is the reflex's), detaches what
/// State holds as free. Returns what it did or failed to do.
pub fn converge(drivers: &Drivers, state: &State) -> Vec<String> {
    let Ok(inventory) = drivers.fabric.inventory() else {
        return vec!["inventory unavailable".into()];
    };
    let mut notes = Vec::new();
    for pool in &inventory.devices {
        let Some(device) = state.devices.get(pool.id.as_str()) else {
            continue;
        };
        let busy = device
            .holder
            .as_ref()
            .and_then(|h| state.systems.get(h))
            .is_some_and(|s| s.pending.is_some());
        if busy {
            continue;
        }
        let wanted = wanted_port(state, device);
        let actual = pool.attached_port.map(PortId);
        if actual == wanted {
            continue;
        }
        let id = &device.id;
        if actual.is_none() && matches!(device.health, Health::Failed(_)) {
            // A failed device off its port (pulled, dead) is the reflex's: putting it back
            // would hand its system a dead device while it fails over from it.
            continue;
        }
        if let (None, Some(port)) = (actual, wanted) {
            // The switch dropped it but the host still shows it in the slot: a removal in
            // flight (pciehp takes seconds). The host's remove event says what it was; the
            // next sync repairs it if it was only a glitch of the switch.
            let slot = state.ports.get(&port).map(|p| p.slot);
            let shown = slot.is_some_and(|slot| {
                drivers
                    .host
                    .wait_for_device(slot, std::time::Duration::ZERO)
                    .is_ok()
            });
            if shown {
                notes.push(format!(
                    "{id} left port {port} at the switch; the host still shows it"
                ));
                continue;
            }
        }
        let result = match (actual, wanted) {
            (Some(actual), None) => detach_one(drivers, state, id, actual),
            (None, Some(port)) => attach_one(drivers, state, id, port, false),
            (Some(actual), Some(port)) => detach_one(drivers, state, id, actual)
                .and_then(|()| attach_one(drivers, state, id, port, false)),
            (None, None) => Ok(()),
        };
        notes.push(match result {
            Ok(()) => format!("repaired drift of {id}: now at {wanted:?}"),
            Err(failure) => format!("drift of {id} not repaired: {failure}"),
        });
    }
    notes
}

/// The port State wants `device` attached at: its system's, once the compose is done.
pub fn wanted_port(state: &State, device: &Device) -> Option<PortId> {
    let holder = state.systems.get(device.holder.as_ref()?)?;
    let attachment = holder.devices.get(&device.id)?;
    (attachment.state == AttachState::Attached).then_some(attachment.port)
}
