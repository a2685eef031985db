//! The appliance's State: a pure fold of its events. `apply` does no I/O; `check_invariants`
//! states what must hold after every event (checked in tests and, in debug builds, by the core).
//! Every change to a device goes through one helper that moves it in the free pool's index and
//! sets its version (the sequence of the event that changed it, its ETag) once.

use std::collections::BTreeMap;

use rkyv::{Archive, Deserialize as RkyvDeserialize, Serialize as RkyvSerialize};
use serde::{Deserialize, Serialize};

use super::access::{Account, AccountChange, AccountName, Reservation, Session, Subscription};
use super::alarm::{Alarm, Severity};
use super::directory::{DirectorySettings, DirectoryUserChange, DirectoryUserRecord};
use super::domain::{
    AttachState, Attachment, Device, Health, Identity, Mount, MountState, Port, Role, System,
    Tenant,
};
use super::drain::Drain;
use super::event::{DeviceFacts, Event, Made, MountSpec};
use super::ids::{AlarmId, DeviceId, OperationId, PortId, RequestId, SystemName, TenantName};
use super::network::ManagementNetwork;
use super::operation::{Operation, OperationKind, OrderKind, Outcome, Requested};
use super::pool::FreePool;

/// Finished operations remembered (for request-id replies and `show`); older ones are dropped.
pub const FINISHED_OPERATIONS_MAX: usize = 4096;
/// Request ids of orders that start no operation (create, delete, service) remembered; older
/// ones are forgotten.
pub const PLAIN_REQUESTS_MAX: usize = 4096;

/// Counters derived from events (the ones that survive a restart).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub struct Counters {
    pub operations_requested: u64,
    pub operations_completed: u64,
    pub operations_failed: u64,
    pub devices_vanished: u64,
    #[serde(default)]
    pub alarms_raised: u64,
}

/// The whole state of the appliance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub struct State {
    /// Sequence of the last applied event (0 = nothing applied).
    pub head: u64,
    pub identity: Identity,
    pub tenants: BTreeMap<TenantName, Tenant>,
    pub devices: BTreeMap<DeviceId, Device>,
    pub ports: BTreeMap<PortId, Port>,
    pub systems: BTreeMap<SystemName, System>,
    /// Operations without an outcome yet.
    pub pending: BTreeMap<OperationId, Box<Operation>>,
    /// The most recent finished operations (at most FINISHED_OPERATIONS_MAX).
    pub finished: BTreeMap<OperationId, Box<Operation>>,
    /// Request id -> what it was used for (operations pending or still remembered, and the
    /// newest PLAIN_REQUESTS_MAX other orders).
    pub requests: BTreeMap<RequestId, Requested>,
    /// The request ids of orders that start no operation, by the sequence that recorded them
    /// (oldest first, to forget the oldest).
    pub plain_requests: BTreeMap<u64, RequestId>,
    pub next_operation: OperationId,
    pub counters: Counters,
    #[serde(default)]
    pub accounts: BTreeMap<AccountName, Account>,
    /// Open sessions by id.
    #[serde(default)]
    pub sessions: BTreeMap<String, Session>,
    #[serde(default)]
    pub subscriptions: BTreeMap<String, Subscription>,
    /// Composition reservations by id.
    #[serde(default)]
    pub reservations: BTreeMap<String, Reservation>,
    /// Active alarms (an ended one is in the journal only).
    #[serde(default)]
    pub alarms: BTreeMap<AlarmId, Alarm>,
    #[serde(default)]
    pub next_alarm: AlarmId,
    /// Held devices being drained (out of service; their systems are being moved off them).
    #[serde(default)]
    pub drains: BTreeMap<DeviceId, Drain>,
    /// The management port's settings as the operator set them (None: the boot's defaults).
    #[serde(default)]
    pub management_network: Option<ManagementNetwork>,
    /// How the last setting was applied: the interface, or why it was not.
    #[serde(default)]
    pub management_applied: Option<Result<String, String>>,
    /// The studio's directory that logins fall back to, if one is set.
    #[serde(default)]
    pub directory: Option<DirectorySettings>,
    /// What is kept of directory users (lockouts, TOTP keys), by login name.
    #[serde(default)]
    pub directory_users: BTreeMap<AccountName, DirectoryUserRecord>,
    /// The free pool's index (derived from `devices` and `ports`; not part of the JSON form:
    /// [`State::reindex`] rebuilds it after deserializing one).
    #[serde(skip)]
    pub pool: FreePool,
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

fn unknown(sequence: u64, what: &'static str, name: impl ToString) -> ApplyError {
    ApplyError::Unknown {
        sequence,
        what,
        name: name.to_string(),
    }
}

fn conflict(sequence: u64, reason: String) -> ApplyError {
    ApplyError::Conflict { sequence, reason }
}

impl DeviceFacts {
    /// The facts State holds of a device.
    pub fn of(device: &Device) -> DeviceFacts {
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

    /// Rebuilds the free pool's index from the devices and ports (after deserializing a State).
    pub fn reindex(&mut self) {
        self.pool = FreePool::build(self.devices.values(), self.ports.values());
    }

    fn apply_inner(&mut self, seq: u64, event: Event) -> Result<(), ApplyError> {
        match event {
            Event::IdentitySet { identity, made } => {
                self.identity = identity;
                self.record_plain(seq, OrderKind::SetIdentity, made);
            }
            Event::TenantCreated { name, made } => {
                let tenant = Tenant {
                    name: name.clone(),
                    version: seq,
                };
                self.tenants.insert(name, tenant);
                self.record_plain(seq, OrderKind::CreateTenant, made);
            }
            Event::SystemCreated {
                name,
                tenant,
                role,
                made,
            } => {
                self.create_system(seq, name, tenant, role)?;
                self.record_plain(seq, OrderKind::CreateSystem, made);
            }
            Event::SystemDeleted { name, made } => {
                self.delete_system(seq, &name)?;
                self.record_plain(seq, OrderKind::DeleteSystem, made);
            }
            Event::PortDiscovered { port, switch, slot } => self.discover_port(port, switch, slot),
            Event::DeviceDiscovered { facts } => self.discover(seq, *facts)?,
            Event::DeviceVanished { device } => {
                self.change_device(seq, &device, |d| d.present = false)?;
                self.counters.devices_vanished += 1;
            }
            Event::HealthChanged { device, health } => {
                self.change_device(seq, &device, |d| d.health = health)?
            }
            Event::ServiceChanged {
                device,
                in_service,
                made,
                ..
            } => {
                self.change_device(seq, &device, |d| d.in_service = in_service)?;
                if in_service {
                    // Back in service: what is left of a drain of it is cancelled.
                    self.drains.remove(&device);
                }
                self.record_plain(seq, OrderKind::SetService, made);
            }
            Event::DrainRequested { devices, made, .. } => {
                for device in devices {
                    self.change_device(seq, &device, |d| d.in_service = false)?;
                    if self.devices[&device].holder.is_some() {
                        self.drains.insert(device, Drain::default());
                    }
                }
                self.record_plain(seq, OrderKind::Drain, made);
            }
            Event::ManagementNetworkSet { network, made } => {
                self.management_network = Some(network);
                self.management_applied = None;
                self.record_plain(seq, OrderKind::SetManagementNetwork, made);
            }
            Event::ManagementNetworkApplied {
                interface,
                network,
                error,
            } => {
                if self.management_network == Some(network) {
                    self.management_applied = Some(match error {
                        None => Ok(interface),
                        Some(error) => Err(error),
                    });
                }
            }
            Event::PowerRequested { made, .. } => {
                self.record_plain(seq, OrderKind::Power, made);
            }
            Event::DirectorySet { settings, made } => {
                self.set_directory(seq, settings.map(DirectorySettings::from), made);
            }
            Event::DirectoryConfigured { settings, made } => {
                self.set_directory(seq, settings, made);
            }
            Event::DirectoryUserChanged { name, change, made } => {
                let user = self.directory_users.entry(name.clone()).or_default();
                match change {
                    DirectoryUserChange::Locked { until_ms } => user.locked_until_ms = until_ms,
                    DirectoryUserChange::Totp(totp) => user.totp = totp,
                }
                if *user == DirectoryUserRecord::default() {
                    // Nothing left to keep of it.
                    self.directory_users.remove(&name);
                }
                self.record_plain(seq, OrderKind::ChangeDirectoryUser, made);
            }
            Event::AccountCreated { .. }
            | Event::AccountChanged { .. }
            | Event::AccountDeleted { .. }
            | Event::SessionOpened { .. }
            | Event::DirectorySessionOpened { .. }
            | Event::SessionClosed { .. }
            | Event::SubscriptionCreated { .. }
            | Event::SubscriptionDeleted { .. } => self.apply_access(seq, event)?,
            Event::ReservationMade { .. } | Event::ReservationEnded { .. } => {
                self.apply_reservation(seq, event)?
            }
            Event::AlarmRaised {
                alarm,
                device,
                severity,
                message,
                evidence,
                at_ms,
            } => {
                let system = self
                    .devices
                    .get(&device)
                    .ok_or_else(|| unknown(seq, "device", &device))?
                    .holder
                    .clone();
                let raised = Alarm {
                    id: alarm,
                    device,
                    system,
                    severity,
                    message,
                    evidence,
                    at_ms,
                    raised_at: seq,
                    failover: None,
                    failovers_failed: 0,
                };
                self.alarms.insert(alarm, raised);
                self.next_alarm = self.next_alarm.max(alarm.next());
                self.counters.alarms_raised += 1;
            }
            Event::AlarmEnded { alarm, made, .. } => {
                self.alarms
                    .remove(&alarm)
                    .ok_or_else(|| unknown(seq, "alarm", alarm))?;
                self.record_plain(seq, OrderKind::ClearAlarm, made);
            }
            Event::MountObserved {
                system,
                target,
                condition,
                ..
            } => {
                let system = self.system_mut(seq, &system)?;
                let mount = system
                    .mounts
                    .get_mut(&target)
                    .ok_or_else(|| unknown(seq, "mount", &target))?;
                mount.condition = Some(condition);
                system.version = seq;
            }
            other => return self.apply_operation(seq, other),
        }
        Ok(())
    }

    fn set_directory(&mut self, seq: u64, settings: Option<DirectorySettings>, made: Made) {
        self.directory = settings;
        if self.directory.is_none() {
            // Logins through the directory end with it.
            self.sessions.retain(|_, s| s.grant.is_none());
        }
        self.record_plain(seq, OrderKind::SetDirectory, made);
    }

    /// Accounts, sessions and subscriptions.
    fn apply_access(&mut self, seq: u64, event: Event) -> Result<(), ApplyError> {
        match event {
            Event::AccountCreated {
                name,
                role,
                tenant,
                password_hash,
                password_change_required,
                ..
            } => {
                let account = Account {
                    name: name.clone(),
                    role,
                    tenant,
                    password_hash,
                    enabled: true,
                    locked_until_ms: None,
                    password_change_required,
                    totp: None,
                    version: seq,
                };
                if self.accounts.insert(name.clone(), account).is_some() {
                    return Err(conflict(seq, format!("account {name} exists")));
                }
            }
            Event::AccountChanged { name, change, .. } => {
                let account = self
                    .accounts
                    .get_mut(&name)
                    .ok_or_else(|| unknown(seq, "account", &name))?;
                account.version = seq;
                match change {
                    AccountChange::Role(role) => account.role = role,
                    AccountChange::Password {
                        password,
                        change_required,
                    } => {
                        account.password_hash = password;
                        account.password_change_required = change_required;
                    }
                    AccountChange::PasswordChangeRequired(required) => {
                        account.password_change_required = required
                    }
                    AccountChange::Enabled(enabled) => account.enabled = enabled,
                    AccountChange::Locked { until_ms } => account.locked_until_ms = until_ms,
                    AccountChange::Totp(sealed) => account.totp = sealed,
                }
            }
            Event::AccountDeleted { name, .. } => {
                self.accounts
                    .remove(&name)
                    .ok_or_else(|| unknown(seq, "account", &name))?;
                self.sessions.retain(|_, s| s.account != name);
            }
            Event::SessionOpened {
                id,
                account,
                token_sha256,
                at_ms,
                ..
            } => {
                if !self.accounts.contains_key(&account) {
                    return Err(unknown(seq, "account", &account));
                }
                self.insert_session(
                    seq,
                    Session {
                        id,
                        account,
                        token_sha256,
                        created_ms: at_ms,
                        grant: None,
                    },
                )?;
            }
            Event::DirectorySessionOpened {
                id,
                account,
                token_sha256,
                at_ms,
                grant,
                ..
            } => self.insert_session(
                seq,
                Session {
                    id,
                    account,
                    token_sha256,
                    created_ms: at_ms,
                    grant: Some(grant),
                },
            )?,
            Event::SessionClosed { id, .. } => {
                self.sessions
                    .remove(&id)
                    .ok_or_else(|| unknown(seq, "session", &id))?;
            }
            Event::SubscriptionCreated { subscription, .. } => {
                let id = subscription.id.clone();
                if self
                    .subscriptions
                    .insert(id.clone(), *subscription)
                    .is_some()
                {
                    return Err(conflict(seq, format!("subscription {id} exists")));
                }
            }
            Event::SubscriptionDeleted { id, .. } => {
                self.subscriptions
                    .remove(&id)
                    .ok_or_else(|| unknown(seq, "subscription", &id))?;
            }
            other => return Err(conflict(seq, format!("not an access event: {other:?}"))),
        }
        Ok(())
    }

    fn insert_session(&mut self, seq: u64, session: Session) -> Result<(), ApplyError> {
        let id = session.id.clone();
        match self.sessions.insert(id.clone(), session) {
            Some(_) => Err(conflict(seq, format!("session {id} exists"))),
            None => Ok(()),
        }
    }

    /// Composition reservations: the devices held leave the free pool until it ends.
    fn apply_reservation(&mut self, seq: u64, event: Event) -> Result<(), ApplyError> {
        match event {
            Event::ReservationMade {
                id,
                devices,
                manifest,
                at_ms,
                expires_ms,
                made,
            } => {
                for device in &devices {
                    let free = self.devices.get(device).is_some_and(Device::is_available);
                    if !free {
                        return Err(conflict(seq, format!("{device} is not free to reserve")));
                    }
                    self.change_device(seq, device, |d| d.reservation = Some(id.clone()))?;
                }
                let reservation = Reservation {
                    id: id.clone(),
                    devices,
                    manifest,
                    client: made.by.account.clone().unwrap_or_default().into(),
                    created_ms: at_ms,
                    expires_ms,
                };
                if self.reservations.insert(id.clone(), reservation).is_some() {
                    return Err(conflict(seq, format!("reservation {id} exists")));
                }
            }
            Event::ReservationEnded { id, .. } => {
                let reservation = self
                    .reservations
                    .remove(&id)
                    .ok_or_else(|| unknown(seq, "reservation", &id))?;
                for device in &reservation.devices {
                    if self.devices.contains_key(device) {
                        self.change_device(seq, device, |d| d.reservation = None)?;
                    }
                }
            }
            other => return Err(conflict(seq, format!("not a reservation event: {other:?}"))),
        }
        Ok(())
    }

    fn apply_operation(&mut self, seq: u64, event: Event) -> Result<(), ApplyError> {
        if let Some(op) = event.outcome_of() {
            return self.finish(seq, op, event);
        }
        let (id, system, kind, made) = match event {
            Event::ComposeRequested {
                op,
                system,
                devices,
                made,
            } => (op, system, OperationKind::Compose { devices }, made),
            Event::DecomposeRequested {
                op,
                system,
                devices,
                made,
            } => (op, system, OperationKind::Decompose { devices }, made),
            Event::MountRequested {
                op,
                system,
                mount,
                made,
            } => (op, system, OperationKind::Mount { mount }, made),
            Event::UnmountRequested {
                op,
                system,
                target,
                made,
            } => (op, system, OperationKind::Unmount { target }, made),
            Event::FailoverRequested {
                op,
                system,
                from,
                to,
                port,
                made,
            } => (op, system, OperationKind::Failover { from, to, port }, made),
            other => return Err(conflict(seq, format!("unhandled event {other:?}"))),
        };
        let operation = Operation {
            id,
            system,
            kind,
            made,
            requested_at: seq,
            finished_at: None,
            outcome: None,
        };
        self.request(seq, operation)
    }

    /// Remembers the request id of an order that starts no operation; forgets the oldest such
    /// request id beyond PLAIN_REQUESTS_MAX.
    fn record_plain(&mut self, seq: u64, order: OrderKind, made: Made) {
        let Some(request_id) = made.request_id else {
            return;
        };
        let requested = Requested {
            order,
            op: None,
            sequence: seq,
        };
        self.requests.insert(request_id.clone(), requested);
        self.plain_requests.insert(seq, request_id);
        while self.plain_requests.len() > PLAIN_REQUESTS_MAX {
            let Some((_, old)) = self.plain_requests.pop_first() else {
                break;
            };
            self.requests.remove(&old);
        }
    }

    fn create_system(
        &mut self,
        seq: u64,
        name: SystemName,
        tenant: TenantName,
        role: Role,
    ) -> Result<(), ApplyError> {
        if !self.tenants.contains_key(&tenant) {
            return Err(unknown(seq, "tenant", tenant));
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
            return Err(conflict(seq, format!("system {name:?} exists")));
        }
        Ok(())
    }

    fn delete_system(&mut self, seq: u64, name: &str) -> Result<(), ApplyError> {
        let system = self.system_mut(seq, name)?;
        if !system.devices.is_empty() || system.pending.is_some() {
            return Err(conflict(
                seq,
                format!("system {name:?} still holds devices"),
            ));
        }
        self.systems.remove(name);
        Ok(())
    }

    fn discover_port(&mut self, id: PortId, switch: super::ids::SwitchName, slot: u32) {
        match self.ports.get_mut(&id) {
            Some(port) => {
                self.pool.remove_port(port);
                port.switch = switch;
                port.slot = slot;
                self.pool.add_port(port);
            }
            None => {
                let port = Port {
                    id,
                    switch,
                    slot,
                    device: None,
                };
                self.pool.add_port(&port);
                self.ports.insert(id, port);
            }
        }
    }

    fn discover(&mut self, seq: u64, facts: DeviceFacts) -> Result<(), ApplyError> {
        if !self.devices.contains_key(&facts.id) {
            let device = Device {
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
                switch: Default::default(),
                port: None,
                health: Health::Ok,
                in_service: true,
                present: false,
                holder: None,
                reservation: None,
                version: seq,
            };
            self.devices.insert(facts.id.clone(), device);
        }
        let id = facts.id.clone();
        self.change_device(seq, &id, move |device| {
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
        })
    }

    /// Records an intent: reserves devices and ports, marks the system busy.
    fn request(&mut self, seq: u64, operation: Operation) -> Result<(), ApplyError> {
        let system = self.system_mut(seq, &operation.system)?;
        if system.pending.is_some() {
            return Err(conflict(
                seq,
                format!("system {:?} is busy", operation.system),
            ));
        }
        system.pending = Some(operation.id);
        system.version = seq;
        let name = &operation.system;
        match &operation.kind {
            OperationKind::Compose { devices } => {
                for (device, port) in devices {
                    self.reserve(seq, name, device, *port)?;
                }
            }
            OperationKind::Decompose { devices } => {
                for device in devices {
                    self.set_attach_state(seq, name, device, AttachState::Detaching)?;
                }
            }
            OperationKind::Mount { mount } => self.start_mount(seq, name, mount)?,
            OperationKind::Unmount { target } => {
                self.set_mount_state(seq, name, target, MountState::Unmounting)?
            }
            OperationKind::Failover { from, to, port } => {
                self.set_attach_state(seq, name, from, AttachState::Detaching)?;
                self.reserve(seq, name, to, *port)?;
                // The failover answers every active alarm of the old device (the newest
                // failover, if an operator's retry made another).
                for alarm in self.alarms.values_mut() {
                    if alarm.device == *from {
                        alarm.failover = Some(operation.id);
                    }
                }
            }
        }
        if let Some(request_id) = &operation.made.request_id {
            let requested = Requested {
                order: operation.kind.order(),
                op: Some(operation.id),
                sequence: seq,
            };
            self.requests.insert(request_id.clone(), requested);
        }
        self.next_operation = self.next_operation.max(operation.id.next());
        self.counters.operations_requested += 1;
        self.pending.insert(operation.id, Box::new(operation));
        Ok(())
    }

    /// Records an outcome: commits or rolls back what the intent reserved.
    fn finish(&mut self, seq: u64, op: OperationId, event: Event) -> Result<(), ApplyError> {
        let mut operation = self
            .pending
            .remove(&op)
            .ok_or_else(|| unknown(seq, "pending operation", op))?;
        let outcome = match event {
            Event::ComposeFailed { failure, .. }
            | Event::DecomposeFailed { failure, .. }
            | Event::MountFailed { failure, .. }
            | Event::UnmountFailed { failure, .. }
            | Event::FailoverFailed { failure, .. } => Outcome::Failed(failure),
            _ => Outcome::Completed,
        };
        self.conclude(seq, &operation, &outcome)?;
        if let (OperationKind::Failover { from, .. }, Outcome::Failed(_)) =
            (&operation.kind, &outcome)
        {
            for alarm in self.alarms.values_mut() {
                if alarm.failover == Some(op) {
                    alarm.failovers_failed += 1;
                }
            }
            if let Some(drain) = self.drains.get_mut(from) {
                drain.failovers_failed += 1;
            }
        }
        let system = self.system_mut(seq, &operation.system)?;
        system.pending = None;
        system.version = seq;
        system.last_failure = match &outcome {
            Outcome::Failed(failure) => {
                Some(format!("{} failed: {failure}", operation.kind.name()))
            }
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
                if ok {
                    // The mounts on the old device move with the failover.
                    for mount in self.system_mut(seq, system)?.mounts.values_mut() {
                        mount.source.replace(from, to);
                    }
                }
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
            if let Some(request_id) = &old.made.request_id {
                self.requests.remove(request_id);
            }
        }
    }

    fn reserve(
        &mut self,
        seq: u64,
        system: &SystemName,
        device_id: &DeviceId,
        port_id: PortId,
    ) -> Result<(), ApplyError> {
        let device = self
            .devices
            .get(device_id)
            .ok_or_else(|| unknown(seq, "device", device_id))?;
        if device.holder.is_some() {
            return Err(conflict(
                seq,
                format!("device {device_id:?} is already held"),
            ));
        }
        let port = self
            .ports
            .get(&port_id)
            .ok_or_else(|| unknown(seq, "port", port_id))?;
        if port.device.is_some() {
            return Err(conflict(seq, format!("port {port_id} is already used")));
        }
        self.change_device(seq, device_id, |d| {
            d.holder = Some(system.clone());
            d.port = Some(port_id);
        })?;
        self.change_port(port_id, |p| p.device = Some(device_id.clone()));
        let attachment = Attachment {
            port: port_id,
            state: AttachState::Attaching,
        };
        self.system_mut(seq, system)?
            .devices
            .insert(device_id.clone(), attachment);
        Ok(())
    }

    fn release(&mut self, seq: u64, system: &str, device_id: &DeviceId) -> Result<(), ApplyError> {
        let attachment = self
            .system_mut(seq, system)?
            .devices
            .remove(device_id)
            .ok_or_else(|| unknown(seq, "device of the system", device_id))?;
        self.change_port(attachment.port, |p| p.device = None);
        // A drained device is drained once its system no longer holds it.
        self.drains.remove(device_id);
        self.change_device(seq, device_id, |d| {
            d.holder = None;
            d.port = None;
        })
    }

    fn set_attach_state(
        &mut self,
        seq: u64,
        system: &str,
        device_id: &DeviceId,
        state: AttachState,
    ) -> Result<(), ApplyError> {
        let attachment = self
            .system_mut(seq, system)?
            .devices
            .get_mut(device_id)
            .ok_or_else(|| unknown(seq, "device of the system", device_id))?;
        attachment.state = state;
        // The device's own record did not change, but what it shows (attaching, attached) did.
        self.change_device(seq, device_id, |_| {})
    }

    fn start_mount(&mut self, seq: u64, system: &str, spec: &MountSpec) -> Result<(), ApplyError> {
        let mount = Mount {
            source: spec.source.clone(),
            target: spec.target.clone(),
            filesystem: spec.filesystem.clone(),
            options: spec.options.clone(),
            state: MountState::Mounting,
            condition: None,
        };
        let system = self.system_mut(seq, system)?;
        if system.mounts.insert(spec.target.clone(), mount).is_some() {
            return Err(conflict(
                seq,
                format!("mount target {:?} is in use", spec.target),
            ));
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
            .ok_or_else(|| unknown(seq, "mount", target))?;
        mount.state = state;
        Ok(())
    }

    /// The one way a device changes: out of the free pool's index, changed, its version set to
    /// `seq`, back into the index if it is free.
    fn change_device(
        &mut self,
        seq: u64,
        id: &str,
        change: impl FnOnce(&mut Device),
    ) -> Result<(), ApplyError> {
        let device = self
            .devices
            .get_mut(id)
            .ok_or_else(|| unknown(seq, "device", id))?;
        self.pool.remove_device(device);
        change(device);
        device.version = seq;
        self.pool.add_device(device);
        Ok(())
    }

    /// The one way a port changes (ports have no version); a port State does not know is left
    /// alone (a release after the port was lost from the inventory).
    fn change_port(&mut self, id: PortId, change: impl FnOnce(&mut Port)) {
        if let Some(port) = self.ports.get_mut(&id) {
            self.pool.remove_port(port);
            change(port);
            self.pool.add_port(port);
        }
    }

    fn system_mut(&mut self, seq: u64, name: &str) -> Result<&mut System, ApplyError> {
        self.systems
            .get_mut(name)
            .ok_or_else(|| unknown(seq, "system", name))
    }

    /// The active alarms of `device`, oldest first.
    pub fn alarms_of<'a>(&'a self, device: &'a DeviceId) -> impl Iterator<Item = &'a Alarm> + 'a {
        self.alarms
            .values()
            .filter(move |alarm| alarm.device == *device)
    }

    /// How many alarms of `severity` are active.
    pub fn alarm_count(&self, severity: Severity) -> usize {
        let of = self
            .alarms
            .values()
            .filter(|alarm| alarm.severity == severity);
        of.count()
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
        self.check_operations()?;
        self.check_alarms()?;
        self.check_drains()?;
        self.check_pool()
    }

    fn check_drains(&self) -> Result<(), String> {
        for id in self.drains.keys() {
            match self.devices.get(id) {
                Some(device) if device.holder.is_some() && !device.in_service => {}
                _ => {
                    return Err(format!(
                        "device {id} is draining but not held and out of service"
                    ))
                }
            }
        }
        Ok(())
    }

    fn check_alarms(&self) -> Result<(), String> {
        for (id, alarm) in &self.alarms {
            if *id != alarm.id || *id >= self.next_alarm {
                return Err(format!(
                    "alarm {id} is filed wrong (next {})",
                    self.next_alarm
                ));
            }
            if !self.devices.contains_key(&alarm.device) {
                return Err(format!("alarm {id} names unknown device {}", alarm.device));
            }
            if alarm.failover.is_some_and(|op| op >= self.next_operation) {
                return Err(format!("alarm {id} names a failover not requested yet"));
            }
        }
        Ok(())
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
                    if self.ports.get(&port).and_then(|p| p.device.as_ref()) != Some(&device.id) {
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
                if self.devices.get(id).and_then(|d| d.holder.as_ref()) != Some(&system.name) {
                    return Err(format!(
                        "system {} lists {id}, which it does not hold",
                        system.name
                    ));
                }
            }
            for mount in system.mounts.values() {
                for device in mount.source.devices() {
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
                if self.pending.get(&op).map(|o| &o.system) != Some(&system.name) {
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
        for (request, requested) in &self.requests {
            let known = match requested.op {
                Some(op) => self.pending.contains_key(&op) || self.finished.contains_key(&op),
                None => self.plain_requests.get(&requested.sequence) == Some(request),
            };
            if !known {
                return Err(format!(
                    "request {request} points at a forgotten order ({requested:?})"
                ));
            }
        }
        Ok(())
    }

    fn check_pool(&self) -> Result<(), String> {
        if self.pool != FreePool::build(self.devices.values(), self.ports.values()) {
            return Err("the free pool's index differs from a rebuild".into());
        }
        Ok(())
    }
}
