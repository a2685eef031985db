//! The host monitor: what the host's kernel reports on its own (a device removed from its slot,
//! an NVMe SMART critical warning, a failed read probe, PCIe AER errors, a link going down or
//! up) and what the fabric's switch reports on its own (a port's link down or up) becomes a
//! health observation of the device State holds in that slot or port, with its evidence and the time it was seen (`decide` raises
//! the alarm); and the appliance's reflex (`decide::reflex`) acts on failed devices: right after
//! the observation of a failure, and in a sweep every `SWEEP_INTERVAL` (a system busy at the
//! time of the fault, a failure journaled before a crash, a link down past its grace). The
//! sweep also reads the gateway's mirrors and journals a change of their condition, and a drive
//! md failed out of one (on its I/O errors) as failed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use drivers::{FabricEvent, HostObservation, PciAddress};
use tracing::{info, info_span, warn};

use super::drift::wanted_port;
use super::reconciler::Drivers;
use crate::core::CoreHandle;
use crate::decide::command::{Command, Observation};
use crate::decide::reflex::{self, Policy, Reflex};
use crate::model::{DeviceId, Health, PortId, State};
use crate::time::{now_ms, rfc3339};

/// What the monitor hears: the host's kernel or the fabric's switch, speaking on its own.
enum Heard {
    Host(HostObservation),
    Fabric(FabricEvent),
}

/// Starts the thread that turns the host's observations and the switch's reports into
/// commands, when either offers them.
pub fn start(
    core: &CoreHandle,
    drivers: &Drivers,
    policy: Policy,
    stop: &Arc<AtomicBool>,
) -> std::io::Result<Option<JoinHandle<()>>> {
    let (heard, hearing) = mpsc::channel();
    let mut sources = 0;
    if let Ok(observations) = drivers.host.observations() {
        forward("observe-host", observations, heard.clone(), Heard::Host)?;
        sources += 1;
    }
    if let Ok(events) = drivers.fabric.events() {
        forward("observe-fabric", events, heard, Heard::Fabric)?;
        sources += 1;
    }
    if sources == 0 {
        return Ok(None);
    }
    let (core, stop, drivers) = (core.clone(), stop.clone(), drivers.clone());
    std::thread::Builder::new()
        .name("observe".into())
        .spawn(move || observe(core, drivers, hearing, policy, stop))
        .map(Some)
}

/// Forwards what `from` receives into `to`, wrapped, until either side hangs up.
fn forward<T: Send + 'static>(
    name: &str,
    from: Receiver<T>,
    to: Sender<Heard>,
    wrap: fn(T) -> Heard,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for item in from {
                if to.send(wrap(item)).is_err() {
                    return;
                }
            }
        })
        .map(drop)
}

fn observe(
    core: CoreHandle,
    drivers: Drivers,
    hearing: Receiver<Heard>,
    policy: Policy,
    stop: Arc<AtomicBool>,
) {
    let mut swept = Instant::now();
    let mut refused = HashMap::new();
    let host = drivers.host.clone();
    sweep(&core, &drivers, &policy, &mut refused);
    while !stop.load(Ordering::SeqCst) {
        if swept.elapsed() >= SWEEP_INTERVAL {
            sweep(&core, &drivers, &policy, &mut refused);
            swept = Instant::now();
        }
        match hearing.recv_timeout(Duration::from_millis(200)) {
            Ok(heard) => {
                let at_ms = now_ms();
                let command = match heard {
                    Heard::Host(observation) => {
                        let present = host.present().unwrap_or_default();
                        let slot_of = |address| {
                            present
                                .iter()
                                .find(|d| d.address == address)
                                .and_then(|d| d.slot)
                        };
                        observation_command(&core.state(), &observation, at_ms, slot_of)
                    }
                    Heard::Fabric(event) => fabric_command(&core.state(), &event, at_ms),
                };
                let Some(command) = command else {
                    continue;
                };
                let failed = match &command {
                    Command::Observe(Observation::Health { device, health, .. })
                        if !health.is_ok() =>
                    {
                        Some(device.clone())
                    }
                    _ => None,
                };
                if let Err(e) = core.submit(command) {
                    warn!(error = %e, "observation not recorded");
                }
                if let Some(reflex) =
                    failed.and_then(|d| reflex::reflex(&core.state(), &policy, &d))
                {
                    act(&core, &reflex, &mut refused);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// How often the reflex looks at every failed device and every link past its grace.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

fn sweep(
    core: &CoreHandle,
    drivers: &Drivers,
    policy: &Policy,
    refused: &mut HashMap<DeviceId, String>,
) {
    for observed in super::storage::conditions(drivers, &core.state()) {
        info!(?observed, "a mirror's condition changed");
        if let Err(e) = core.submit(Command::Observe(observed)) {
            warn!(error = %e, "mount condition not recorded");
        }
    }
    let at_ms = now_ms();
    for observed in super::storage::member_faults(drivers, &core.state(), at_ms) {
        info!(?observed, "md failed a mirror's drive");
        if let Err(e) = core.submit(Command::Observe(observed)) {
            warn!(error = %e, "a mirror's failed drive not recorded");
        }
    }
    for (device, health) in reflex::escalations(&core.state(), policy, at_ms) {
        let evidence = format!("still {} at the sweep of {}", health.name(), rfc3339(at_ms));
        let observed = Observation::Health {
            device,
            health,
            evidence,
            at_ms,
        };
        if let Err(e) = core.submit(Command::Observe(observed)) {
            warn!(error = %e, "escalation not recorded");
        }
    }
    for reflex in reflex::sweep(&core.state(), policy) {
        act(core, &reflex, refused);
    }
}

/// Gives the reflex's order as the appliance's own. A refusal (no spare yet) journals nothing
/// and is tried again at the next sweep; it is logged when it differs from the last one for the
/// device, not every second.
fn act(core: &CoreHandle, reflex: &Reflex, refused: &mut HashMap<DeviceId, String>) {
    let (Some(verb), Reflex::FailOver { device, .. }) = (reflex.order(), reflex) else {
        return;
    };
    let _span = info_span!("reflex", order = verb.name(), ?reflex).entered();
    match core.submit(Command::appliance(verb)) {
        Ok(accepted) => {
            refused.remove(device);
            info!(op = ?accepted.op, "failover started by the appliance");
        }
        Err(e) => {
            let error = drivers::error_chain(&e);
            if refused.get(device) != Some(&error) {
                warn!(%error, "the reflex's failover was refused; it is tried again at every sweep");
                refused.insert(device.clone(), error);
            }
        }
    }
}

/// Maps a report of the switch seen at `at_ms` to a command, when it concerns a device State
/// has composed: a port whose link went down degrades the device in it (the reflex fails it
/// over if it stays down past its grace, as a NIC's link), and its link coming back up heals it.
pub fn fabric_command(state: &State, event: &FabricEvent, at_ms: u64) -> Option<Command> {
    let FabricEvent::PortLink { port, up, reason } = event;
    let device = state.ports.get(&PortId(*port))?.device.clone()?;
    let composed = state
        .devices
        .get(&device)
        .and_then(|d| wanted_port(state, d))
        .is_some();
    if !composed {
        return None;
    }
    let health = match up {
        true => Health::Ok,
        false => Health::Degraded(format!("fabric port {port} down")),
    };
    let state_word = match up {
        true => "up",
        false => "down",
    };
    Some(Command::Observe(Observation::Health {
        device,
        health,
        evidence: format!("the switch reported port {port}'s link {state_word}: {reason}"),
        at_ms,
    }))
}

/// The device State holds in hotplug slot `slot`, if any.
fn device_in(state: &State, slot: Option<u32>) -> Option<DeviceId> {
    let port = state.ports.values().find(|p| Some(p.slot) == slot)?;
    port.device.clone()
}

/// What the NVMe critical-warning bits say (NVMe Base 2.0, SMART / Health log, byte 0).
pub fn critical_warning_text(bits: u8) -> String {
    const BITS: [&str; 6] = [
        "available spare below threshold",
        "temperature outside its thresholds",
        "NVM subsystem reliability degraded",
        "media read-only",
        "volatile memory backup failed",
        "persistent memory region read-only",
    ];
    let named: Vec<&str> = (0..8)
        .filter(|bit| bits & (1 << bit) != 0)
        .map(|bit| BITS.get(bit).copied().unwrap_or("reserved bit"))
        .collect();
    named.join(", ")
}

/// Maps a host observation seen at `at_ms` to a command, when it concerns a device State
/// knows. `slot_of` finds the hotplug slot of a PCI address (from the host's present devices).
pub fn observation_command(
    state: &State,
    observation: &HostObservation,
    at_ms: u64,
    slot_of: impl Fn(PciAddress) -> Option<u32>,
) -> Option<Command> {
    let health = |device, health, evidence| {
        Some(Command::Observe(Observation::Health {
            device,
            health,
            evidence,
            at_ms,
        }))
    };
    match observation {
        HostObservation::DeviceRemoved { address, slot } => {
            let device = device_in(state, *slot)?;
            let attached = state
                .devices
                .get(&device)
                .and_then(|d| wanted_port(state, d))
                .is_some();
            if !attached {
                return None;
            }
            let slot = slot.map_or("?".to_string(), |s| s.to_string());
            health(
                device,
                Health::Failed("removed from its slot unexpectedly".into()),
                format!("kernel remove uevent for {address} in hotplug slot {slot}"),
            )
        }
        HostObservation::NvmeCriticalWarning { address, bits } => {
            let slot = slot_of(*address);
            let device = device_in(state, slot)?;
            let evidence = format!(
                "SMART / Health log (page 0x02) of {address}: critical_warning=0x{bits:02x}"
            );
            match bits {
                0 => health(device, Health::Ok, evidence),
                bits => health(
                    device,
                    Health::Failed(format!(
                        "NVMe SMART critical warning 0x{bits:02x}: {}",
                        critical_warning_text(*bits)
                    )),
                    evidence,
                ),
            }
        }
        HostObservation::NvmeMediaErrors {
            address,
            media_errors,
            rose_by,
        } => {
            let device = device_in(state, slot_of(*address))?;
            let evidence = format!(
                "SMART / Health log (page 0x02) of {address}: media_errors={media_errors} \
                 (+{rose_by} since the last read)"
            );
            let failed = Health::Failed("NVMe media errors rising (SMART)".into());
            health(device, failed, evidence)
        }
        HostObservation::NvmeReadFailed { address, evidence } => {
            let device = device_in(state, slot_of(*address))?;
            let failed = Health::Failed("NVMe reads fail (media errors or no answer)".into());
            health(device, failed, evidence.clone())
        }
        HostObservation::PcieUncorrectable {
            address,
            fatal,
            evidence,
        } => {
            let device = device_in(state, slot_of(*address))?;
            let which = match fatal {
                true => "fatal",
                false => "non-fatal",
            };
            let failed = Health::Failed(format!("PCIe uncorrectable {which} errors (AER)"));
            health(device, failed, evidence.clone())
        }
        HostObservation::LinkChanged { address, up } => {
            let device = device_in(state, slot_of(*address))?;
            let evidence = format!(
                "rtnetlink: the link of {address} is {}",
                match up {
                    true => "up",
                    false => "down",
                }
            );
            match up {
                true => health(device, Health::Ok, evidence),
                false => health(device, Health::Degraded("link down".into()), evidence),
            }
        }
        HostObservation::DeviceAdded { .. } => None,
    }
}
