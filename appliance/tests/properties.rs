//! Property tests: any sequence of commands (and reconciler outcomes, and crashes) keeps the
//! invariants: no device in two systems, no mount on a device that is not composed, every intent
//! ends in at most one outcome, and replaying the journal from nothing gives the live State.

use appliance::core::log::{decode_snapshot, encode_snapshot};
use appliance::decide::command::{decide, Command, Decision, NewSystem, Selection, Verb};
use appliance::decide::placement::Want;
use appliance::model::{DeviceId, DeviceKind, MountSource, MountSpec, Role, SystemName};
use appliance::testing::simulation::{check_outcomes, rebuild, Harness};
use proptest::prelude::*;

/// An abstract action; indices pick among current devices/systems.
#[derive(Debug, Clone)]
enum Action {
    ComposeSpecific {
        system: u8,
        devices: Vec<u8>,
    },
    ComposeConstrained {
        system: u8,
        kind: u8,
        count: u8,
        big: bool,
    },
    Decompose {
        system: u8,
        one: Option<u8>,
    },
    Mount {
        system: u8,
        nvme: bool,
    },
    Unmount {
        system: u8,
    },
    Failover {
        system: u8,
        device: u8,
    },
    Service {
        device: u8,
        in_service: bool,
    },
    Delete {
        system: u8,
    },
    Reconcile {
        record: bool,
    },
    Crash,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        1 => (0u8..4, proptest::collection::vec(any::<u8>(), 1..4)).prop_map(|(system, devices)| Action::ComposeSpecific { system, devices }),
        1 => (0u8..4, 0u8..4, 1u8..3, any::<bool>()).prop_map(|(system, kind, count, big)| Action::ComposeConstrained { system, kind, count, big }),
        1 => (0u8..4, proptest::option::of(any::<u8>())).prop_map(|(system, one)| Action::Decompose { system, one }),
        1 => (0u8..4, any::<bool>()).prop_map(|(system, nvme)| Action::Mount { system, nvme }),
        1 => (0u8..4).prop_map(|system| Action::Unmount { system }),
        1 => (0u8..4, any::<u8>()).prop_map(|(system, device)| Action::Failover { system, device }),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(device, in_service)| Action::Service { device, in_service }),
        1 => (0u8..4).prop_map(|system| Action::Delete { system }),
        3 => any::<bool>().prop_map(|record| Action::Reconcile { record }),
        1 => Just(Action::Crash),
    ]
}

fn nth<T: Clone>(items: &[T], i: u8) -> Option<T> {
    (!items.is_empty()).then(|| items[i as usize % items.len()].clone())
}

fn to_command(h: &Harness, action: &Action) -> Option<Command> {
    to_verb(h, action).map(Command::appliance)
}

fn to_verb(h: &Harness, action: &Action) -> Option<Verb> {
    let system_name = |i: u8| SystemName::from(format!("sys{i}"));
    let devices: Vec<DeviceId> = h.state.devices.keys().cloned().collect();
    let held = |i: u8| -> Vec<DeviceId> {
        h.state
            .systems
            .get(&system_name(i))
            .map(|s| s.devices.keys().cloned().collect())
            .unwrap_or_default()
    };
    let create = Some(NewSystem {
        tenant: "studio-a".into(),
        role: Role::RenderNode,
    });
    Some(match action {
        Action::ComposeSpecific {
            system,
            devices: picks,
        } => Verb::Compose {
            system: system_name(*system),
            selection: Selection::Specific(
                picks.iter().filter_map(|p| nth(&devices, *p)).collect(),
            ),
            create,
            tenant: None,
            reservation: None,
        },
        Action::ComposeConstrained {
            system,
            kind,
            count,
            big,
        } => {
            let kind = [
                DeviceKind::Gpu,
                DeviceKind::Nvme,
                DeviceKind::Nic,
                DeviceKind::Hba,
            ][*kind as usize];
            let min = if *big { 48 << 30 } else { 0 };
            let wants = vec![Want {
                kind,
                count: u32::from(*count),
                capacity_bytes_min: min,
                rdma: false,
            }];
            Verb::Compose {
                system: system_name(*system),
                selection: Selection::Constrained(wants),
                create,
                tenant: None,
                reservation: None,
            }
        }
        Action::Decompose { system, one } => Verb::Decompose {
            system: system_name(*system),
            devices: one.and_then(|i| nth(&held(*system), i)).map(|d| vec![d]),
        },
        Action::Mount { system, nvme } => {
            let device = held(*system).into_iter().find(|d| d.starts_with("nvme"));
            let source = match (nvme, device) {
                (true, Some(device)) => MountSource::Namespace {
                    device,
                    namespace: 1,
                },
                _ => MountSource::Export {
                    server: "nas".into(),
                    path: "/p".into(),
                },
            };
            let mount = MountSpec {
                source,
                target: "/mnt/a".into(),
                filesystem: "xfs".into(),
                options: String::new(),
            };
            Verb::Mount {
                system: system_name(*system),
                mount,
            }
        }
        Action::Unmount { system } => Verb::Unmount {
            system: system_name(*system),
            target: "/mnt/a".into(),
        },
        Action::Failover { system, device } => Verb::Failover {
            system: system_name(*system),
            device: nth(&held(*system), *device)?,
        },
        Action::Service { device, in_service } => Verb::SetService {
            device: nth(&devices, *device)?,
            in_service: *in_service,
            reason: "prop".into(),
            repaired: false,
        },
        Action::Delete { system } => Verb::DeleteSystem {
            name: system_name(*system),
        },
        Action::Reconcile { .. } | Action::Crash => return None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn any_command_sequence_keeps_the_invariants(actions in proptest::collection::vec(action(), 1..60)) {
        let mut h = Harness::new(0);
        for action in &actions {
            match action {
                Action::Reconcile { record } => h.reconcile_one(*record),
                Action::Crash => h.crash(),
                other => {
                    if let Some(command) = to_command(&h, other) {
                        let before = h.log.events().len();
                        let result = h.submit(command);
                        if result.is_err() || matches!(result, Ok(Decision::Repeat { .. })) {
                            prop_assert_eq!(h.log.events().len(), before, "a refused command wrote events");
                        }
                    }
                }
            }
            prop_assert_eq!(h.state.check_invariants(), Ok(()));
        }
        let events: Vec<_> = h.log.events().into_iter().map(|l| l.event).collect();
        prop_assert_eq!(check_outcomes(&events), Ok(()));
        prop_assert_eq!(rebuild(h.log.as_ref()), h.state.clone());
        let bytes = encode_snapshot(&h.state).expect("encode");
        prop_assert_eq!(decode_snapshot(h.state.head, &bytes).expect("decode"), h.state.clone());
    }

    #[test]
    fn decide_is_pure(actions in proptest::collection::vec(action(), 1..30)) {
        let mut h = Harness::new(1);
        for action in &actions {
            if let Some(command) = to_command(&h, action) {
                let first = decide(&h.state, &command);
                prop_assert_eq!(&first, &decide(&h.state, &command));
                let _ = h.submit(command);
            }
        }
    }
}
