//! Deterministic simulation: the core's pure `decide`/`apply`, an in-memory log, the simulated
//! fabric and the reconciler's `execute`, all on one thread and driven by one seeded random
//! generator, so a run is a pure function of its seed. Random commands, injected faults, and
//! crashes (including between an intent and its outcome) are interleaved; `check` verifies every
//! invariant. Used by the simulation and property tests; a failing seed reproduces from its number.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::core::log::{EventLog, MemoryLog};
use crate::core::recover;
use crate::decide::command::{
    decide, Command, CommandError, Decision, NewSystem, Observation, Order, Selection, Verb,
};
use crate::decide::placement::Want;
use crate::decide::reflex::{self, Cause, Policy, Reflex};
use crate::model::{
    AttachState, DeviceId, DeviceKind, Door, DrainScope, Event, Health, MountSource, MountSpec,
    Origin, RequestId, Role, Severity, State, SwitchName, SystemName,
};
use crate::runtime::adapt::{inventory_commands, vanished_commands};
use crate::runtime::drift::converge;
use crate::runtime::reconciler::{execute, Drivers, ReconcileLimits};
use crate::serve::SAMPLE_TOPOLOGY;
use crate::testing::sim::{Fault, FaultRates, SimFabric};
use crate::testing::volumes::SimVolumes;

/// What happened in one step (kept for the failure message of a seed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepNote {
    pub step: u64,
    pub what: String,
}

/// Counts of what a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    pub commands_accepted: u64,
    pub commands_refused: u64,
    pub operations_completed: u64,
    pub operations_failed: u64,
    pub crashes: u64,
    pub crashes_mid_operation: u64,
    pub faults: u64,
    /// Failovers the reflex started (journaled as the appliance's).
    pub reflex_failovers: u64,
    /// Of them, failovers of a gateway mirror's member.
    pub mirror_failovers: u64,
    /// Of them, failovers off a drained device.
    pub drain_failovers: u64,
}

/// One simulated appliance.
#[derive(Debug)]
pub struct Harness {
    pub seed: u64,
    pub log: Arc<MemoryLog>,
    pub state: State,
    pub sim: Arc<SimFabric>,
    drivers: Drivers,
    rng: StdRng,
    step: u64,
    pub notes: Vec<StepNote>,
    pub stats: RunStats,
    systems: Vec<SystemName>,
}

/// An order of the simulated operator.
fn order(verb: Verb, request_id: Option<RequestId>, expected_version: Option<u64>) -> Command {
    Command::Order(Order {
        verb,
        request_id,
        expected_version,
        by: Origin::default(),
        scope: None,
    })
}

/// Most notes kept for a failure message.
const NOTES_MAX: usize = 40;

impl Harness {
    /// A fresh appliance on the sample topology, fabric and choices seeded by `seed`.
    pub fn new(seed: u64) -> Harness {
        let topology =
            crate::topology::parse(SAMPLE_TOPOLOGY, Path::new("sample.toml")).unwrap_or_default();
        let sim = Arc::new(SimFabric::new(&topology, seed));
        let drivers = Drivers {
            fabric: sim.clone(),
            host: sim.clone(),
            volumes: Arc::new(SimVolumes::default()),
            limits: ReconcileLimits::default(),
        };
        let mut harness = Harness {
            seed,
            log: Arc::new(MemoryLog::with_clock(1_700_000_000_000)),
            state: State::default(),
            sim,
            drivers,
            rng: StdRng::seed_from_u64(seed ^ 0x5eed),
            step: 0,
            notes: Vec::new(),
            stats: RunStats::default(),
            systems: (0..6).map(|i| format!("sys{i}").into()).collect(),
        };
        let rdma = topology.rdma_nics();
        let inventory = topology.inventory();
        for command in inventory_commands(&inventory, &harness.state, &rdma) {
            let _ = harness.submit(command);
        }
        for tenant in ["studio-a", "studio-b"] {
            let name = tenant.into();
            let _ = harness.submit(order(Verb::CreateTenant { name }, None, None));
        }
        harness
    }

    /// Turns on random faults of the simulated fabric.
    pub fn with_faults(self, rates: FaultRates) -> Harness {
        self.sim.set_rates(rates);
        self
    }

    fn note(&mut self, what: String) {
        if self.notes.len() == NOTES_MAX {
            self.notes.remove(0);
        }
        self.notes.push(StepNote {
            step: self.step,
            what,
        });
    }

    /// Decides, journals and applies one command, as the core does.
    pub fn submit(&mut self, command: Command) -> Result<Decision, CommandError> {
        let decision = decide(&self.state, &command);
        match &decision {
            Ok(Decision::Events { events, .. }) if !events.is_empty() => {
                let (first, _) = self
                    .log
                    .append(events.clone())
                    .expect("the in-memory log accepts appends");
                for (i, event) in events.iter().enumerate() {
                    self.state
                        .apply(first + i as u64, event)
                        .expect("decided events apply");
                }
                self.stats.commands_accepted += 1;
            }
            Ok(_) => self.stats.commands_accepted += 1,
            Err(_) => self.stats.commands_refused += 1,
        }
        decision
    }

    /// One random step.
    pub fn step(&mut self) {
        self.step += 1;
        let roll = self.rng.gen_range(0..100);
        match roll {
            0..=34 => self.random_command(),
            35..=69 => self.reconcile_one(true),
            70..=74 => self.crash(),
            75..=79 => self.crash_mid_operation(),
            80..=87 => self.inject_fault(),
            _ => self.random_observation(),
        }
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            return None;
        }
        Some(items[self.rng.gen_range(0..items.len())].clone())
    }

    fn random_command(&mut self) {
        let system = self.pick(&self.systems.clone()).unwrap_or_default();
        let devices: Vec<DeviceId> = self.state.devices.keys().cloned().collect();
        let held: Vec<DeviceId> = self
            .state
            .systems
            .get(&system)
            .map(|s| s.devices.keys().cloned().collect())
            .unwrap_or_default();
        let command = match self.rng.gen_range(0..10) {
            0..=2 => self.random_compose(system, &devices),
            3..=4 => {
                let some = self.rng.gen_bool(0.5) && !held.is_empty();
                let devices = some.then(|| vec![held[self.rng.gen_range(0..held.len())].clone()]);
                let request_id = self.request_id();
                order(Verb::Decompose { system, devices }, request_id, None)
            }
            5 => self.random_mount(system),
            6 => {
                let target = self
                    .state
                    .systems
                    .get(&system)
                    .and_then(|s| s.mounts.keys().next().cloned())
                    .unwrap_or("/none".into());
                order(Verb::Unmount { system, target }, None, None)
            }
            7 => {
                let device = self.pick(&held).unwrap_or_else(|| "gpu-0".into());
                order(Verb::Failover { system, device }, None, None)
            }
            8 if !self.state.alarms.is_empty() && self.rng.gen_bool(0.3) => {
                let alarms: Vec<_> = self.state.alarms.keys().copied().collect();
                let alarm = self.pick(&alarms).expect("an alarm");
                order(Verb::ClearAlarm { alarm }, None, None)
            }
            8 if self.rng.gen_bool(0.2) => {
                let scope = if self.rng.gen_bool(0.7) {
                    DrainScope::Device(self.pick(&devices).unwrap_or_default())
                } else {
                    let switches: BTreeSet<SwitchName> = self
                        .state
                        .devices
                        .values()
                        .map(|d| d.switch.clone())
                        .collect();
                    let switches: Vec<SwitchName> = switches.into_iter().collect();
                    DrainScope::Switch(self.pick(&switches).unwrap_or_default())
                };
                let reason = "simulation".into();
                order(Verb::Drain { scope, reason }, self.request_id(), None)
            }
            8 => {
                let device = self.pick(&devices).unwrap_or_default();
                let in_service = self.rng.gen_bool(0.6);
                let reason = "simulation".into();
                // Half the returns say the device was repaired: its alarms end, it heals.
                let repaired = in_service && self.rng.gen_bool(0.5);
                let verb = Verb::SetService {
                    device,
                    in_service,
                    reason,
                    repaired,
                };
                order(verb, None, None)
            }
            _ => order(Verb::DeleteSystem { name: system }, None, None),
        };
        let name = command.name();
        let result = self.submit(command);
        self.note(format!("{name}: {}", brief(&result)));
    }

    fn request_id(&mut self) -> Option<RequestId> {
        // A small id space, so repeats happen.
        self.rng
            .gen_bool(0.3)
            .then(|| format!("req-{}", self.rng.gen_range(0..20)).into())
    }

    fn random_compose(&mut self, system: SystemName, devices: &[DeviceId]) -> Command {
        let selection = if self.rng.gen_bool(0.5) {
            let count = self.rng.gen_range(1..=3);
            Selection::Specific((0..count).filter_map(|_| self.pick(devices)).collect())
        } else {
            let kinds = [
                DeviceKind::Gpu,
                DeviceKind::Nvme,
                DeviceKind::Nic,
                DeviceKind::Hba,
            ];
            let count = self.rng.gen_range(1..=2);
            let wants = (0..count)
                .map(|_| Want {
                    kind: kinds[self.rng.gen_range(0..kinds.len())],
                    count: self.rng.gen_range(1..=2),
                    capacity_bytes_min: [0, 24 << 30, 2_000_000_000_000][self.rng.gen_range(0..3)],
                    rdma: self.rng.gen_bool(0.2),
                })
                .collect();
            Selection::Constrained(wants)
        };
        let tenants = ["studio-a", "studio-b"];
        let tenant = tenants[self.rng.gen_range(0..2)].into();
        let role = match self.rng.gen_bool(0.5) {
            true => Role::NasGateway,
            false => Role::Workstation,
        };
        let create = Some(NewSystem { tenant, role });
        let expected_version = self.rng.gen_bool(0.1).then(|| self.rng.gen_range(0..50));
        let verb = Verb::Compose {
            system,
            selection,
            create,
            tenant: None,
            reservation: None,
        };
        let request_id = self.request_id();
        order(verb, request_id, expected_version)
    }

    fn random_mount(&mut self, system: SystemName) -> Command {
        let nvme: Vec<DeviceId> = self
            .state
            .systems
            .get(&system)
            .map(|s| {
                s.devices
                    .iter()
                    .filter(|(id, _)| id.starts_with("nvme"))
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default();
        let gateway = self
            .state
            .systems
            .get(&system)
            .is_some_and(|s| s.role == Role::NasGateway);
        let source = match self.pick(&nvme) {
            // A gateway's mirror over two of its drives (a drive of another mount is refused).
            Some(_) if gateway && nvme.len() >= 2 && self.rng.gen_bool(0.8) => {
                MountSource::Mirror {
                    devices: nvme[..2].to_vec(),
                }
            }
            Some(device) if self.rng.gen_bool(0.7) => MountSource::Namespace {
                device,
                namespace: 1,
            },
            _ => MountSource::Export {
                server: "nas1".into(),
                path: "/projects".into(),
            },
        };
        let target = format!("/srv/m{}", self.rng.gen_range(0..3));
        let mount = MountSpec {
            source,
            target,
            filesystem: "xfs".into(),
            options: "defaults".into(),
        };
        order(Verb::Mount { system, mount }, None, None)
    }

    /// Executes one pending operation against the fabric and records its outcome
    /// (unless `record` is false: a crash right after the hardware moved).
    pub fn reconcile_one(&mut self, record: bool) {
        let Some(op) = self.pick(&self.state.pending.values().cloned().collect::<Vec<_>>()) else {
            return;
        };
        let execution = execute(&self.drivers, &self.state, &op);
        if !record {
            self.note(format!(
                "crash after executing op {} ({}) before its outcome",
                op.id,
                op.kind.name()
            ));
            return;
        }
        for observation in execution.observations {
            let _ = self.submit(observation);
        }
        match &execution.result {
            Ok(()) => self.stats.operations_completed += 1,
            Err(_) => self.stats.operations_failed += 1,
        }
        let outcome = self.submit(Command::Finish {
            op: op.id,
            result: execution.result.clone(),
        });
        self.note(format!(
            "op {} {} -> {:?}: {}",
            op.id,
            op.kind.name(),
            execution.result,
            brief(&outcome)
        ));
    }

    /// Crash and restart: State rebuilt from the log alone must equal the State we had.
    pub fn crash(&mut self) {
        self.stats.crashes += 1;
        let rebuilt = rebuild(self.log.as_ref());
        assert_eq!(
            rebuilt, self.state,
            "seed {}: state rebuilt after a crash differs from the live state",
            self.seed
        );
        self.state = rebuilt;
        self.note("crash + restart".into());
    }

    /// Crash between an intent and its outcome: the hardware moved, the outcome was never written.
    pub fn crash_mid_operation(&mut self) {
        if self.state.pending.is_empty() {
            return;
        }
        self.stats.crashes_mid_operation += 1;
        self.reconcile_one(false);
        self.crash();
    }

    fn inject_fault(&mut self) {
        self.stats.faults += 1;
        let devices: Vec<String> = self.state.devices.keys().map(|d| d.to_string()).collect();
        let Some(device) = self.pick(&devices) else {
            return;
        };
        let fault = match self.rng.gen_range(0..6) {
            0 => Fault::RefuseAttach {
                device: device.clone(),
            },
            1 => Fault::RefuseDetach {
                device: device.clone(),
            },
            2 => Fault::VanishOnAttach {
                device: device.clone(),
            },
            3 => Fault::BindTimeout {
                device: device.clone(),
            },
            4 => {
                self.sim.vanish(&device);
                self.note(format!("{device} vanished"));
                return;
            }
            _ => {
                self.sim.restore(&device);
                self.note(format!("{device} restored to the pool"));
                return;
            }
        };
        self.note(format!("fault scheduled: {fault:?}"));
        self.sim.schedule(fault);
    }

    /// Inventory sync and health observations, as the reconciler and monitor make them.
    fn random_observation(&mut self) {
        let inventory = match self.drivers.fabric.inventory().ok() {
            Some(inventory) => inventory,
            None => return,
        };
        for command in vanished_commands(&inventory, &self.state) {
            let _ = self.submit(command);
        }
        let devices: Vec<DeviceId> = self.state.devices.keys().cloned().collect();
        if let Some(device) = self.pick(&devices) {
            let health = if self.rng.gen_bool(0.5) {
                Health::Ok
            } else {
                Health::Failed("sim".into())
            };
            let observed = Observation::Health {
                device,
                health,
                evidence: "the simulation".into(),
                at_ms: self.state.head,
            };
            let _ = self.submit(Command::Observe(observed));
        }
        self.reflex();
    }

    /// The appliance's reflex, as the host monitor runs it after an observation and in its
    /// sweep: every failed device's failover, given as the appliance's own (a refused one is
    /// tried again at the next sweep).
    fn reflex(&mut self) {
        for reflex in reflex::sweep(&self.state, &Policy::default()) {
            self.note(format!("reflex: {reflex:?}"));
            let Some(verb) = reflex.order() else {
                continue;
            };
            let drained = matches!(
                reflex,
                Reflex::FailOver {
                    cause: Cause::Drain,
                    ..
                }
            );
            let mirrored = match &reflex {
                Reflex::FailOver { system, device, .. } => {
                    self.state.systems.get(system).is_some_and(|s| {
                        s.mounts.values().any(|m| {
                            matches!(m.source, MountSource::Mirror { .. }) && m.source.uses(device)
                        })
                    })
                }
                Reflex::Wait { .. } => false,
            };
            if self.submit(Command::appliance(verb)).is_ok() {
                self.stats.reflex_failovers += 1;
                self.stats.mirror_failovers += u64::from(mirrored);
                self.stats.drain_failovers += u64::from(drained);
            }
        }
    }

    /// Checks every invariant: State's own, replay equality, and one outcome at most per intent.
    pub fn check(&self, replay: bool) -> Result<(), String> {
        self.state.check_invariants()?;
        if replay {
            let rebuilt = rebuild(self.log.as_ref());
            if rebuilt != self.state {
                return Err("replaying the log from nothing gives a different State".into());
            }
            check_reflexes(self.log.as_ref())?;
        }
        check_outcomes(
            &self
                .log
                .events()
                .iter()
                .map(|l| l.event.clone())
                .collect::<Vec<_>>(),
        )
    }

    /// Runs every pending operation to its outcome with faults off, repairs drift, and checks
    /// that the fabric matches State (every attached device at its port, nothing else attached).
    pub fn settle(&mut self) -> Result<(), String> {
        self.sim.clear_faults();
        self.reflex();
        for _ in 0..64 {
            if self.state.pending.is_empty() {
                break;
            }
            self.reconcile_one(true);
        }
        if !self.state.pending.is_empty() {
            return Err(format!(
                "operations still pending after settling: {:?}",
                self.state.pending.keys()
            ));
        }
        let _ = converge(&self.drivers, &self.state);
        self.hardware_matches()
    }

    fn hardware_matches(&self) -> Result<(), String> {
        let inventory = self
            .drivers
            .fabric
            .inventory()
            .ok()
            .ok_or("inventory unavailable")?;
        let actual: BTreeMap<&str, Option<u16>> = inventory
            .devices
            .iter()
            .map(|d| (d.id.as_str(), d.attached_port))
            .collect();
        for (id, port) in &actual {
            let device = self
                .state
                .devices
                .get(*id)
                .ok_or(format!("fabric lists {id}, State does not"))?;
            let wanted = device
                .holder
                .as_ref()
                .and_then(|h| self.state.systems.get(h))
                .and_then(|s| s.devices.get(*id))
                .filter(|a| a.state == AttachState::Attached)
                .map(|a| a.port.0);
            // A failed device that left its port stays off it (drift repair leaves it to the
            // reflex); any other difference is drift not repaired.
            let failed_off = port.is_none() && matches!(device.health, Health::Failed(_));
            if wanted != *port && !failed_off {
                return Err(format!(
                    "{id}: State wants port {wanted:?}, the fabric has {port:?}"
                ));
            }
        }
        Ok(())
    }

    /// The last notes, for a failure message.
    pub fn trace(&self) -> String {
        self.notes
            .iter()
            .map(|n| format!("  step {}: {}", n.step, n.what))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn brief(result: &Result<Decision, CommandError>) -> String {
    match result {
        Ok(Decision::Events { events, op }) => format!("{} events, op {op:?}", events.len()),
        Ok(Decision::Repeat { op }) => format!("repeat of op {op:?}"),
        Err(e) => format!("refused: {e}"),
    }
}

/// State from the log alone (snapshot ignored).
pub fn rebuild(log: &dyn EventLog) -> State {
    let mut state = State::default();
    for logged in log.replay(1) {
        let logged = logged.expect("the in-memory log replays");
        state
            .apply(logged.sequence, &logged.event)
            .expect("logged events apply");
    }
    state
}

/// The appliance fails a system over only from a device that had failed, with a critical alarm,
/// or that an operator drains: a healthy system is never touched by the reflex.
pub fn check_reflexes(log: &dyn EventLog) -> Result<(), String> {
    let mut state = State::default();
    for logged in log.replay(1) {
        let logged = logged.map_err(|e| format!("replay: {e}"))?;
        if let Event::FailoverRequested {
            system, from, made, ..
        } = &logged.event
        {
            let device = state.devices.get(from);
            let failed = device.is_some_and(|d| matches!(d.health, Health::Failed(_)));
            let alarm = state
                .alarms_of(from)
                .any(|a| a.severity == Severity::Critical);
            let drained = state.drains.contains_key(from);
            if made.by.door == Door::Appliance && !(failed && alarm) && !drained {
                return Err(format!(
                    "sequence {}: the appliance failed {system} over from {from}, which was {:?}, with a critical alarm: {alarm}, not drained",
                    logged.sequence,
                    device.map(|d| &d.health),
                ));
            }
        }
        state
            .apply(logged.sequence, &logged.event)
            .map_err(|e| format!("sequence {}: {e}", logged.sequence))?;
    }
    Ok(())
}

/// Every outcome follows its intent, and no intent has two outcomes.
pub fn check_outcomes(events: &[Event]) -> Result<(), String> {
    let mut open = BTreeSet::new();
    let mut closed = BTreeSet::new();
    for event in events {
        if let Some(op) = event.intent_of() {
            if !open.insert(op) || closed.contains(&op) {
                return Err(format!("operation {op} has two intents"));
            }
        }
        if let Some(op) = event.outcome_of() {
            if !open.remove(&op) {
                return Err(format!(
                    "operation {op} has an outcome without an open intent"
                ));
            }
            closed.insert(op);
        }
    }
    Ok(())
}

/// Recovers as the core does at start (snapshot, if any, + tail), for tests.
pub fn recover_state(log: &dyn EventLog) -> State {
    recover(log).map(|(state, _)| state).unwrap_or_default()
}
