//! Alarms and the reflex's policy, through the pure `decide` and `State::apply`: a fault raises
//! one alarm with its evidence, the same fault seen again raises none, recovery ends it; a
//! failover answers it and takes the device out of service in the same batch; a cleared alarm
//! asks the reflex for nothing; a refused failover is tried again, a failed one until the
//! policy's attempts are spent; a link down is a warning until its grace has passed; the policy
//! can keep a role's devices from failing over.

use appliance::decide::command::{
    decide, Command, Decision, NewSystem, Observation, Selection, Verb,
};
use appliance::decide::reflex::{self, Policy, Reflex};
use appliance::model::{
    AlarmEnd, DeviceFacts, DeviceId, DeviceKind, Event, Health, Role, Severity, State,
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

fn nvme(id: &str) -> DeviceFacts {
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
        switch: "sw0".into(),
    }
}

/// Three NVMe drives and three ports; `rn1` (of `role`) composed with nvme-0.
fn bench(role: Role) -> State {
    let mut state = State::default();
    for port in 0..3u16 {
        let observed = Observation::Port {
            port: port.into(),
            switch: "sw0".into(),
            slot: u32::from(port) + 1,
        };
        run(&mut state, Command::Observe(observed));
    }
    for id in ["nvme-0", "nvme-1", "nvme-2"] {
        run(
            &mut state,
            Command::Observe(Observation::Device { facts: nvme(id) }),
        );
    }
    run(
        &mut state,
        Command::appliance(Verb::CreateTenant {
            name: "studio".into(),
        }),
    );
    let compose = Verb::Compose {
        system: "rn1".into(),
        selection: Selection::Specific(vec!["nvme-0".into()]),
        create: Some(NewSystem {
            tenant: "studio".into(),
            role,
        }),
        tenant: None,
        reservation: None,
    };
    run(&mut state, Command::appliance(compose));
    finish_pending(&mut state);
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
            alarm,
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
fn a_refused_failover_is_tried_again_and_a_failed_one_until_the_attempts_are_spent() {
    let mut state = bench(Role::RenderNode);
    let policy = Policy::default();
    // No spare: the two free drives are out of service.
    let withhold = |device: &str, in_service| {
        Command::appliance(Verb::SetService {
            device: device.into(),
            in_service,
            reason: "spare withheld".into(),
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
