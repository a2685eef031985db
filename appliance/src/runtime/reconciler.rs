//! The reconciler: executes the operations State holds (`drivers::Fabric` at the switch,
//! `drivers::Host` on this server) and rolls back what a failed one did; its verdict becomes the
//! operation's outcome event. After a restart it finds every intent without an outcome and
//! executes it again: each step is idempotent (a device already attached where it should be is
//! not attached again), so an operation interrupted at any step is finished or rolled back.
//!
//! What one execution finds, and what it does (`RULES` mirrors this table; the tests in
//! `tests/reconciler.rs` run a scenario per row on the simulated fabric):
//!
//! | rule | operation | found at the switch / host                 | action                                        | outcome                          |
//! |------|-----------|--------------------------------------------|-----------------------------------------------|----------------------------------|
//! | 1    | compose   | device free                                | attach, wait for its slot, bind, identify     | continue                         |
//! | 2    | compose   | device already at its port (a restart)     | skip the attach; wait, bind, identify         | continue                         |
//! | 3    | compose   | switch refuses the attach                  | detach what this operation attached           | ComposeFailed `switch_refused`   |
//! | 4    | compose   | device vanished from the switch's pool     | detach the rest, observe it vanished          | ComposeFailed `device_vanished`  |
//! | 5    | compose   | the driver's bind times out                | detach what this operation attached           | ComposeFailed `bind_timeout`     |
//! | 6    | compose   | NVMe identifies with another serial        | detach what this operation attached           | ComposeFailed `serial_mismatch`  |
//! | 7    | compose   | every device bound (and identified)        | nothing more                                  | ComposeCompleted                 |
//! | 8    | decompose | device attached                            | unbind, detach, wait for the slot to empty    | continue                         |
//! | 9    | decompose | the switch no longer knows the device      | count it detached                             | continue                         |
//! | 10   | decompose | switch refuses the detach                  | attach again what this operation detached     | DecomposeFailed `switch_refused` |
//! | 11   | decompose | every device detached                      | nothing more                                  | DecomposeCompleted               |
//! | 12   | failover  | replacement attached, bound, old detached  | nothing more                                  | FailoverCompleted                |
//! | 13   | failover  | replacement fails to attach or bind        | detach the replacement, keep the old device   | FailoverFailed                   |
//! | 14   | mount     | the namespace's NVMe is in its slot        | nothing (the system mounts it)                | MountCompleted                   |
//! | 15   | mount     | the namespace's NVMe is not in its slot    | nothing                                       | MountFailed `not_in_slot`        |
//! | 16   | failover  | old device pulled; switch refuses detach   | count it detached (the switch holds it nowhere) | FailoverCompleted              |
//! | 17   | mount     | a mirror's drives in their slots           | start the mirror (assembled, or made over blank drives), a filesystem on it if blank, mount it here | MountCompleted |
//! | 18   | mount     | the volumes refuse a step (md, mkfs, mount) | nothing                                      | MountFailed `volume_failed`      |
//! | 19   | failover  | a mirror's member; replacement bound       | fail the old member out, add the replacement (md rebuilds), detach the old | FailoverCompleted |
//! | 20   | failover  | a mirror's member; md refuses the new one  | detach the replacement                        | FailoverFailed `volume_failed`   |
//! | 21   | failover  | an HBA under a disk mount; standby bound   | unmount lazily, find the filesystem by UUID behind the standby, mount it, detach the old | FailoverCompleted |
//! | 22   | failover  | an HBA under a disk mount; no such filesystem behind the standby | detach the replacement | FailoverFailed `volume_failed` |
//!
//! Drift (a device attached where State says free, or the reverse) is repaired by `drift`;
//! host observations become commands in `monitor`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use drivers::volume::Volumes;
use drivers::{DriverChoice, Fabric, FabricError, Host, Inventory};
use tracing::{info, info_span, warn};

use super::adapt::{bind_failure, driver_for, switch_failure};
use crate::core::CoreHandle;
use crate::decide::command::{Command, Observation};
use crate::decide::reflex::Policy;
use crate::model::{
    DeviceId, DeviceKind, Failure, MountSource, Operation, OperationId, OperationKind, PortId,
    State, SwitchStep,
};

/// Timeouts and pacing of the reconciler.
#[derive(Debug, Clone)]
pub struct ReconcileLimits {
    /// Wait for an attached device to show up in its slot (pciehp, enumeration).
    pub attach_timeout_ms: u64,
    /// Wait for a detached device to leave its slot (pciehp's attention delay is ~5 s).
    pub removal_timeout_ms: u64,
    pub bind_timeout_ms: u64,
    /// Inventory sync and drift repair period.
    pub sync_interval_ms: u64,
    /// Operations executed at once (distinct systems).
    pub workers: usize,
}

impl Default for ReconcileLimits {
    fn default() -> Self {
        ReconcileLimits {
            attach_timeout_ms: 30_000,
            removal_timeout_ms: 30_000,
            bind_timeout_ms: 10_000,
            sync_interval_ms: 5_000,
            workers: 4,
        }
    }
}

/// The hardware the reconciler drives.
#[derive(Clone)]
pub struct Drivers {
    pub fabric: Arc<dyn Fabric>,
    pub host: Arc<dyn Host>,
    /// The volumes this server mounts itself (a NAS gateway's mirrors).
    pub volumes: Arc<dyn Volumes>,
    pub limits: ReconcileLimits,
}

impl std::fmt::Debug for Drivers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drivers")
            .field("limits", &self.limits)
            .finish()
    }
}

/// How an execution ends for a rule of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ends {
    /// The operation goes on with its next device or step.
    Continues,
    Completed,
    /// Failed, with this failure code.
    Failed(&'static str),
}

/// One row of the table above.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub id: u8,
    pub operation: &'static str,
    pub finds: &'static str,
    pub ends: Ends,
}

/// The table above, row by row.
pub const RULES: [Rule; 22] = [
    Rule {
        id: 1,
        operation: "compose",
        finds: "device free",
        ends: Ends::Continues,
    },
    Rule {
        id: 2,
        operation: "compose",
        finds: "device already at its port",
        ends: Ends::Continues,
    },
    Rule {
        id: 3,
        operation: "compose",
        finds: "switch refuses the attach",
        ends: Ends::Failed("switch_refused"),
    },
    Rule {
        id: 4,
        operation: "compose",
        finds: "device vanished from the pool",
        ends: Ends::Failed("device_vanished"),
    },
    Rule {
        id: 5,
        operation: "compose",
        finds: "bind times out",
        ends: Ends::Failed("bind_timeout"),
    },
    Rule {
        id: 6,
        operation: "compose",
        finds: "NVMe identifies with another serial",
        ends: Ends::Failed("serial_mismatch"),
    },
    Rule {
        id: 7,
        operation: "compose",
        finds: "every device bound and identified",
        ends: Ends::Completed,
    },
    Rule {
        id: 8,
        operation: "decompose",
        finds: "device attached",
        ends: Ends::Continues,
    },
    Rule {
        id: 9,
        operation: "decompose",
        finds: "switch no longer knows the device",
        ends: Ends::Continues,
    },
    Rule {
        id: 10,
        operation: "decompose",
        finds: "switch refuses the detach",
        ends: Ends::Failed("switch_refused"),
    },
    Rule {
        id: 11,
        operation: "decompose",
        finds: "every device detached",
        ends: Ends::Completed,
    },
    Rule {
        id: 12,
        operation: "failover",
        finds: "replacement attached and bound, old device detached",
        ends: Ends::Completed,
    },
    Rule {
        id: 13,
        operation: "failover",
        finds: "replacement fails to bind",
        ends: Ends::Failed("bind_timeout"),
    },
    Rule {
        id: 14,
        operation: "mount",
        finds: "the namespace's NVMe is in its slot",
        ends: Ends::Completed,
    },
    Rule {
        id: 15,
        operation: "mount",
        finds: "the namespace's NVMe is not in its slot",
        ends: Ends::Failed("not_in_slot"),
    },
    Rule {
        id: 16,
        operation: "failover",
        finds: "old device pulled; switch refuses detach",
        ends: Ends::Completed,
    },
    Rule {
        id: 17,
        operation: "mount",
        finds: "a mirror's drives in their slots",
        ends: Ends::Completed,
    },
    Rule {
        id: 18,
        operation: "mount",
        finds: "the volumes refuse a step",
        ends: Ends::Failed("volume_failed"),
    },
    Rule {
        id: 19,
        operation: "failover",
        finds: "a mirror's member; replacement bound",
        ends: Ends::Completed,
    },
    Rule {
        id: 20,
        operation: "failover",
        finds: "a mirror's member; md refuses the new one",
        ends: Ends::Failed("volume_failed"),
    },
    Rule {
        id: 21,
        operation: "failover",
        finds: "an HBA under a disk mount; standby bound",
        ends: Ends::Completed,
    },
    Rule {
        id: 22,
        operation: "failover",
        finds: "an HBA under a disk mount; no such filesystem behind the standby",
        ends: Ends::Failed("volume_failed"),
    },
];

/// The result of executing one operation: its verdict, plus observations made on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub result: Result<(), Failure>,
    pub observations: Vec<Command>,
}

/// Executes one pending operation against the hardware.
pub fn execute(drivers: &Drivers, state: &State, op: &Operation) -> Execution {
    let span = info_span!("reconcile", op = op.id.0, kind = op.kind.name(), system = %op.system);
    let _guard = span.enter();
    let mut observations = Vec::new();
    let result = match &op.kind {
        OperationKind::Compose { devices } => {
            attach_all(drivers, state, devices, &mut observations)
        }
        OperationKind::Decompose { devices } => {
            let pairs: Vec<(DeviceId, PortId)> = devices
                .iter()
                .filter_map(|d| port_of(state, &op.system, d))
                .collect();
            detach_all(drivers, state, &pairs)
        }
        OperationKind::Failover { from, to, port } => failover(
            drivers,
            state,
            &op.system,
            from,
            (to, *port),
            &mut observations,
        ),
        OperationKind::Mount { mount } => match &mount.source {
            MountSource::Namespace { device, .. } => {
                check_present(drivers, state, &op.system, device)
            }
            MountSource::Export { .. } => Ok(()),
            MountSource::Mirror { .. } | MountSource::Disk { .. } => super::storage::mount(
                drivers,
                state,
                &op.system,
                &mount.source,
                (&mount.target, &mount.filesystem, &mount.options),
            ),
        },
        OperationKind::Unmount { target } => {
            super::storage::unmount(drivers, state, &op.system, target)
        }
    };
    match &result {
        Ok(()) => info!("operation done"),
        Err(failure) => warn!(code = failure.code(), %failure, "operation failed"),
    }
    Execution {
        result,
        observations,
    }
}

fn port_of(state: &State, system: &str, device: &DeviceId) -> Option<(DeviceId, PortId)> {
    let attachment = state.systems.get(system)?.devices.get(device)?;
    Some((device.clone(), attachment.port))
}

fn inventory(drivers: &Drivers) -> Result<Inventory, Failure> {
    drivers
        .fabric
        .inventory()
        .map_err(|e| Failure::InventoryUnavailable {
            reason: drivers::error_chain(&e),
        })
}

fn slot_of(state: &State, port: PortId) -> Result<u32, Failure> {
    state
        .ports
        .get(&port)
        .map(|p| p.slot)
        .ok_or_else(|| Failure::Inconsistent {
            what: format!("port {port}"),
        })
}

/// Attaches every device (all or nothing).
fn attach_all(
    drivers: &Drivers,
    state: &State,
    devices: &[(DeviceId, PortId)],
    observations: &mut Vec<Command>,
) -> Result<(), Failure> {
    let before = inventory(drivers)?;
    let mut attached: Vec<(DeviceId, PortId)> = Vec::new();
    for (device, port) in devices {
        let already = before
            .devices
            .iter()
            .any(|d| d.id == device.as_str() && d.attached_port == Some(port.0));
        if !already {
            attached.push((device.clone(), *port));
        }
        if let Err(failure) = attach_one(drivers, state, device, *port, already) {
            let failure = match vanished(drivers, device) {
                true => {
                    observations.push(Command::Observe(Observation::Vanished {
                        device: device.clone(),
                    }));
                    Failure::DeviceVanished {
                        device: device.clone(),
                    }
                }
                false => failure,
            };
            rollback_attach(drivers, &attached);
            return Err(failure);
        }
    }
    Ok(())
}

pub(super) fn attach_one(
    drivers: &Drivers,
    state: &State,
    device: &DeviceId,
    port: PortId,
    already: bool,
) -> Result<(), Failure> {
    let known = state
        .devices
        .get(device)
        .ok_or_else(|| Failure::Inconsistent {
            what: format!("device {device}"),
        })?;
    let slot = slot_of(state, port)?;
    if !already {
        drivers
            .fabric
            .attach(device, port.0)
            .map_err(|e| switch_failure(device, port, SwitchStep::Attach, &e))?;
    }
    let limits = &drivers.limits;
    let seen = drivers
        .host
        .wait_for_device(slot, Duration::from_millis(limits.attach_timeout_ms))
        .map_err(|e| Failure::NotInSlot {
            device: device.clone(),
            slot,
            reason: drivers::error_chain(&e),
        })?;
    if seen.class.0 != known.class {
        return Err(Failure::WrongClass {
            device: device.clone(),
            slot,
            expected: known.class,
            found: seen.class.0,
        });
    }
    let driver = driver_for(known.kind);
    drivers
        .host
        .bind(
            seen.address,
            driver.clone(),
            Duration::from_millis(limits.bind_timeout_ms),
        )
        .map_err(|e| bind_failure(device, &driver, &e))?;
    if known.kind == DeviceKind::Nic {
        // Up, so that its carrier is seen and a link down is noticed; a NIC without an
        // interface (RDMA only) has nothing to bring up.
        match drivers.host.bring_up(seen.address) {
            Ok(interfaces) => info!(%device, ?interfaces, "network interfaces up"),
            Err(e) => warn!(%device, error = %drivers::error_chain(&e), "its link is not watched"),
        }
    }
    if known.kind == DeviceKind::Nvme {
        let identity =
            drivers
                .host
                .identify_nvme(seen.address)
                .map_err(|e| Failure::IdentifyFailed {
                    device: device.clone(),
                    reason: drivers::error_chain(&e),
                })?;
        if identity.serial.trim() != known.serial.trim() {
            return Err(Failure::SerialMismatch {
                device: device.clone(),
                expected: known.serial.clone(),
                found: identity.serial,
            });
        }
    }
    Ok(())
}

/// Whether the switch no longer lists `device` (false when the inventory cannot be read).
fn vanished(drivers: &Drivers, device: &DeviceId) -> bool {
    drivers
        .fabric
        .inventory()
        .is_ok_and(|now| !now.devices.iter().any(|d| d.id == device.as_str()))
}

fn rollback_attach(drivers: &Drivers, attached: &[(DeviceId, PortId)]) {
    for (device, port) in attached.iter().rev() {
        match drivers.fabric.detach(device, port.0) {
            Ok(()) | Err(FabricError::UnknownDevice { .. }) => {}
            Err(e) => {
                warn!(%device, port = port.0, error = %e, "rollback: detach failed; drift repair will retry")
            }
        }
    }
}

/// Detaches every device (all or nothing: a failure re-attaches what was detached).
fn detach_all(
    drivers: &Drivers,
    state: &State,
    devices: &[(DeviceId, PortId)],
) -> Result<(), Failure> {
    let mut detached: Vec<&(DeviceId, PortId)> = Vec::new();
    for pair in devices {
        let (device, port) = pair;
        if let Err(failure) = detach_one(drivers, state, device, *port) {
            for (d, p) in detached.iter().rev() {
                if let Err(e) = attach_one(drivers, state, d, *p, false) {
                    warn!(device = %d, port = p.0, error = %e, "rollback: re-attach failed; drift repair will retry");
                }
            }
            return Err(failure);
        }
        detached.push(pair);
    }
    Ok(())
}

/// Unbinds, detaches and waits for the slot to empty.
pub(super) fn detach_one(
    drivers: &Drivers,
    state: &State,
    device: &DeviceId,
    port: PortId,
) -> Result<(), Failure> {
    let slot = slot_of(state, port)?;
    let limits = &drivers.limits;
    let mut powered_off = false;
    if let Ok(seen) = drivers.host.wait_for_device(slot, Duration::ZERO) {
        if let Err(e) = drivers.host.bind(
            seen.address,
            DriverChoice::None,
            Duration::from_millis(limits.bind_timeout_ms),
        ) {
            warn!(%device, error = %e, "unbind before detach failed; detaching anyway");
        }
        // Still on its port (not pulled): the server lets it go first, powering its slot off,
        // so that the switch's detach need not wait for the attention button's 5 s.
        if !attached_nowhere(drivers, device) {
            match drivers.host.set_slot_power(slot, false) {
                Ok(()) => powered_off = true,
                Err(e) => {
                    warn!(%device, slot, error = %e, "slot power-off failed; detaching anyway")
                }
            }
        }
    }
    match drivers.fabric.detach(device, port.0) {
        // A device the switch no longer knows is detached by definition.
        Ok(()) | Err(FabricError::UnknownDevice { .. }) => {}
        // A switch that refuses to detach what no port holds (a device pulled from its slot,
        // or detached by an attempt a crash interrupted) has nothing left to detach.
        Err(e @ FabricError::Refused { .. }) if attached_nowhere(drivers, device) => {
            info!(%device, port = port.0, error = %e, "the switch holds it at no port: detached");
        }
        Err(e) => {
            // The switch keeps it: so does the server (its slot powered for it again).
            if powered_off {
                if let Err(e) = drivers.host.set_slot_power(slot, true) {
                    warn!(%device, slot, error = %e, "slot power-on after a refused detach failed");
                }
            }
            return Err(switch_failure(device, port, SwitchStep::Detach, &e));
        }
    }
    drivers
        .host
        .wait_for_removal(slot, Duration::from_millis(limits.removal_timeout_ms))
        .map_err(|e| Failure::StillInSlot {
            device: device.clone(),
            slot,
            reason: drivers::error_chain(&e),
        })
}

/// Whether the switch's inventory lists `device` attached to no port (false when the
/// inventory cannot be read: then nothing is assumed).
fn attached_nowhere(drivers: &Drivers, device: &DeviceId) -> bool {
    drivers.fabric.inventory().is_ok_and(|inventory| {
        inventory
            .devices
            .iter()
            .any(|d| d.id == device.as_str() && d.attached_port.is_none())
    })
}

/// Attaches the replacement, then detaches the old device; a failure leaves the old one.
fn failover(
    drivers: &Drivers,
    state: &State,
    system: &str,
    from: &DeviceId,
    to: (&DeviceId, PortId),
    observations: &mut Vec<Command>,
) -> Result<(), Failure> {
    let replacement = [(to.0.clone(), to.1)];
    attach_all(drivers, state, &replacement, observations)?;
    if let Err(failure) = super::storage::move_mounts(drivers, state, system, from, to.0) {
        rollback_attach(drivers, &replacement);
        return Err(failure);
    }
    let Some(old) = port_of(state, system, from) else {
        return Ok(());
    };
    if let Err(failure) = detach_all(drivers, state, &[old]) {
        rollback_attach(drivers, &replacement);
        return Err(failure);
    }
    Ok(())
}

fn check_present(
    drivers: &Drivers,
    state: &State,
    system: &str,
    device: &DeviceId,
) -> Result<(), Failure> {
    let (_, port) = port_of(state, system, device).ok_or_else(|| Failure::Inconsistent {
        what: format!("{device} composed into {system}"),
    })?;
    let slot = slot_of(state, port)?;
    drivers
        .host
        .wait_for_device(slot, Duration::ZERO)
        .map(|_| ())
        .map_err(|e| Failure::NotInSlot {
            device: device.clone(),
            slot,
            reason: drivers::error_chain(&e),
        })
}

/// The running reconciler: a dispatcher thread, workers, and the host-observation thread.
#[derive(Debug)]
pub struct Reconciler {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// What `stop` puts away: the gateway's mirrors.
    core: CoreHandle,
    drivers: Drivers,
}

impl Reconciler {
    /// Starts reconciling `core`'s State against `drivers`.
    pub fn start(
        core: CoreHandle,
        drivers: Drivers,
        policy: Policy,
    ) -> std::io::Result<Reconciler> {
        // After a reboot, the gateway's mirrors are mounted again before anything else runs
        // (and before the monitor's first look at them).
        super::storage::restore(&drivers, &core.state());
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = channel::<Operation>();
        let rx = Arc::new(Mutex::new(rx));
        let ctx = Ctx {
            core,
            drivers,
            inflight: Arc::new(Mutex::new(BTreeSet::new())),
            hardware: Arc::new(RwLock::new(())),
        };
        let mut threads = Vec::new();
        for i in 0..ctx.drivers.limits.workers.max(1) {
            let (ctx, rx) = (ctx.clone(), rx.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("reconcile-{i}"))
                    .spawn(move || worker(ctx, rx))?,
            );
        }
        if let Some(thread) = super::monitor::start(&ctx.core, &ctx.drivers, policy, &stop)? {
            threads.push(thread);
        }
        let stop2 = stop.clone();
        let (core, drivers) = (ctx.core.clone(), ctx.drivers.clone());
        threads.push(
            std::thread::Builder::new()
                .name("reconcile".into())
                .spawn(move || dispatch(ctx, tx, stop2))?,
        );
        Ok(Reconciler {
            stop,
            threads,
            core,
            drivers,
        })
    }

    /// Stops dispatching; operations in flight finish first. Then the gateway's mirrors are
    /// unmounted and stopped cleanly (State still says mounted: the next start mounts them).
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            let _ = thread.join();
        }
        super::storage::release(&self.drivers, &self.core.state());
    }
}

/// What the reconciler's threads share. Workers hold `hardware` for reading while they execute
/// an operation; drift repair holds it for writing, so it never races an operation.
#[derive(Clone)]
struct Ctx {
    core: CoreHandle,
    drivers: Drivers,
    inflight: Arc<Mutex<BTreeSet<OperationId>>>,
    hardware: Arc<RwLock<()>>,
}

fn dispatch(ctx: Ctx, tx: Sender<Operation>, stop: Arc<AtomicBool>) {
    let mut seen = 0;
    let sync_every = Duration::from_millis(ctx.drivers.limits.sync_interval_ms);
    let mut last_sync = std::time::Instant::now();
    let poll = Duration::from_millis(100);
    while !stop.load(Ordering::SeqCst) {
        let state = ctx.core.state();
        for op in state.pending.values() {
            if ctx
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(op.id)
                && tx.send(Operation::clone(op)).is_err()
            {
                return;
            }
        }
        let head = state.head;
        // Let go of State before waiting: the core reuses the State no reader holds.
        drop(state);
        if last_sync.elapsed() >= sync_every {
            last_sync = std::time::Instant::now();
            let _exclusive = ctx.hardware.write().unwrap_or_else(|e| e.into_inner());
            super::drift::repair(&ctx.core, &ctx.drivers);
            super::storage::restore(&ctx.drivers, &ctx.core.state());
        }
        seen = ctx.core.wait_change(seen.max(head), poll);
    }
}

fn worker(ctx: Ctx, rx: Arc<Mutex<Receiver<Operation>>>) {
    let Ctx {
        core,
        drivers,
        inflight,
        hardware,
    } = ctx;
    loop {
        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(op) = next else { return };
        let _shared = hardware.read().unwrap_or_else(|e| e.into_inner());
        // The parts of State this operation needs; the hardware work may take seconds, and the
        // core reuses the State no reader holds (see `core::Spare`).
        let state = excerpt(&core.state(), &op.id);
        if state.pending.contains_key(&op.id) {
            let execution = execute(&drivers, &state, &op);
            for observation in execution.observations {
                if let Err(e) = core.submit(observation) {
                    warn!(error = %e, "observation not recorded");
                }
            }
            let outcome = Command::Finish {
                op: op.id,
                result: execution.result,
            };
            if let Err(e) = core.submit(outcome) {
                warn!(op = op.id.0, error = %e, "outcome not recorded; will retry");
            }
        }
        // Else it finished while queued (the dispatcher saw an older State): nothing to do.
        inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&op.id);
    }
}

/// A small State holding what executing operation `op` reads: the operation, its system, the
/// devices it or its system names, and the ports. Empty when `op` is no longer pending.
fn excerpt(state: &State, op: &OperationId) -> State {
    let mut out = State {
        head: state.head,
        ports: state.ports.clone(),
        ..State::default()
    };
    let Some(operation) = state.pending.get(op) else {
        return out;
    };
    let mut named: Vec<&DeviceId> = match &operation.kind {
        OperationKind::Compose { devices } => devices.iter().map(|(d, _)| d).collect(),
        OperationKind::Decompose { devices } => devices.iter().collect(),
        OperationKind::Failover { from, to, .. } => vec![from, to],
        OperationKind::Mount { .. } | OperationKind::Unmount { .. } => Vec::new(),
    };
    if let Some(system) = state.systems.get(&operation.system) {
        named.extend(system.devices.keys());
        out.systems.insert(system.name.clone(), system.clone());
    }
    for id in named {
        if let Some(device) = state.devices.get(id) {
            out.devices.insert(id.clone(), device.clone());
        }
    }
    out.pending.insert(*op, operation.clone());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceFacts, Event, Made, Role};

    fn gpu(id: &str) -> Event {
        Event::DeviceDiscovered {
            facts: Box::new(DeviceFacts {
                id: id.into(),
                kind: DeviceKind::Gpu,
                class: 0x030000,
                vendor_id: 0x10de,
                device_id: 1,
                serial: id.to_uppercase(),
                model: "test".into(),
                firmware: "1".into(),
                capacity_bytes: 24 << 30,
                rdma: false,
                switch: "sw0".into(),
            }),
        }
    }

    #[test]
    fn an_excerpt_holds_what_the_operation_reads_and_nothing_else() {
        let mut events = vec![
            Event::PortDiscovered {
                port: PortId(1),
                switch: "sw0".into(),
                slot: 1,
            },
            Event::PortDiscovered {
                port: PortId(2),
                switch: "sw0".into(),
                slot: 2,
            },
            gpu("g1"),
            gpu("g2"),
            gpu("g3"),
            Event::TenantCreated {
                name: "t".into(),
                made: Made::default(),
            },
        ];
        for system in ["a", "b"] {
            events.push(Event::SystemCreated {
                name: system.into(),
                tenant: "t".into(),
                role: Role::Workstation,
                made: Made::default(),
            });
        }
        events.push(Event::ComposeRequested {
            op: OperationId(0),
            system: "a".into(),
            devices: vec![("g1".into(), PortId(1))],
            made: Made::default(),
        });
        let mut state = State::default();
        for (i, event) in events.iter().enumerate() {
            state.apply(i as u64 + 1, event).expect("applies");
        }
        let part = excerpt(&state, &OperationId(0));
        assert_eq!(part.head, state.head);
        assert_eq!(part.ports, state.ports);
        assert_eq!(part.pending, state.pending);
        assert_eq!(part.systems.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(part.devices.keys().collect::<Vec<_>>(), ["g1"]);
        assert_eq!(part.devices["g1"], state.devices["g1"]);
        let gone = excerpt(&state, &OperationId(7));
        assert!(gone.pending.is_empty() && gone.devices.is_empty());
    }

    #[test]
    fn rules_are_numbered_in_order() {
        for (i, rule) in RULES.iter().enumerate() {
            assert_eq!(usize::from(rule.id), i + 1, "{rule:?}");
        }
    }
}
