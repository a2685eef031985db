//! Alarms and the reflex's policy, through the pure `decide` and `State::apply`: a fault raises
//! one alarm with its evidence, the same fault seen again raises none, recovery ends it; a
//! failover answers it and takes the device out of service in the same batch; a cleared alarm
//! asks the reflex for nothing; a refused failover is tried again, a failed one until the
//! policy's attempts are spent; a link down is a warning until its grace has passed; the policy
//! can keep a role's devices from failing over. Drains: a drained device leaves service and its
//! system is moved off it by the reflex, one failover per system at a time, a switch's devices
//! onto another switch's; a drain with no replacement outside it is refused; putting a device
//! back in service ends its drain.

use appliance::decide::command::CommandError;
use appliance::decide::command::{
    decide, Command, Decision, NewSystem, Observation, Selection, Verb,
};
use appliance::decide::reflex::{self, Cause, Policy, Reflex};
use appliance::model::{
    AlarmEnd, DeviceFacts, DeviceId, DeviceKind, DrainScope, Event, Health, Origin, Role, Severity,
    State, SystemName,
};

/// Decides `command` and applies its events; returns them.
fn run(state: &mut State, command: Command) -> Vec<Event> {
    let events = match decide(state, &command).expect("accepted") {
        Decision::Events { events, .. } => events,
        Decision::Repeat { .. } => Vec::new(),
    };
    for event in &events {
        let sequence = state.head + 1;
        state.apply(sequence, event).expect("applies");
    }
    assert_eq!(state.check_invariants(), Ok(()));
    events
}

fn nvme(id: &str, switch: &str) -> DeviceFacts {
    DeviceFacts {
        id: id.into(),
        kind: DeviceKind::Nvme,
        class: 0x010802,
        vendor_id: 0x1b36,
        device_id: 0x0010,
        serial: format!("SN-{id}"),
        model: "QEMU NVMe Ctrl".into(),
        firmware: "1.0".into(),
        capacity_bytes: 1 << 40,
        rdma: false,
        switch: switch.into(),
    }
}

/// Behind each `(switch, n)`, n ports and n NVMe drives (nvme-0, nvme-1, ... across them all),
/// and the tenant "studio".
fn fabric(switches: &[(&str, u16)]) -> State {
    let mut state = State::default();
    let mut next = 0u16;
    for (switch, n) in switches {
        for _ in 0..*n {
            let observed = Observation::Port {
                port: next.into(),
                switch: (*switch).into(),
                slot: u32::from(next) + 1,
            };
            run(&mut state, Command::Observe(observed));
            let facts = nvme(&format!("nvme-{next}"), switch);
            run(&mut state, Command::Observe(Observation::Device { facts }));
            next += 1;
        }
    }
    run(
        &mut state,
        Command::appliance(Verb::CreateTenant {
            name: "studio".into(),
        }),
    );
    state
}

/// Composes `devices` into a new system `name` of `role` and finishes the compose.
fn compose(state: &mut State, name: &str, role: Role, devices: &[&str]) {
    let compose = Verb::Compose {
        system: name.into(),
        selection: Selection::Specific(devices.iter().map(|&d| d.into()).collect()),
        create: Some(NewSystem {
            tenant: "studio".into(),
            role,
        }),
        tenant: None,
        reservation: None,
    };
    run(state, Command::appliance(compose));
    finish_pending(state);
}

/// Three NVMe drives and three ports; `rn1` (of `role`) composed with nvme-0.
fn bench(role: Role) -> State {
    let mut state = fabric(&[("sw0", 3)]);
    compose(&mut state, "rn1", role, &["nvme-0"]);
    state
}

fn finish_pending(state: &mut State) {
    let ops: Vec<_> = state.pending.keys().copied().collect();
    for op in ops {
        run(state, Command::Finish { op, result: Ok(()) });
    }
}

fn health(device: &str, health: Health, at_ms: u64) -> Command {
    Command::Observe(Observation::Health {
        device: device.into(),
        health,
        evidence: format!("test evidence for {device}"),
        at_ms,
    })
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind_name()).collect()
}

#[test]
fn a_fault_raises_one_alarm_and_recovery_ends_it() {
    let mut state = bench(Role::RenderNode);
    let smart = || Health::Failed("NVMe SMART critical warning 0x04".into());
    let events = run(&mut state, health("nvme-1", smart(), 10));
    assert_eq!(kinds(&events), ["health_changed", "alarm_raised"]);
    let alarm = state.alarms.values().next().expect("an alarm").clone();
    assert_eq!(
        (
            alarm.device.as_str(),
            alarm.severity,
            alarm.at_ms,
            alarm.system
        ),
        ("nvme-1", Severity::Critical, 10, None)
    );
    assert_eq!(alarm.evidence, "test evidence for nvme-1");
    // The same fault seen again changes nothing and raises nothing.
    assert_eq!(run(&mut state, health("nvme-1", smart(), 20)), vec![]);
    assert_eq!(state.alarms.len(), 1);
    // Healthy again: the alarm ends, recovered.
    let events = run(&mut state, health("nvme-1", Health::Ok, 30));
    assert_eq!(kinds(&events), ["health_changed", "alarm_ended"]);
    assert!(matches!(
        events[1],
        Event::AlarmEnded {
            end: AlarmEnd::Recovered,
            ..
        }
    ));
    assert!(state.alarms.is_empty());
    assert_eq!(state.counters.alarms_raised, 1);
}

#[test]
fn the_reflex_answers_the_alarm_and_the_failover_takes_the_device_out_of_service() {
    let mut state = bench(Role::RenderNode);
    let policy = Policy::default();
    run(
        &mut state,
        health("nvme-0", Health::Failed("removed".into()), 5),
    );
    let alarm = *state.alarms.keys().next().expect("an alarm");
    assert_eq!(
        state.alarms[&alarm].system.as_ref().map(|s| s.as_str()),
        Some("rn1")
    );
    let reflexes = reflex::sweep(&state, &policy);
    assert_eq!(
        reflexes,
        [Reflex::FailOver {
            system: "rn1".into(),
            device: "nvme-0".into(),
            cause: Cause::Alarm(alarm),
        }]
    );
    let order = reflexes[0].order().expect("a failover");
    let events = run(&mut state, Command::appliance(order));
    assert_eq!(kinds(&events), ["failover_requested", "service_changed"]);
    assert!(!state.devices["nvme-0"].in_service);
    let op = events[0].intent_of().expect("an operation");
    assert_eq!(state.alarms[&alarm].failover, Some(op));
    // While the failover runs the reflex waits for it; after it, it has nothing more to do.
    assert_eq!(
        reflex::sweep(&state, &policy),
        [Reflex::Wait {
            system: "rn1".into(),
            op
        }]
    );
    finish_pending(&mut state);
    assert_eq!(reflex::sweep(&state, &policy), vec![]);
    let holds: Vec<&DeviceId> = state.systems["rn1"].devices.keys().collect();
    assert_eq!(holds.len(), 1);
    assert_ne!(holds[0].as_str(), "nvme-0");
    assert_eq!(state.alarms.len(), 1, "the alarm stands for the operator");
}

#[test]
fn a_cleared_alarm_asks_for_nothing() {
    let mut state = bench(Role::RenderNode);
    run(
        &mut state,
        health("nvme-0", Health::Failed("removed".into()), 5),
    );
    let alarm = *state.alarms.keys().next().expect("an alarm");
    run(&mut state, Command::appliance(Verb::ClearAlarm { alarm }));
    assert!(state.alarms.is_empty());
    assert_eq!(reflex::sweep(&state, &Policy::default()), vec![]);
    let refused = decide(&state, &Command::appliance(Verb::ClearAlarm { alarm }));
    assert!(refused.is_err(), "{refused:?}");
}

#[test]
fn a_repaired_device_is_healthy_and_composable_again_with_its_alarms_cleared() {
    let mut state = bench(Role::RenderNode);
    run(
        &mut state,
        health(
            "nvme-1",
            Health::Failed("PCIe uncorrectable non-fatal errors (AER)".into()),
            5,
        ),
    );
    let service = |in_service, repaired| {
        Command::appliance(Verb::SetService {
            device: "nvme-1".into(),
            in_service,
            reason: "drive swapped".into(),
            repaired,
        })
    };
    run(&mut state, service(false, false));
    let contradiction = decide(&state, &service(false, true));
    assert!(
        matches!(contradiction, Err(CommandError::BadOrder { .. })),
        "{contradiction:?}"
    );
    // Back in service only: still failed, its alarm stands.
    run(&mut state, service(true, false));
    assert!(!state.devices[&DeviceId::from("nvme-1")].health.is_ok());
    assert_eq!(state.alarms.len(), 1);
    let events = run(&mut state, service(true, true));
    assert_eq!(
        kinds(&events),
        ["health_changed", "alarm_ended", "service_changed"]
    );
    let device = &state.devices[&DeviceId::from("nvme-1")];
    assert!(device.health.is_ok() && device.in_service, "{device:?}");
    assert!(state.alarms.is_empty());
    // Repaired twice is once; and the drive composes.
    assert!(run(&mut state, service(true, true)).is_empty());
    compose(&mut state, "rn2", Role::RenderNode, &["nvme-1"]);
}

#[test]
fn a_refused_failover_is_tried_again_and_a_failed_one_until_the_attempts_are_spent() {
    let mut state = bench(Role::RenderNode);
    let policy = Policy::default();
    // No spare: the two free drives are out of service.
    let withhold = |device: &str, in_service| {
        Command::appliance(Verb::SetService {
            device: device.into(),
            in_service,
            reason: "spare withheld".into(),
            repaired: false,
        })
    };
    for id in ["nvme-1", "nvme-2"] {
        run(&mut state, withhold(id, false));
    }
    run(
        &mut state,
        health("nvme-0", Health::Failed("removed".into()), 5),
    );
    let reflex = reflex::sweep(&state, &policy).remove(0);
    let order = Command::appliance(reflex.order().expect("order"));
    assert!(
        decide(&state, &order).is_err(),
        "no spare: refused, nothing journaled"
    );
    // The next sweep asks again, and takes the spare an operator returns.
    assert_eq!(reflex::sweep(&state, &policy), vec![reflex.clone()]);
    run(&mut state, withhold("nvme-1", true));
    let events = run(&mut state, order.clone());
    assert_eq!(kinds(&events), ["failover_requested", "service_changed"]);
    let alarm = *state.alarms.keys().next().expect("the alarm");
    // The spare would not bind: the failover fails and is retried, twice more at the most.
    let fail = |state: &mut State| {
        let op = *state.pending.keys().next().expect("the failover");
        let failure = appliance::model::Failure::Unclassified {
            reason: "the spare would not bind".into(),
        };
        run(
            state,
            Command::Finish {
                op,
                result: Err(failure),
            },
        );
    };
    fail(&mut state);
    assert_eq!(state.alarms[&alarm].failovers_failed, 1);
    for attempt in 2..=3 {
        let again = reflex::sweep(&state, &policy);
        assert_eq!(again.len(), 1, "attempt {attempt}: {again:?}");
        let events = run(
            &mut state,
            Command::appliance(again[0].order().expect("order")),
        );
        assert_eq!(
            kinds(&events),
            ["failover_requested"],
            "already out of service"
        );
        fail(&mut state);
    }
    assert_eq!(state.alarms[&alarm].failovers_failed, 3);
    assert_eq!(
        reflex::sweep(&state, &policy),
        vec![],
        "three failed: left to an operator"
    );
    let patient = Policy::parse("[[rule]]\nattempts = 5\n").expect("policy");
    assert_eq!(reflex::sweep(&state, &patient).len(), 1);
}

#[test]
fn a_link_down_is_a_warning_until_its_grace_has_passed() {
    let mut state = bench(Role::RenderNode);
    let policy = Policy::parse("[[rule]]\nkind = \"nvme\"\nlink_grace_ms = 500\n").expect("policy");
    run(
        &mut state,
        health("nvme-0", Health::Degraded("link down".into()), 1_000),
    );
    assert_eq!(
        state.alarms.values().next().map(|a| a.severity),
        Some(Severity::Warning)
    );
    assert_eq!(
        reflex::sweep(&state, &policy),
        vec![],
        "a warning fails nothing over"
    );
    assert_eq!(
        reflex::escalations(&state, &policy, 1_400),
        vec![],
        "inside the grace"
    );
    let escalated = reflex::escalations(&state, &policy, 1_500);
    assert_eq!(escalated.len(), 1, "{escalated:?}");
    let (device, failed) = escalated[0].clone();
    assert_eq!(
        failed,
        Health::Failed("link down for more than 500 ms".into())
    );
    run(&mut state, health(device.as_str(), failed, 1_500));
    assert_eq!(reflex::sweep(&state, &policy).len(), 1);
    // Up again before it is failed over: both alarms end.
    let events = run(&mut state, health("nvme-0", Health::Ok, 1_600));
    assert_eq!(
        kinds(&events),
        ["health_changed", "alarm_ended", "alarm_ended"]
    );
    // A flap inside the grace: down, up, down again starts the grace anew.
    run(
        &mut state,
        health("nvme-0", Health::Degraded("link down".into()), 2_000),
    );
    run(&mut state, health("nvme-0", Health::Ok, 2_100));
    run(
        &mut state,
        health("nvme-0", Health::Degraded("link down".into()), 2_200),
    );
    assert_eq!(reflex::escalations(&state, &policy, 2_600), vec![]);
    assert_eq!(reflex::escalations(&state, &policy, 2_700).len(), 1);
}

#[test]
fn the_policy_can_keep_a_role_from_failing_over() {
    let text = "[[rule]]\nrole = \"nas_gateway\"\nkind = \"nvme\"\nfailover = false\n";
    let policy = Policy::parse(text).expect("policy");
    let mut state = bench(Role::NasGateway);
    run(
        &mut state,
        health("nvme-0", Health::Failed("removed".into()), 5),
    );
    assert_eq!(reflex::sweep(&state, &policy), vec![]);
    assert_eq!(reflex::sweep(&state, &Policy::default()).len(), 1);
    let rule = policy.rule(Some(Role::RenderNode), DeviceKind::Nvme);
    assert!(rule.failover, "other roles keep the default: {rule:?}");
    let bad = Policy::parse("[[rule]]\nkind = \"floppy\"\n").expect_err("an unknown kind");
    assert!(bad.to_string().contains("floppy"), "{bad}");
    let typo = Policy::parse("[[rule]]\nfailovr = false\n").expect_err("an unknown key");
    assert!(typo.to_string().contains("failovr"), "{typo}");
}

fn drain(scope: DrainScope) -> Command {
    Command::appliance(Verb::Drain {
        scope,
        reason: "firmware update".into(),
    })
}

/// Gives the reflex's orders until it has nothing more to do, finishing every operation; returns
/// the failovers it made, as (system, from, to).
fn drain_out(state: &mut State, policy: &Policy) -> Vec<(SystemName, DeviceId, DeviceId)> {
    let mut moves = Vec::new();
    for _ in 0..20 {
        let reflexes = reflex::sweep(state, policy);
        if reflexes.is_empty() {
            return moves;
        }
        let systems: Vec<&SystemName> = reflexes
            .iter()
            .filter_map(|r| match r {
                Reflex::FailOver { system, cause, .. } => {
                    assert_eq!(*cause, Cause::Drain);
                    Some(system)
                }
                Reflex::Wait { .. } => None,
            })
            .collect();
        let mut unique = systems.clone();
        unique.dedup();
        assert_eq!(systems, unique, "one failover per system at a time");
        for reflex in reflexes {
            let Some(order) = reflex.order() else {
                continue;
            };
            for event in run(state, Command::appliance(order)) {
                if let Event::FailoverRequested {
                    system, from, to, ..
                } = event
                {
                    moves.push((system, from, to));
                }
            }
        }
        finish_pending(state);
    }
    panic!("the drain did not end: {:?}", state.drains);
}

#[test]
fn a_drained_device_leaves_service_and_its_system_is_moved_off_it() {
    let mut state = bench(Role::RenderNode);
    let policy = Policy::default();
    let events = run(&mut state, drain(DrainScope::Device("nvme-0".into())));
    assert_eq!(kinds(&events), ["drain_requested"]);
    assert!(!state.devices["nvme-0"].in_service);
    assert!(state.drains.contains_key("nvme-0"));
    assert_eq!(
        reflex::sweep(&state, &policy),
        [Reflex::FailOver {
            system: "rn1".into(),
            device: "nvme-0".into(),
            cause: Cause::Drain,
        }]
    );
    // The drain is the operator's order: a policy without automatic failover still moves it.
    let manual = Policy::parse("[[rule]]\nfailover = false\n").expect("policy");
    let moves = drain_out(&mut state, &manual);
    assert_eq!(
        moves,
        [("rn1".into(), "nvme-0".into(), "nvme-1".into())],
        "already out of service: the failover takes it out no further"
    );
    assert!(state.drains.is_empty(), "drained: rn1 no longer holds it");
    assert_eq!(state.devices["nvme-0"].holder, None);
    assert!(!state.devices["nvme-0"].in_service, "out until returned");
    assert!(state.systems["rn1"].devices.contains_key("nvme-1"));
    // Drained again: nothing to do, nothing journaled.
    let again = decide(&state, &drain(DrainScope::Device("nvme-0".into())));
    assert_eq!(
        again,
        Ok(Decision::Events {
            events: vec![],
            op: None
        })
    );
}

#[test]
fn a_drained_switch_moves_every_system_onto_another_switch_one_failover_per_system_at_a_time() {
    let mut state = fabric(&[("sw0", 4), ("sw1", 4)]);
    compose(&mut state, "rn1", Role::RenderNode, &["nvme-0", "nvme-1"]);
    compose(&mut state, "rn2", Role::RenderNode, &["nvme-2"]);
    compose(&mut state, "rn3", Role::RenderNode, &["nvme-4"]);
    let events = run(&mut state, drain(DrainScope::Switch("sw0".into())));
    assert_eq!(kinds(&events), ["drain_requested"]);
    assert_eq!(
        events[0].devices(),
        ["nvme-0", "nvme-1", "nvme-2", "nvme-3"],
        "the switch's devices, held or free"
    );
    assert_eq!(state.drains.len(), 3);
    let moves = drain_out(&mut state, &Policy::default());
    assert_eq!(moves.len(), 3, "{moves:?}");
    for (system, _, to) in &moves {
        assert_eq!(
            state.devices[to].switch.as_str(),
            "sw1",
            "{system} onto sw1"
        );
        assert_eq!(state.devices[to].holder.as_ref(), Some(system));
    }
    for id in ["nvme-0", "nvme-1", "nvme-2", "nvme-3"] {
        let device = &state.devices[id];
        assert_eq!(
            (device.holder.as_ref(), device.in_service),
            (None, false),
            "{id}"
        );
    }
    assert!(
        state.systems["rn3"].devices.contains_key("nvme-4"),
        "rn3 untouched"
    );
    assert!(state.drains.is_empty());
}

#[test]
fn a_drain_without_a_replacement_outside_it_is_refused() {
    // rn1 and rn2 hold sw0's two drives; sw1 has one spare: one system could move, not both.
    let mut state = fabric(&[("sw0", 2), ("sw1", 1)]);
    compose(&mut state, "rn1", Role::RenderNode, &["nvme-0"]);
    compose(&mut state, "rn2", Role::RenderNode, &["nvme-1"]);
    let head = state.head;
    let refused = decide(&state, &drain(DrainScope::Switch("sw0".into())));
    match refused {
        Err(CommandError::NoPlacement { reason }) => {
            assert!(
                reason.contains("nvme-1") && reason.contains("outside the drain"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(state.head, head);
    // One device of it can go: sw1's spare takes it.
    run(&mut state, drain(DrainScope::Device("nvme-0".into())));
    assert_eq!(drain_out(&mut state, &Policy::default()).len(), 1);
    // And now nvme-1 has nowhere to go: sw0's free drive is the drained one.
    let refused = decide(&state, &drain(DrainScope::Device("nvme-1".into())));
    assert!(
        matches!(refused, Err(CommandError::NoPlacement { .. })),
        "{refused:?}"
    );
    let unknown = decide(&state, &drain(DrainScope::Switch("sw9".into())));
    assert!(
        matches!(unknown, Err(CommandError::UnknownSwitch { .. })),
        "{unknown:?}"
    );
    let unknown = decide(&state, &drain(DrainScope::Device("nvme-9".into())));
    assert!(
        matches!(unknown, Err(CommandError::UnknownDevice { .. })),
        "{unknown:?}"
    );
}

#[test]
fn a_device_put_back_in_service_ends_its_drain_and_a_failing_one_is_retried_to_the_attempts() {
    let mut state = fabric(&[("sw0", 3)]);
    compose(&mut state, "rn1", Role::RenderNode, &["nvme-0"]);
    let policy = Policy::default();
    run(&mut state, drain(DrainScope::Device("nvme-0".into())));
    let back = |in_service| {
        Command::appliance(Verb::SetService {
            device: "nvme-0".into(),
            in_service,
            reason: "maintenance put off".into(),
            repaired: false,
        })
    };
    run(&mut state, back(true));
    assert!(state.drains.is_empty());
    assert_eq!(reflex::sweep(&state, &policy), vec![]);
    // Drained again, and every failover off it fails (the spares would not bind).
    run(&mut state, drain(DrainScope::Device("nvme-0".into())));
    for attempt in 1..=3 {
        let reflexes = reflex::sweep(&state, &policy);
        assert_eq!(reflexes.len(), 1, "attempt {attempt}");
        run(
            &mut state,
            Command::appliance(reflexes[0].order().expect("order")),
        );
        let op = *state.pending.keys().next().expect("the failover");
        let failure = appliance::model::Failure::Unclassified {
            reason: "the spare would not bind".into(),
        };
        run(
            &mut state,
            Command::Finish {
                op,
                result: Err(failure),
            },
        );
        assert_eq!(state.drains["nvme-0"].failovers_failed, attempt);
    }
    assert_eq!(
        reflex::sweep(&state, &policy),
        vec![],
        "left to an operator"
    );
    assert!(state.systems["rn1"].devices.contains_key("nvme-0"));
}

#[test]
fn a_tenants_account_cannot_drain() {
    let state = bench(Role::RenderNode);
    let mut order = appliance::decide::command::Order::new(
        Verb::Drain {
            scope: DrainScope::Device("nvme-0".into()),
            reason: String::new(),
        },
        Origin::appliance(),
    );
    order.scope = Some("studio".into());
    let refused = decide(&state, &Command::Order(order));
    assert!(
        matches!(refused, Err(CommandError::OutOfScope { .. })),
        "{refused:?}"
    );
}
