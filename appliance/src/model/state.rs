//! The appliance's State: a pure fold of its events. `apply` does no I/O; `check_invariants`
//! states what must hold after every event (checked in tests and, in debug builds, by the core).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::domain::{
    AttachState, Attachment, Device, DeviceId, Health, Identity, Mount, MountSource, MountState,
    OperationId, Port, System, SystemName, Tenant,
};
use crate::model::event::{DeviceFacts, Event, MountSpec};

/// Finished operations remembered (for request-id replies and `show`); older ones are dropped.
pub const FINISHED_OPERATIONS_MAX: usize = 4096;

/// What an operation does.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    Compose {
        devices: Vec<(DeviceId, u16)>,
    },
    Decompose {
        devices: Vec<DeviceId>,
    },
    Mount {
        // Boxed: the spec would double the size of every operation, and State's maps move
        // operations around as they change.
        mount: Box<MountSpec>,
    },
    Unmount {
        target: String,
    },
    Failover {
        from: DeviceId,
        to: DeviceId,
        port: u16,
    },
}

impl OperationKind {
    pub fn name(&self) -> &'static str {
        match self {
            OperationKind::Compose { .. } => "compose",
            OperationKind::Decompose { .. } => "decompose",
            OperationKind::Mount { .. } => "mount",
            OperationKind::Unmount { .. } => "unmount",
            OperationKind::Failover { .. } => "failover",
        }
    }
}

/// How an operation ended.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Completed,
    Failed(String),
}

/// An operation: its intent and, once it has one, its outcome.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Operation {
    pub id: OperationId,
    pub system: SystemName,
    pub kind: OperationKind,
    pub request_id: Option<String>,
    /// Sequence of the intent event.
    pub requested_at: u64,
    /// Sequence of the outcome event, once there is one.
    pub finished_at: Option<u64>,
    pub outcome: Option<Outcome>,
}

/// Counters derived from events (the ones that survive a restart).
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Counters {
    pub operations_requested: u64,
    pub operations_completed: u64,
    pub operations_failed: u64,
    pub devices_vanished: u64,
}

/// The whole state of the appliance.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct State {
    /// Sequence of the last applied event (0 = nothing applied).
    pub head: u64,
    pub identity: Identity,
    pub tenants: BTreeMap<String, Tenant>,
    pub devices: BTreeMap<DeviceId, Device>,
    pub ports: BTreeMap<u16, Port>,
    pub systems: BTreeMap<SystemName, System>,
    /// Operations without an outcome yet.
    pub pending: BTreeMap<OperationId, Box<Operation>>,
    /// The most recent finished operations (at most FINISHED_OPERATIONS_MAX).
    pub finished: BTreeMap<OperationId, Box<Operation>>,
    /// Request id -> the operation it created (pending or still remembered as finished).
    pub requests: BTreeMap<String, OperationId>,
    pub next_operation: OperationId,
    pub counters: Counters,
}

/// An event that does not fit the state it is applied to: a bug in `decide` or a damaged journal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("event at sequence {sequence} names unknown {what} {name:?}")]
    Unknown {
        sequence: u64,
        what: &'static str,
        name: String,
    },
    #[error("event at sequence {sequence} does not fit the state: {reason}")]
    Conflict { sequence: u64, reason: String },
    #[error("event at sequence {sequence} is not after the state's head {head}")]
    OutOfOrder { sequence: u64, head: u64 },
}

impl State {
    /// Applies one event recorded at `sequence` (must be > head).
    pub fn apply(&mut self, sequence: u64, event: &Event) -> Result<(), ApplyError> {
        self.apply_owned(sequence, event.clone())
    }

    /// Applies one event recorded at `sequence` (must be > head), keeping its parts: what State
    /// stores of an event (names, facts, reasons) moves in instead of being copied, which is
    /// what replay wants (it decoded the event only to apply it).
    pub fn apply_owned(&mut self, sequence: u64, event: Event) -> Result<(), ApplyError> {
        if sequence <= self.head {
            return Err(ApplyError::OutOfOrder {
                sequence,
                head: self.head,
            });
        }
        self.apply_inner(sequence, event)?;
        self.head = sequence;
        Ok(())
    }

    fn apply_inner(&mut self, seq: u64, event: Event) -> Result<(), ApplyError> {
        match event {
            Event::IdentitySet { identity } => self.identity = identity,
            Event::TenantCreated { name } => {
                let tenant = Tenant {
                    name: name.clone(),
                    version: seq,
                };
                self.tenants.insert(name, tenant);
            }
            Event::SystemCreated { name, tenant, role } => {
                self.create_system(seq, name, tenant, role)?
            }
            Event::SystemDeleted { name } => self.delete_system(seq, &name)?,
            Event::PortDiscovered { port, switch, slot } => {
                let entry = self.ports.entry(port).or_insert(Port {
                    id: port,
                    switch: String::new(),
                    slot,
                    device: None,
                });
                entry.switch = switch;
                entry.slot = slot;
            }
            Event::DeviceDiscovered { facts } => self.discover(seq, *facts),
            Event::DeviceVanished { device } => {
                self.device_mut(seq, &device)?.present = false;
                self.counters.devices_vanished += 1;
            }
            Event::HealthChanged { device, health } => {
                self.device_mut(seq, &device)?.health = health
            }
            Event::ServiceChanged {
                device, in_service, ..
            } => self.device_mut(seq, &device)?.in_service = in_service,
            other => return self.apply_operation(seq, other),
        }
        Ok(())
    }

    fn apply_operation(&mut self, seq: u64, event: Event) -> Result<(), ApplyError> {
        if let Some(op) = event.outcome_of() {
            return self.finish(seq, op, event);
        }
        let (op, system, kind, request_id) = match event {
            Event::ComposeRequested {
                op,
                system,
                devices,
                request_id,
            } => (op, system, OperationKind::Compose { devices }, request_id),
            Event::DecomposeRequested {
                op,
                system,
                devices,
                request_id,
            } => (op, system, OperationKind::Decompose { devices }, request_id),
            Event::MountRequested {
                op,
                system,
                mount,
                request_id,
            } => (op, system, OperationKind::Mount { mount }, request_id),
            Event::UnmountRequested {
                op,
                system,
                target,
                request_id,
            } => (op, system, OperationKind::Unmount { target }, request_id),
            Event::FailoverRequested {
                op,
                system,
                from,
                to,
                port,
                request_id,
            } => (
                op,
                system,
                OperationKind::Failover { from, to, port },
                request_id,
            ),
            _ => {
                return Err(ApplyError::Conflict {
                    sequence: seq,
                    reason: format!("unhandled event {event:?}"),
                })
            }
        };
        let operation = Operation {
            id: op,
            system,
            kind,
            request_id,
            requested_at: seq,
            finished_at: None,
            outcome: None,
        };
        self.request(seq, operation)
    }

    fn create_system(
        &mut self,
        seq: u64,
        name: String,
        tenant: String,
        role: crate::model::domain::Role,
    ) -> Result<(), ApplyError> {
        if !self.tenants.contains_key(&tenant) {
            return Err(ApplyError::Unknown {
                sequence: seq,
                what: "tenant",
                name: tenant,
            });
        }
        let system = System {
            name: name.clone(),
            tenant,
            role,
            devices: BTreeMap::new(),
            mounts: BTreeMap::new(),
            pending: None,
            last_failure: None,
            version: seq,
        };
        if self.systems.insert(name.clone(), system).is_some() {
            return Err(ApplyError::Conflict {
                sequence: seq,
                reason: format!("system {name:?} exists"),
            });
        }
        Ok(())
    }

    fn delete_system(&mut self, seq: u64, name: &str) -> Result<(), ApplyError> {
        let system = self.system_mut(seq, name)?;
        if !system.devices.is_empty() || system.pending.is_some() {
            return Err(ApplyError::Conflict {
                sequence: seq,
                reason: format!("system {name:?} still holds devices"),
            });
        }
        self.systems.remove(name);
        Ok(())
    }

    fn discover(&mut self, seq: u64, facts: DeviceFacts) {
        let device = self
            .devices
            .entry(facts.id.clone())
            .or_insert_with(|| Device {
                id: facts.id.clone(),
                kind: facts.kind,
                class: facts.class,
                vendor_id: 0,
                device_id: 0,
                serial: String::new(),
                model: String::new(),
                firmware: String::new(),
                capacity_bytes: 0,
                rdma: false,
                switch: String::new(),
                port: None,
                health: Health::Ok,
                in_service: true,
                present: true,
                holder: None,
                version: seq,
            });
        device.kind = facts.kind;
        device.class = facts.class;
        device.vendor_id = facts.vendor_id;
        device.device_id = facts.device_id;
        device.serial = facts.serial;
        device.model = facts.model;
        device.firmware = facts.firmware;
        device.capacity_bytes = facts.capacity_bytes;
        device.rdma = facts.rdma;
        device.switch = facts.switch;
        device.present = true;
        device.version = seq;
    }

    /// Records an intent: reserves devices and ports, marks the system busy.
    fn request(&mut self, seq: u64, operation: Operation) -> Result<(), ApplyError> {
        let system = self.system_mut(seq, &operation.system)?;
        if system.pending.is_some() {
            return Err(ApplyError::Conflict {
                sequence: seq,
                reason: format!("system {:?} is busy", operation.system),
            });
        }
        system.pending = Some(operation.id);
        system.version = seq;
        match &operation.kind {
            OperationKind::Compose { devices } => {
                for (device, port) in devices {
                    self.reserve(seq, &operation.system, device, *port)?;
                }
            }
            OperationKind::Decompose { devices } => {
                for device in devices {
                    self.set_attach_state(seq, &operation.system, device, AttachState::Detaching)?;
                }
            }
            OperationKind::Mount { mount } => self.start_mount(seq, &operation.system, mount)?,
            OperationKind::Unmount { target } => {
                self.set_mount_state(seq, &operation.system, target, MountState::Unmounting)?
            }
            OperationKind::Failover { from, to, port } => {
                self.set_attach_state(seq, &operation.system, from, AttachState::Detaching)?;
                self.reserve(seq, &operation.system, to, *port)?;
            }
        }
        if let Some(request_id) = &operation.request_id {
            self.requests.insert(request_id.clone(), operation.id);
        }
        self.next_operation = self.next_operation.max(operation.id + 1);
        self.counters.operations_requested += 1;
        self.pending.insert(operation.id, Box::new(operation));
        Ok(())
    }

    /// Records an outcome: commits or rolls back what the intent reserved.
    fn finish(&mut self, seq: u64, op: OperationId, event: Event) -> Result<(), ApplyError> {
        let mut operation = self
            .pending
            .remove(&op)
            .ok_or_else(|| ApplyError::Unknown {
                sequence: seq,
                what: "pending operation",
                name: op.to_string(),
            })?;
        let outcome = match event {
            Event::ComposeFailed { reason, .. }
            | Event::DecomposeFailed { reason, .. }
            | Event::MountFailed { reason, .. }
            | Event::UnmountFailed { reason, .. }
            | Event::FailoverFailed { reason, .. } => Outcome::Failed(reason),
            _ => Outcome::Completed,
        };
        self.conclude(seq, &operation, &outcome)?;
        let system = self.system_mut(seq, &operation.system)?;
        system.pending = None;
        system.version = seq;
        system.last_failure = match &outcome {
            Outcome::Failed(reason) => Some(format!("{} failed: {reason}", operation.kind.name())),
            Outcome::Completed => None,
        };
        match outcome {
            Outcome::Completed => self.counters.operations_completed += 1,
            Outcome::Failed(_) => self.counters.operations_failed += 1,
        }
        operation.finished_at = Some(seq);
        operation.outcome = Some(outcome);
        self.remember(operation);
        Ok(())
    }

    fn conclude(
        &mut self,
        seq: u64,
        operation: &Operation,
        outcome: &Outcome,
    ) -> Result<(), ApplyError> {
        let ok = *outcome == Outcome::Completed;
        let system = &operation.system;
        match &operation.kind {
            OperationKind::Compose { devices } => {
                for (device, _) in devices {
                    if ok {
                        self.set_attach_state(seq, system, device, AttachState::Attached)?;
                    } else {
                        self.release(seq, system, device)?;
                    }
                }
            }
            OperationKind::Decompose { devices } => {
                for device in devices {
                    if ok {
                        self.release(seq, system, device)?;
                    } else {
                        self.set_attach_state(seq, system, device, AttachState::Attached)?;
                    }
                }
            }
            OperationKind::Mount { mount } => {
                if ok {
                    self.set_mount_state(seq, system, &mount.target, MountState::Mounted)?;
                } else {
                    self.system_mut(seq, system)?.mounts.remove(&mount.target);
                }
            }
            OperationKind::Unmount { target } => {
                if ok {
                    self.system_mut(seq, system)?.mounts.remove(target);
                } else {
                    self.set_mount_state(seq, system, target, MountState::Mounted)?;
                }
            }
            OperationKind::Failover { from, to, .. } => {
                let (gone, kept) = if ok { (from, to) } else { (to, from) };
                self.release(seq, system, gone)?;
                self.set_attach_state(seq, system, kept, AttachState::Attached)?;
            }
        }
        Ok(())
    }

    fn remember(&mut self, operation: Box<Operation>) {
        self.finished.insert(operation.id, operation);
        while self.finished.len() > FINISHED_OPERATIONS_MAX {
            let Some((_, old)) = self.finished.pop_first() else {
                break;
            };
            if let Some(request_id) = old.request_id {
                self.requests.remove(&request_id);
            }
        }
    }

    fn reserve(
        &mut self,
        seq: u64,
        system: &str,
        device_id: &str,
        port_id: u16,
    ) -> Result<(), ApplyError> {
        let device = self.device_mut(seq, device_id)?;
        if device.holder.is_some() {
            return Err(ApplyError::Conflict {
                sequence: seq,
                reason: format!("device {device_id:?} is already held"),
            });
        }
        device.holder = Some(system.to_string());
        device.port = Some(port_id);
        device.version = seq;
        let port = self
            .ports
            .get_mut(&port_id)
            .ok_or_else(|| ApplyError::Unknown {
                sequence: seq,
                what: "port",
                name: port_id.to_string(),
            })?;
        if port.device.is_some() {
            return Err(ApplyError::Conflict {
                sequence: seq,
                reason: format!("port {port_id} is already used"),
            });
        }
        port.device = Some(device_id.to_string());
        let attachment = Attachment {
            port: port_id,
            state: AttachState::Attaching,
        };
        self.system_mut(seq, system)?
            .devices
            .insert(device_id.to_string(), attachment);
        Ok(())
    }

    fn release(&mut self, seq: u64, system: &str, device_id: &str) -> Result<(), ApplyError> {
        let attachment = self
            .system_mut(seq, system)?
            .devices
            .remove(device_id)
            .ok_or_else(|| ApplyError::Unknown {
                sequence: seq,
                what: "device of the system",
                name: device_id.to_string(),
            })?;
        if let Some(port) = self.ports.get_mut(&attachment.port) {
            port.device = None;
        }
        let device = self.device_mut(seq, device_id)?;
        device.holder = None;
        device.port = None;
        device.version = seq;
        Ok(())
    }

    fn set_attach_state(
        &mut self,
        seq: u64,
        system: &str,
        device_id: &str,
        state: AttachState,
    ) -> Result<(), ApplyError> {
        let attachment = self
            .system_mut(seq, system)?
            .devices
            .get_mut(device_id)
            .ok_or_else(|| ApplyError::Unknown {
                sequence: seq,
                what: "device of the system",
                name: device_id.to_string(),
            })?;
        attachment.state = state;
        self.device_mut(seq, device_id)?.version = seq;
        Ok(())
    }

    fn start_mount(&mut self, seq: u64, system: &str, spec: &MountSpec) -> Result<(), ApplyError> {
        let mount = Mount {
            source: spec.source.clone(),
            target: spec.target.clone(),
            filesystem: spec.filesystem.clone(),
            options: spec.options.clone(),
            state: MountState::Mounting,
        };
        let system = self.system_mut(seq, system)?;
        if system.mounts.insert(spec.target.clone(), mount).is_some() {
            return Err(ApplyError::Conflict {
                sequence: seq,
                reason: format!("mount target {:?} is in use", spec.target),
            });
        }
        Ok(())
    }

    fn set_mount_state(
        &mut self,
        seq: u64,
        system: &str,
        target: &str,
        state: MountState,
    ) -> Result<(), ApplyError> {
        let mount = self
            .system_mut(seq, system)?
            .mounts
            .get_mut(target)
            .ok_or_else(|| ApplyError::Unknown {
                sequence: seq,
                what: "mount",
                name: target.to_string(),
            })?;
        mount.state = state;
        Ok(())
    }

    fn device_mut(&mut self, seq: u64, id: &str) -> Result<&mut Device, ApplyError> {
        let device = self
            .devices
            .get_mut(id)
            .ok_or_else(|| ApplyError::Unknown {
                sequence: seq,
                what: "device",
                name: id.to_string(),
            })?;
        device.version = seq;
        Ok(device)
    }

    fn system_mut(&mut self, seq: u64, name: &str) -> Result<&mut System, ApplyError> {
        self.systems
            .get_mut(name)
            .ok_or_else(|| ApplyError::Unknown {
                sequence: seq,
                what: "system",
                name: name.to_string(),
            })
    }

    /// An operation by id: pending, or finished and still remembered.
    pub fn operation(&self, op: OperationId) -> Option<&Operation> {
        self.pending
            .get(&op)
            .or_else(|| self.finished.get(&op))
            .map(|operation| &**operation)
    }

    /// Finds a device by id or serial number.
    pub fn find_device(&self, id_or_serial: &str) -> Option<&Device> {
        self.devices
            .get(id_or_serial)
            .or_else(|| self.devices.values().find(|d| d.serial == id_or_serial))
    }

    /// The state's invariants; returns the first one broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check_devices()?;
        self.check_systems()?;
        self.check_operations()
    }

    fn check_devices(&self) -> Result<(), String> {
        for device in self.devices.values() {
            match (&device.holder, device.port) {
                (None, None) => {}
                (Some(holder), Some(port)) => {
                    let held = self
                        .systems
                        .get(holder)
                        .and_then(|s| s.devices.get(&device.id));
                    if held.map(|a| a.port) != Some(port) {
                        return Err(format!(
                            "device {} claims system {holder} port {port}, which disagrees",
                            device.id
                        ));
                    }
                    if self.ports.get(&port).and_then(|p| p.device.as_deref())
                        != Some(device.id.as_str())
                    {
                        return Err(format!(
                            "device {} claims port {port}, which does not hold it",
                            device.id
                        ));
                    }
                }
                _ => {
                    return Err(format!(
                        "device {} has a holder without a port or the reverse",
                        device.id
                    ))
                }
            }
        }
        for port in self.ports.values() {
            if let Some(id) = &port.device {
                if self.devices.get(id).and_then(|d| d.port) != Some(port.id) {
                    return Err(format!("port {} holds {id}, which is elsewhere", port.id));
                }
            }
        }
        Ok(())
    }

    fn check_systems(&self) -> Result<(), String> {
        for system in self.systems.values() {
            if !self.tenants.contains_key(&system.tenant) {
                return Err(format!(
                    "system {} belongs to unknown tenant {}",
                    system.name, system.tenant
                ));
            }
            for id in system.devices.keys() {
                if self.devices.get(id).and_then(|d| d.holder.as_deref())
                    != Some(system.name.as_str())
                {
                    return Err(format!(
                        "system {} lists {id}, which it does not hold",
                        system.name
                    ));
                }
            }
            for mount in system.mounts.values() {
                if let MountSource::Namespace { device, .. } = &mount.source {
                    let attached = system.devices.get(device).map(|a| a.state);
                    if attached.is_none() || attached == Some(AttachState::Attaching) {
                        return Err(format!(
                            "system {} mounts {} from {device}, which is not composed",
                            system.name, mount.target
                        ));
                    }
                }
            }
            if let Some(op) = system.pending {
                if self.pending.get(&op).map(|o| o.system.as_str()) != Some(system.name.as_str()) {
                    return Err(format!(
                        "system {} waits on operation {op}, which is not its pending one",
                        system.name
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_operations(&self) -> Result<(), String> {
        for op in self.pending.values() {
            if op.outcome.is_some() || self.finished.contains_key(&op.id) {
                return Err(format!("operation {} is pending and finished", op.id));
            }
            if self.systems.get(&op.system).and_then(|s| s.pending) != Some(op.id) {
                return Err(format!(
                    "operation {} is pending but its system does not wait on it",
                    op.id
                ));
            }
            if op.id >= self.next_operation {
                return Err(format!(
                    "operation {} is not below next_operation {}",
                    op.id, self.next_operation
                ));
            }
        }
        for (request, op) in &self.requests {
            if !self.pending.contains_key(op) && !self.finished.contains_key(op) {
                return Err(format!(
                    "request {request} points at forgotten operation {op}"
                ));
            }
        }
        Ok(())
    }
}

/// Converts pool facts (from the fabric) into event facts.
pub fn facts_of(device: &Device) -> DeviceFacts {
    DeviceFacts {
        id: device.id.clone(),
        kind: device.kind,
        class: device.class,
        vendor_id: device.vendor_id,
        device_id: device.device_id,
        serial: device.serial.clone(),
        model: device.model.clone(),
        firmware: device.firmware.clone(),
        capacity_bytes: device.capacity_bytes,
        rdma: device.rdma,
        switch: device.switch.clone(),
    }
}
