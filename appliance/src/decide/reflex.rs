//! The appliance's reflex: what it does on its own when a composed device has failed. Pure:
//! State and the failover policy in, the orders to give out. The host monitor
//! (`runtime::monitor`) gives them as the appliance's own orders, so they are checked by
//! `decide` like any order, journaled with the appliance as their maker, and carried out (and
//! resumed after a crash) by the reconciler.
//!
//! The rule: a device whose health is Failed, with an active critical alarm (one an operator
//! cleared asks for nothing more), held by a system with no operation in flight, whose policy
//! (by the system's role and the device's kind) allows it, fails its system over to a
//! replacement (`placement::replacement`: a healthy free device of the same kind and at least
//! the capacity, of the same model first, then on the same switch, then the best fit). The
//! failover takes the old device out of service in the same durable batch (`decide`), and the
//! alarm records it, so a second detection of the same fault does nothing
//! while it runs and nothing once the system no longer holds the device. A failover that
//! cannot be decided (no spare yet) journals nothing and is tried again at the next sweep, so a
//! spare an operator adds or frees is taken at once; one that was decided and then failed
//! (the spare would not bind) is retried until the policy's attempts are spent, and then the
//! alarm waits for an operator. A busy system waits: the monitor looks again when its
//! operation has ended.
//!
//! A device that is only Degraded (a link down) is not failed over: the monitor escalates it to
//! Failed when it stays degraded past the policy's grace period (`escalations`).
//!
//! A device an operator drains (`model::drain`) is moved off the same way, whatever the policy
//! says of automatic failover (the drain is an order), until its system no longer holds it; a
//! drain's failovers that fail are retried up to the policy's attempts, like an alarm's.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::decide::command::Verb;
use crate::model::{
    AlarmId, DeviceId, DeviceKind, Health, OperationId, Role, Severity, State, SystemName,
};

/// What the reflex does about one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reflex {
    /// Fail `system` over from `device` to a replacement.
    FailOver {
        system: SystemName,
        device: DeviceId,
        cause: Cause,
    },
    /// `system` has `op` in flight; look again when it has ended.
    Wait { system: SystemName, op: OperationId },
}

/// What asks the reflex to move a system off a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// An active critical alarm of the device.
    Alarm(AlarmId),
    /// An operator's drain of the device or its switch.
    Drain,
}

impl Reflex {
    /// The order to give first.
    pub fn order(&self) -> Option<Verb> {
        match self {
            Reflex::FailOver { system, device, .. } => Some(Verb::Failover {
                system: system.clone(),
                device: device.clone(),
            }),
            Reflex::Wait { .. } => None,
        }
    }
}

/// One rule of the failover policy: for systems of `role` (any when None) and devices of `kind`
/// (any when None).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub kind: Option<DeviceKind>,
    /// Whether a failed device is failed over automatically.
    #[serde(default = "yes")]
    pub failover: bool,
    /// How long a link may stay down (the device Degraded) before the device counts as failed.
    #[serde(default = "default_link_grace_ms")]
    pub link_grace_ms: u64,
    /// Failovers of one fault that may fail (the spare would not attach or bind) before the
    /// reflex gives up and leaves the alarm to an operator.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
}

fn default_attempts() -> u32 {
    3
}

fn yes() -> bool {
    true
}

fn default_link_grace_ms() -> u64 {
    LINK_GRACE_DEFAULT.as_millis() as u64
}

/// The default grace of a link that went down: long enough for a switch port to renegotiate or
/// a cable to be reseated, short enough for an artist to notice nothing more than a stall.
pub const LINK_GRACE_DEFAULT: Duration = Duration::from_secs(3);

/// The failover policy: the first rule that matches a (role, kind) decides; with none, fail
/// over, with the default grace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
}

impl Policy {
    /// Reads a policy file's TOML (`[[rule]]` tables).
    pub fn parse(text: &str) -> Result<Policy, toml::de::Error> {
        toml::from_str(text)
    }

    /// The rule for a device of `kind` held by a system of `role` (`None`: held by no system).
    pub fn rule(&self, role: Option<Role>, kind: DeviceKind) -> Rule {
        let matches = |rule: &&Rule| {
            rule.kind.is_none_or(|k| k == kind) && rule.role.is_none_or(|r| Some(r) == role)
        };
        self.rules.iter().find(matches).cloned().unwrap_or(Rule {
            role,
            kind: Some(kind),
            failover: true,
            link_grace_ms: default_link_grace_ms(),
            attempts: default_attempts(),
        })
    }
}

/// The reflex for `device`, if any.
pub fn reflex(state: &State, policy: &Policy, device: &DeviceId) -> Option<Reflex> {
    let found = state.devices.get(device)?;
    let system = state.systems.get(found.holder.as_ref()?)?;
    if !system.devices.contains_key(device) {
        // Held for a compose that has not attached it yet: the compose's own outcome decides.
        return None;
    }
    let rule = policy.rule(Some(system.role), found.kind);
    // The reflex answers an alarm (one an operator cleared asks for nothing) or a drain.
    let failed = matches!(found.health, Health::Failed(_));
    let alarm = (state.alarms_of(device))
        .find(|a| a.severity == Severity::Critical)
        .filter(|a| failed && rule.failover && a.failovers_failed < rule.attempts);
    let cause = match (alarm, state.drains.get(device)) {
        (Some(alarm), _) => Cause::Alarm(alarm.id),
        (None, Some(drain)) if drain.failovers_failed < rule.attempts => Cause::Drain,
        _ => return None,
    };
    if let Some(op) = system.pending {
        return Some(Reflex::Wait {
            system: system.name.clone(),
            op,
        });
    }
    Some(Reflex::FailOver {
        system: system.name.clone(),
        device: device.clone(),
        cause,
    })
}

/// Every device the reflex has something to do about, in device order: the failed ones, and the
/// draining ones. A system gets one failover at a time (its first device's); its others wait
/// for the next sweep.
pub fn sweep(state: &State, policy: &Policy) -> Vec<Reflex> {
    let failed = (state.alarms.values())
        .filter(|a| a.severity == Severity::Critical)
        .map(|a| &a.device);
    let asked: BTreeSet<&DeviceId> = failed.chain(state.drains.keys()).collect();
    let mut moving = BTreeSet::new();
    (asked.into_iter())
        .filter_map(|device| reflex(state, policy, device))
        .filter(|reflex| match reflex {
            Reflex::FailOver { system, .. } => moving.insert(system.clone()),
            Reflex::Wait { .. } => true,
        })
        .collect()
}

/// The devices degraded past their grace at `now_ms`, with their new health: a Warning alarm
/// raised at `at_ms` whose device is still degraded for the same reason.
pub fn escalations(state: &State, policy: &Policy, now_ms: u64) -> Vec<(DeviceId, Health)> {
    state
        .alarms
        .values()
        .filter(|alarm| alarm.severity == Severity::Warning)
        .filter_map(|alarm| {
            let device = state.devices.get(&alarm.device)?;
            let Health::Degraded(why) = &device.health else {
                return None;
            };
            let role = device
                .holder
                .as_ref()
                .and_then(|h| state.systems.get(h))
                .map(|s| s.role);
            let grace = policy.rule(role, device.kind).link_grace_ms;
            let past = now_ms.saturating_sub(alarm.at_ms) >= grace;
            (past && *why == alarm.message).then(|| {
                let failed = format!("{why} for more than {grace} ms");
                (device.id.clone(), Health::Failed(failed))
            })
        })
        .collect()
}
