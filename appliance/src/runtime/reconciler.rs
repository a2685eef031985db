//! The reconciler: compares what State wants with what the fabric and the host report, drives
//! them (`drivers::Fabric`, `drivers::Host`), and turns the results into outcome commands. After a
//! restart it finds every intent without an outcome and finishes it (each step is idempotent: a
//! device already attached where it should be is not attached again) or rolls it back.
//!
//! States of one compose (one row per situation the reconciler can find):
//!
//! | found at the switch / host            | action                                   | outcome          |
//! |---------------------------------------|------------------------------------------|------------------|
//! | device free                           | attach, wait for slot, bind, identify    | continue         |
//! | device already at its port            | skip attach; wait, bind, identify        | continue         |
//! | switch refuses / device unknown       | detach what this op attached             | ComposeFailed    |
//! | slot stays empty (device vanished)    | detach the rest, report vanished         | ComposeFailed    |
//! | bind times out / NVMe serial differs  | detach what this op attached             | ComposeFailed    |
//! | every device bound (and identified)   | nothing more                             | ComposeCompleted |
//!
//! Decompose is the mirror (unbind, detach, wait for the slot to empty; a failure re-attaches what
//! was detached: all or nothing). Mounts are checked against the composed devices (the mount
//! itself happens inside the composed system, not on the appliance).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use drivers::{DriverChoice, Fabric, FabricError, Host, HostObservation, Inventory, PciAddress};
use tracing::{info, info_span, warn};

use crate::core::CoreHandle;
use crate::decide::command::Command;
use crate::model::domain::{AttachState, Device, DeviceKind, Health, MountSource, OperationId};
use crate::model::event::DeviceFacts;
use crate::model::state::{Operation, OperationKind, State};

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
    pub limits: ReconcileLimits,
}

impl std::fmt::Debug for Drivers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drivers")
            .field("limits", &self.limits)
            .finish()
    }
}

/// The result of executing one operation: its verdict, plus observations made on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub result: Result<(), String>,
    pub observations: Vec<Command>,
}

/// The driver a device of this kind is bound to.
fn driver_for(kind: DeviceKind) -> DriverChoice {
    match kind {
        DeviceKind::Nvme => DriverChoice::Nvme,
        DeviceKind::Gpu => DriverChoice::VfioPci,
        DeviceKind::Nic | DeviceKind::Hba | DeviceKind::Other => DriverChoice::Default,
    }
}

/// Executes one pending operation against the hardware.
pub fn execute(drivers: &Drivers, state: &State, op: &Operation) -> Execution {
    let span = info_span!("reconcile", op = op.id, kind = op.kind.name(), system = %op.system);
    let _guard = span.enter();
    let mut observations = Vec::new();
    let result = match &op.kind {
        OperationKind::Compose { devices } => {
            attach_all(drivers, state, devices, &mut observations)
        }
        OperationKind::Decompose { devices } => {
            let pairs: Vec<(String, u16)> = devices
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
            to,
            *port,
            &mut observations,
        ),
        OperationKind::Mount { mount } => match &mount.source {
            MountSource::Namespace { device, .. } => {
                check_present(drivers, state, &op.system, device)
            }
            MountSource::Export { .. } => Ok(()),
        },
        OperationKind::Unmount { .. } => Ok(()),
    };
    match &result {
        Ok(()) => info!("operation done"),
        Err(reason) => warn!(%reason, "operation failed"),
    }
    Execution {
        result,
        observations,
    }
}

fn port_of(state: &State, system: &str, device: &str) -> Option<(String, u16)> {
    let attachment = state.systems.get(system)?.devices.get(device)?;
    Some((device.to_string(), attachment.port))
}

fn inventory(drivers: &Drivers) -> Result<Inventory, String> {
    drivers
        .fabric
        .inventory()
        .map_err(|e| format!("read the switch's inventory: {e}"))
}

/// Attaches every device (all or nothing).
fn attach_all(
    drivers: &Drivers,
    state: &State,
    devices: &[(String, u16)],
    observations: &mut Vec<Command>,
) -> Result<(), String> {
    let before = inventory(drivers)?;
    let mut attached: Vec<(String, u16)> = Vec::new();
    for (device, port) in devices {
        let already = before
            .devices
            .iter()
            .any(|d| d.id == *device && d.attached_port == Some(*port));
        if let Err(reason) = attach_one(drivers, state, device, *port, already) {
            if !already {
                attached.push((device.clone(), *port));
            }
            note_vanished(drivers, device, observations);
            rollback_attach(drivers, &attached);
            return Err(reason);
        }
        if !already {
            attached.push((device.clone(), *port));
        }
    }
    Ok(())
}

fn attach_one(
    drivers: &Drivers,
    state: &State,
    device: &str,
    port: u16,
    already: bool,
) -> Result<(), String> {
    let known: &Device = state
        .devices
        .get(device)
        .ok_or_else(|| format!("device {device} is not in State"))?;
    let slot = state
        .ports
        .get(&port)
        .map(|p| p.slot)
        .ok_or_else(|| format!("port {port} is not in State"))?;
    if !already {
        drivers
            .fabric
            .attach(device, port)
            .map_err(|e| format!("attach {device} to port {port}: {e}"))?;
    }
    let limits = &drivers.limits;
    let seen = drivers
        .host
        .wait_for_device(slot, Duration::from_millis(limits.attach_timeout_ms))
        .map_err(|e| format!("{device} at port {port}, slot {slot}: {e}"))?;
    if seen.class.0 != known.class {
        return Err(format!(
            "slot {slot} shows class {:06x}, {device} is {:06x}",
            seen.class.0, known.class
        ));
    }
    let driver = driver_for(known.kind);
    drivers
        .host
        .bind(
            seen.address,
            driver.clone(),
            Duration::from_millis(limits.bind_timeout_ms),
        )
        .map_err(|e| format!("bind {device} ({}) to {driver:?}: {e}", seen.address))?;
    if known.kind == DeviceKind::Nvme {
        let identity = drivers
            .host
            .identify_nvme(seen.address)
            .map_err(|e| format!("identify {device}: {e}"))?;
        if identity.serial.trim() != known.serial.trim() {
            return Err(format!(
                "{device} at {} identifies as serial {:?}, expected {:?}",
                seen.address, identity.serial, known.serial
            ));
        }
    }
    Ok(())
}

/// A device the switch no longer lists is reported as vanished.
fn note_vanished(drivers: &Drivers, device: &str, observations: &mut Vec<Command>) {
    if let Ok(now) = drivers.fabric.inventory() {
        if !now.devices.iter().any(|d| d.id == device) {
            observations.push(Command::ObserveVanished {
                device: device.to_string(),
            });
        }
    }
}

fn rollback_attach(drivers: &Drivers, attached: &[(String, u16)]) {
    for (device, port) in attached.iter().rev() {
        match drivers.fabric.detach(device, *port) {
            Ok(()) | Err(FabricError::UnknownDevice { .. }) => {}
            Err(e) => {
                warn!(%device, port, error = %e, "rollback: detach failed; drift repair will retry")
            }
        }
    }
}

/// Detaches every device (all or nothing: a failure re-attaches what was detached).
fn detach_all(drivers: &Drivers, state: &State, devices: &[(String, u16)]) -> Result<(), String> {
    let mut detached: Vec<(String, u16)> = Vec::new();
    for (device, port) in devices {
        if let Err(reason) = detach_one(drivers, state, device, *port) {
            for (d, p) in detached.iter().rev() {
                if let Err(e) = attach_one(drivers, state, d, *p, false) {
                    warn!(device = %d, port = p, error = %e, "rollback: re-attach failed; drift repair will retry");
                }
            }
            return Err(reason);
        }
        detached.push((device.clone(), *port));
    }
    Ok(())
}

fn detach_one(drivers: &Drivers, state: &State, device: &str, port: u16) -> Result<(), String> {
    let slot = state
        .ports
        .get(&port)
        .map(|p| p.slot)
        .ok_or_else(|| format!("port {port} is not in State"))?;
    let limits = &drivers.limits;
    if let Ok(seen) = drivers.host.wait_for_device(slot, Duration::ZERO) {
        if let Err(e) = drivers.host.bind(
            seen.address,
            DriverChoice::None,
            Duration::from_millis(limits.bind_timeout_ms),
        ) {
            warn!(%device, error = %e, "unbind before detach failed; detaching anyway");
        }
    }
    match drivers.fabric.detach(device, port) {
        // A device the switch no longer knows is detached by definition.
        Ok(()) | Err(FabricError::UnknownDevice { .. }) => {}
        Err(e) => return Err(format!("detach {device} from port {port}: {e}")),
    }
    drivers
        .host
        .wait_for_removal(slot, Duration::from_millis(limits.removal_timeout_ms))
        .map_err(|e| format!("{device} leaving slot {slot}: {e}"))
}

fn failover(
    drivers: &Drivers,
    state: &State,
    system: &str,
    from: &str,
    to: &str,
    port: u16,
    observations: &mut Vec<Command>,
) -> Result<(), String> {
    attach_all(drivers, state, &[(to.to_string(), port)], observations)?;
    let Some(old) = port_of(state, system, from) else {
        return Ok(());
    };
    if let Err(reason) = detach_all(drivers, state, &[old]) {
        rollback_attach(drivers, &[(to.to_string(), port)]);
        return Err(reason);
    }
    Ok(())
}

fn check_present(
    drivers: &Drivers,
    state: &State,
    system: &str,
    device: &str,
) -> Result<(), String> {
    let (_, port) = port_of(state, system, device)
        .ok_or_else(|| format!("{device} is not composed into {system}"))?;
    let slot = state
        .ports
        .get(&port)
        .map(|p| p.slot)
        .ok_or_else(|| format!("port {port} is not in State"))?;
    drivers
        .host
        .wait_for_device(slot, Duration::ZERO)
        .map(|_| ())
        .map_err(|e| format!("{device} in slot {slot}: {e}"))
}

/// Observations that bring State's idea of the pool in line with the switch's inventory.
pub fn sync_inventory(
    inventory: &Inventory,
    state: &State,
    rdma: &BTreeSet<String>,
) -> Vec<Command> {
    let mut commands = Vec::new();
    for port in &inventory.ports {
        commands.push(Command::ObservePort {
            port: port.id,
            switch: port.switch.clone(),
            slot: port.slot,
        });
    }
    for pool in &inventory.devices {
        let device = Device::from_pool(pool, rdma.contains(&pool.id));
        commands.push(Command::ObserveDevice {
            facts: crate::model::state::facts_of(&device),
        });
    }
    let listed: BTreeSet<&str> = inventory.devices.iter().map(|d| d.id.as_str()).collect();
    for device in state
        .devices
        .values()
        .filter(|d| d.present && !listed.contains(d.id.as_str()))
    {
        commands.push(Command::ObserveVanished {
            device: device.id.clone(),
        });
    }
    commands
}

/// Repairs drift for devices of idle systems and free devices: attaches what State holds as
/// attached, detaches what State holds as free. Returns what it did or failed to do.
pub fn converge(drivers: &Drivers, state: &State) -> Vec<String> {
    let Ok(inventory) = drivers.fabric.inventory() else {
        return vec!["inventory unavailable".into()];
    };
    let mut notes = Vec::new();
    for pool in &inventory.devices {
        let Some(device) = state.devices.get(&pool.id) else {
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
        if pool.attached_port == wanted {
            continue;
        }
        let result = match (pool.attached_port, wanted) {
            (Some(actual), None) => detach_one(drivers, state, &pool.id, actual),
            (None, Some(port)) => attach_one(drivers, state, &pool.id, port, false),
            (Some(actual), Some(port)) => detach_one(drivers, state, &pool.id, actual)
                .and_then(|()| attach_one(drivers, state, &pool.id, port, false)),
            (None, None) => Ok(()),
        };
        notes.push(match result {
            Ok(()) => format!("repaired drift of {}: now at {wanted:?}", pool.id),
            Err(e) => format!("drift of {} not repaired: {e}", pool.id),
        });
    }
    notes
}

fn wanted_port(state: &State, device: &Device) -> Option<u16> {
    let holder = state.systems.get(device.holder.as_ref()?)?;
    let attachment = holder.devices.get(&device.id)?;
    (attachment.state == AttachState::Attached).then_some(attachment.port)
}

/// Maps a host observation to a command, when it concerns a device State knows. `slot_of` finds
/// the hotplug slot of a PCI address (from the host's present devices).
pub fn observation_command(
    state: &State,
    observation: &HostObservation,
    slot_of: impl Fn(PciAddress) -> Option<u32>,
) -> Option<Command> {
    let device_in = |slot: Option<u32>| {
        let port = state.ports.values().find(|p| Some(p.slot) == slot)?;
        port.device.clone()
    };
    match observation {
        HostObservation::DeviceRemoved { slot, .. } => {
            let device = device_in(*slot)?;
            let attached = state
                .devices
                .get(&device)
                .and_then(|d| wanted_port(state, d))
                .is_some();
            attached.then(|| Command::ObserveHealth {
                device,
                health: Health::Failed("removed from its slot unexpectedly".into()),
            })
        }
        HostObservation::NvmeCriticalWarning { .. }
        | HostObservation::LinkChanged { .. }
        | HostObservation::DeviceAdded { .. } => observation_health(state, observation, slot_of),
    }
}

fn observation_health(
    state: &State,
    observation: &HostObservation,
    slot_of: impl Fn(PciAddress) -> Option<u32>,
) -> Option<Command> {
    let (address, health) = match observation {
        HostObservation::NvmeCriticalWarning { address, bits } if *bits != 0 => (
            address,
            Health::Failed(format!("NVMe SMART critical warning 0x{bits:02x}")),
        ),
        HostObservation::NvmeCriticalWarning { address, .. } => (address, Health::Ok),
        HostObservation::LinkChanged { address, up: false } => {
            (address, Health::Degraded("link down".into()))
        }
        HostObservation::LinkChanged { address, up: true } => (address, Health::Ok),
        _ => return None,
    };
    let slot = slot_of(*address)?;
    let port = state.ports.values().find(|p| p.slot == slot)?;
    Some(Command::ObserveHealth {
        device: port.device.clone()?,
        health,
    })
}

/// The running reconciler: a dispatcher thread, workers, and a host-observation thread.
#[derive(Debug)]
pub struct Reconciler {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Reconciler {
    /// Starts reconciling `core`'s State against `drivers`.
    pub fn start(core: CoreHandle, drivers: Drivers) -> std::io::Result<Reconciler> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = channel::<Operation>();
        let rx = Arc::new(Mutex::new(rx));
        let inflight = Arc::new(Mutex::new(BTreeSet::new()));
        let hardware = Arc::new(RwLock::new(()));
        let mut threads = Vec::new();
        for i in 0..drivers.limits.workers.max(1) {
            let ctx = Ctx {
                core: core.clone(),
                drivers: drivers.clone(),
                inflight: inflight.clone(),
                hardware: hardware.clone(),
            };
            let rx = rx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("reconcile-{i}"))
                    .spawn(move || worker(ctx, rx))?,
            );
        }
        if let Ok(observations) = drivers.host.observations() {
            let (core, stop, host) = (core.clone(), stop.clone(), drivers.host.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("observe".into())
                    .spawn(move || observe(core, host, observations, stop))?,
            );
        }
        let stop2 = stop.clone();
        let ctx = Ctx {
            core,
            drivers,
            inflight,
            hardware,
        };
        threads.push(
            std::thread::Builder::new()
                .name("reconcile".into())
                .spawn(move || dispatch(ctx, tx, stop2))?,
        );
        Ok(Reconciler { stop, threads })
    }

    /// Stops dispatching; operations in flight finish first.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            let _ = thread.join();
        }
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
            repair(&ctx);
        }
        seen = ctx.core.wait_change(seen.max(head), poll);
    }
}

fn repair(ctx: &Ctx) {
    let _exclusive = ctx.hardware.write().unwrap_or_else(|e| e.into_inner());
    let state = ctx.core.state();
    if let Ok(inventory) = ctx.drivers.fabric.inventory() {
        for command in sync_inventory(&inventory, &state, &BTreeSet::new()) {
            if matches!(command, Command::ObserveVanished { .. }) {
                if let Err(e) = ctx.core.submit(command) {
                    warn!(error = %e, "vanished device not recorded");
                }
            }
        }
    }
    for note in converge(&ctx.drivers, &ctx.core.state()) {
        info!(%note, "drift");
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
        if !state.pending.contains_key(&op.id) {
            // Finished while queued (the dispatcher saw an older State): nothing to do.
            inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&op.id);
            continue;
        }
        let execution = execute(&drivers, &state, &op);
        for observation in execution.observations {
            if let Err(e) = core.submit(observation) {
                warn!(error = %e, "observation not recorded");
            }
        }
        if let Err(e) = core.submit(Command::Finish {
            op: op.id,
            result: execution.result,
        }) {
            warn!(op = op.id, error = %e, "outcome not recorded; will retry");
        }
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
    let mut named: Vec<&str> = match &operation.kind {
        OperationKind::Compose { devices } => devices.iter().map(|(d, _)| d.as_str()).collect(),
        OperationKind::Decompose { devices } => devices.iter().map(String::as_str).collect(),
        OperationKind::Failover { from, to, .. } => vec![from.as_str(), to.as_str()],
        OperationKind::Mount { .. } | OperationKind::Unmount { .. } => Vec::new(),
    };
    if let Some(system) = state.systems.get(&operation.system) {
        named.extend(system.devices.keys().map(String::as_str));
        out.systems.insert(system.name.clone(), system.clone());
    }
    for id in named {
        if let Some(device) = state.devices.get(id) {
            out.devices.insert(id.to_string(), device.clone());
        }
    }
    out.pending.insert(*op, operation.clone());
    out
}

fn observe(
    core: CoreHandle,
    host: Arc<dyn Host>,
    observations: Receiver<HostObservation>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
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
                    if let Err(e) = core.submit(command) {
                        warn!(error = %e, "observation not recorded");
                    }
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Facts of every device the inventory lists (for the first sync at start).
pub fn inventory_facts(inventory: &Inventory, rdma: &BTreeSet<String>) -> Vec<DeviceFacts> {
    inventory
        .devices
        .iter()
        .map(|d| crate::model::state::facts_of(&Device::from_pool(d, rdma.contains(&d.id))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::domain::Role;
    use crate::model::event::{DeviceFacts, Event};

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
                port: 1,
                switch: "sw0".into(),
                slot: 1,
            },
            Event::PortDiscovered {
                port: 2,
                switch: "sw0".into(),
                slot: 2,
            },
            gpu("g1"),
            gpu("g2"),
            gpu("g3"),
            Event::TenantCreated { name: "t".into() },
        ];
        for system in ["a", "b"] {
            events.push(Event::SystemCreated {
                name: system.into(),
                tenant: "t".into(),
                role: Role::Workstation,
            });
        }
        events.push(Event::ComposeRequested {
            op: 0,
            system: "a".into(),
            devices: vec![("g1".into(), 1)],
            request_id: None,
        });
        let mut state = State::default();
        for (i, event) in events.iter().enumerate() {
            state.apply(i as u64 + 1, event).expect("applies");
        }
        let part = excerpt(&state, &0);
        assert_eq!(part.head, state.head);
        assert_eq!(part.ports, state.ports);
        assert_eq!(part.pending, state.pending);
        assert_eq!(part.systems.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(part.devices.keys().collect::<Vec<_>>(), ["g1"]);
        assert_eq!(part.devices["g1"], state.devices["g1"]);
        let gone = excerpt(&state, &7);
        assert!(gone.pending.is_empty() && gone.devices.is_empty());
    }
}
