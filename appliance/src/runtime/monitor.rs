//! The host monitor: what the host's kernel reports on its own (a device removed from its slot,
//! an NVMe SMART critical warning, a link going down or up) becomes a health observation of the
//! device State holds in that slot; and the appliance's reflex (`decide::reflex`) acts on failed
//! devices: right after the observation of a failure, and in a sweep every `SWEEP_INTERVAL`
//! (a system busy at the time of the fault, or a failure journaled before a crash).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use drivers::{Host, HostObservation, PciAddress};
use tracing::{info, info_span, warn};

use super::drift::wanted_port;
use super::reconciler::Drivers;
use crate::core::CoreHandle;
use crate::decide::command::{Command, Observation};
use crate::decide::reflex::{self, Reflex};
use crate::model::{DeviceId, Health, State};

/// Starts the thread that turns the host's observations into commands, when the host offers
/// them.
pub fn start(
    core: &CoreHandle,
    drivers: &Drivers,
    stop: &Arc<AtomicBool>,
) -> std::io::Result<Option<JoinHandle<()>>> {
    let Ok(observations) = drivers.host.observations() else {
        return Ok(None);
    };
    let (core, stop, host) = (core.clone(), stop.clone(), drivers.host.clone());
    std::thread::Builder::new()
        .name("observe".into())
        .spawn(move || observe(core, host, observations, stop))
        .map(Some)
}

fn observe(
    core: CoreHandle,
    host: Arc<dyn Host>,
    observations: Receiver<HostObservation>,
    stop: Arc<AtomicBool>,
) {
    let mut swept = Instant::now();
    sweep(&core);
    while !stop.load(Ordering::SeqCst) {
        if swept.elapsed() >= SWEEP_INTERVAL {
            sweep(&core);
            swept = Instant::now();
        }
        match observations.recv_timeout(Duration::from_millis(200)) {
            Ok(observation) => {
                let present = host.present().unwrap_or_default();
                let slot_of = |address| {
                    present
                        .iter()
                        .find(|d| d.address == address)
                        .and_then(|d| d.slot)
                };
                if let Some(command) = observation_command(&core.state(), &observation, slot_of) {
                    let failed = match &command {
                        Command::Observe(Observation::Health { device, health })
                            if !health.is_ok() =>
                        {
                            Some(device.clone())
                        }
                        _ => None,
                    };
                    if let Err(e) = core.submit(command) {
                        warn!(error = %e, "observation not recorded");
                    }
                    if let Some(reflex) = failed.and_then(|d| reflex::reflex(&core.state(), &d)) {
                        act(&core, &reflex);
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// How often the reflex looks at every failed device.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

fn sweep(core: &CoreHandle) {
    for reflex in reflex::sweep(&core.state()) {
        act(core, &reflex);
    }
}

/// Gives the reflex's orders as the appliance's own, in turn; a refusal (no replacement, a
/// mounted device) ends them and is logged: the device stays out of service for an operator.
fn act(core: &CoreHandle, reflex: &Reflex) {
    let Reflex::FailOver { system, device, .. } = reflex else {
        return;
    };
    let _span = info_span!("reflex_failover", %system, %device).entered();
    for verb in reflex.orders() {
        let name = verb.name();
        if let Err(e) = core.submit(Command::appliance(verb)) {
            let error = drivers::error_chain(&e);
            warn!(%error, order = name, "the reflex's order was not carried out");
            return;
        }
    }
    info!("failover started by the appliance");
}

/// The device State holds in hotplug slot `slot`, if any.
fn device_in(state: &State, slot: Option<u32>) -> Option<DeviceId> {
    let port = state.ports.values().find(|p| Some(p.slot) == slot)?;
    port.device.clone()
}

/// Maps a host observation to a command, when it concerns a device State knows. `slot_of` finds
/// the hotplug slot of a PCI address (from the host's present devices).
pub fn observation_command(
    state: &State,
    observation: &HostObservation,
    slot_of: impl Fn(PciAddress) -> Option<u32>,
) -> Option<Command> {
    let health = |device, health| Some(Command::Observe(Observation::Health { device, health }));
    match observation {
        HostObservation::DeviceRemoved { slot, .. } => {
            let device = device_in(state, *slot)?;
            let attached = state
                .devices
                .get(&device)
                .and_then(|d| wanted_port(state, d))
                .is_some();
            if !attached {
                return None;
            }
            health(
                device,
                Health::Failed("removed from its slot unexpectedly".into()),
            )
        }
        HostObservation::NvmeCriticalWarning { address, bits } => {
            let device = device_in(state, slot_of(*address))?;
            match bits {
                0 => health(device, Health::Ok),
                bits => health(
                    device,
                    Health::Failed(format!("NVMe SMART critical warning 0x{bits:02x}")),
                ),
            }
        }
        HostObservation::LinkChanged { address, up } => {
            let device = device_in(state, slot_of(*address))?;
            match up {
                true => health(device, Health::Ok),
                false => health(device, Health::Degraded("link down".into())),
            }
        }
        HostObservation::DeviceAdded { .. } => None,
    }
}
