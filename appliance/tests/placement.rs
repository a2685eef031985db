//! Placement over the free-pool index makes the same choices as the policy's plain statement:
//! a scan of every device (the implementation before the index, kept here as the oracle), on
//! random pools (kinds, capacities, switches, RDMA; devices held, unhealthy, out of service or
//! gone; ports used) and random requests.

use std::collections::{BTreeMap, BTreeSet};

use appliance::decide::placement::{place, Placement, PlacementError, Want};
use appliance::model::{
    DeviceFacts, DeviceId, DeviceKind, Event, Health, Made, OperationId, PortId, Role, State,
    SwitchName,
};
use proptest::prelude::*;

/// A candidate device: (capacity, id).
type Candidate<'a> = (u64, &'a DeviceId);

/// The policy by a scan of every device, as it was written before the index.
fn oracle(state: &State, wants: &[Want]) -> Result<Placement, PlacementError> {
    let mut order: Vec<&Want> = wants.iter().filter(|w| w.count > 0).collect();
    order.sort_by_key(|w| std::cmp::Reverse(w.capacity_bytes_min));
    let mut by_switch: BTreeMap<&SwitchName, Vec<Vec<Candidate>>> = BTreeMap::new();
    for device in state.devices.values().filter(|d| d.is_available()) {
        for (index, want) in order.iter().enumerate() {
            if want.kind == device.kind
                && device.capacity_bytes >= want.capacity_bytes_min
                && (!want.rdma || device.rdma)
            {
                let lists = by_switch
                    .entry(&device.switch)
                    .or_insert_with(|| vec![Vec::new(); order.len()]);
                lists[index].push((device.capacity_bytes, &device.id));
            }
        }
    }
    for lists in by_switch.values_mut() {
        for list in lists.iter_mut() {
            list.sort_unstable();
        }
    }
    let mut best: Option<(u64, &SwitchName, Vec<&DeviceId>)> = None;
    for (switch, lists) in &by_switch {
        if let Ok((picked, excess)) = pick(&order, lists) {
            if best.as_ref().is_none_or(|(e, _, _)| excess < *e) {
                best = Some((excess, switch, picked));
            }
        }
    }
    let (home, picked) = match best {
        Some((_, switch, picked)) => (switch.clone(), picked),
        None => {
            let home = by_switch
                .iter()
                .max_by_key(|(switch, lists)| {
                    (
                        lists.iter().map(Vec::len).sum::<usize>(),
                        std::cmp::Reverse(**switch),
                    )
                })
                .map(|(switch, _)| (*switch).clone())
                .unwrap_or_default();
            let mut merged: Vec<Vec<(bool, u64, &DeviceId)>> = vec![Vec::new(); order.len()];
            for (switch, lists) in &by_switch {
                for (index, list) in lists.iter().enumerate() {
                    merged[index].extend(list.iter().map(|(c, id)| (**switch != home, *c, *id)));
                }
            }
            for list in merged.iter_mut() {
                list.sort_unstable();
            }
            let lists: Vec<Vec<Candidate>> = merged
                .into_iter()
                .map(|l| l.into_iter().map(|(_, c, id)| (c, id)).collect())
                .collect();
            let (picked, _) = pick(&order, &lists)?;
            (home, picked)
        }
    };
    let crossings = picked
        .iter()
        .filter(|id| state.devices[id.as_str()].switch != home)
        .count();
    let devices = ports(state, &picked)?;
    Ok(Placement {
        devices,
        home_switch: home,
        crossings,
    })
}

fn pick<'a>(
    order: &[&Want],
    lists: &[Vec<Candidate<'a>>],
) -> Result<(Vec<&'a DeviceId>, u64), PlacementError> {
    let mut taken = BTreeSet::new();
    let mut picked = Vec::new();
    let mut excess = 0u64;
    for (want, list) in order.iter().zip(lists) {
        let mut found = 0u32;
        for (capacity, id) in list {
            if found == want.count {
                break;
            }
            if taken.insert(*id) {
                picked.push(*id);
                excess = excess.saturating_add(capacity - want.capacity_bytes_min);
                found += 1;
            }
        }
        if found < want.count {
            return Err(PlacementError::Place {
                kind: want.kind,
                capacity_bytes_min: want.capacity_bytes_min,
                rdma: want.rdma,
                wanted: want.count,
                found,
            });
        }
    }
    Ok((picked, excess))
}

fn ports(state: &State, devices: &[&DeviceId]) -> Result<Vec<(DeviceId, PortId)>, PlacementError> {
    let mut free: BTreeMap<PortId, &SwitchName> = state
        .ports
        .values()
        .filter(|p| p.device.is_none())
        .map(|p| (p.id, &p.switch))
        .collect();
    if free.len() < devices.len() {
        return Err(PlacementError::Ports {
            needed: devices.len(),
            free: free.len(),
        });
    }
    let mut out = Vec::new();
    for id in devices {
        let switch = &state.devices[id.as_str()].switch;
        let port = free
            .iter()
            .find(|(_, s)| **s == switch)
            .or_else(|| free.iter().next())
            .map(|(p, _)| *p)
            .expect("enough free ports");
        free.remove(&port);
        out.push(((*id).clone(), port));
    }
    Ok(out)
}

/// One device of a random pool: kind, capacity step, switch, RDMA, and what became of it.
#[derive(Debug, Clone)]
struct Spec {
    kind: u8,
    size: u8,
    switch: u8,
    rdma: bool,
    fate: u8,
}

const KINDS: [DeviceKind; 4] = [
    DeviceKind::Gpu,
    DeviceKind::Nvme,
    DeviceKind::Nic,
    DeviceKind::Hba,
];
const SIZES: [u64; 4] = [16 << 30, 24 << 30, 48 << 30, 80 << 30];

fn pool(specs: &[Spec], ports: u8) -> State {
    let mut state = State::default();
    let mut seq = 0;
    let mut apply = |state: &mut State, event: Event| {
        seq += 1;
        state.apply(seq, &event).expect("applies");
    };
    for p in 0..ports {
        apply(
            &mut state,
            Event::PortDiscovered {
                port: PortId(u16::from(p)),
                switch: format!("sw{}", p % 3).into(),
                slot: u32::from(p),
            },
        );
    }
    for (i, spec) in specs.iter().enumerate() {
        let facts = DeviceFacts {
            id: format!("d{i:02}").into(),
            kind: KINDS[usize::from(spec.kind) % 4],
            class: 0,
            vendor_id: 0,
            device_id: 0,
            serial: format!("S{i}"),
            model: String::new(),
            firmware: String::new(),
            capacity_bytes: SIZES[usize::from(spec.size) % 4],
            rdma: spec.rdma,
            switch: format!("sw{}", spec.switch % 4).into(),
        };
        apply(
            &mut state,
            Event::DeviceDiscovered {
                facts: Box::new(facts),
            },
        );
    }
    apply(
        &mut state,
        Event::TenantCreated {
            name: "t".into(),
            made: Made::default(),
        },
    );
    apply(
        &mut state,
        Event::SystemCreated {
            name: "held".into(),
            tenant: "t".into(),
            role: Role::RenderNode,
            made: Made::default(),
        },
    );
    // Fates: 0 held by a system (on a free port, while one lasts), 1 unhealthy, 2 out of
    // service, 3 gone from the pool, else free.
    let mut held = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let device: DeviceId = format!("d{i:02}").into();
        match spec.fate {
            0 => held.push(device),
            1 => apply(
                &mut state,
                Event::HealthChanged {
                    device,
                    health: Health::Failed("test".into()),
                },
            ),
            2 => apply(
                &mut state,
                Event::ServiceChanged {
                    device,
                    in_service: false,
                    reason: String::new(),
                    made: Made::default(),
                },
            ),
            3 => apply(&mut state, Event::DeviceVanished { device }),
            _ => {}
        }
    }
    let free_ports: Vec<PortId> = state.ports.keys().copied().collect();
    let devices: Vec<(DeviceId, PortId)> = held.into_iter().zip(free_ports).collect();
    if !devices.is_empty() {
        let op = OperationId(0);
        apply(
            &mut state,
            Event::ComposeRequested {
                op,
                system: "held".into(),
                devices,
                made: Made::default(),
            },
        );
        apply(&mut state, Event::ComposeCompleted { op });
    }
    state
}

fn spec() -> impl Strategy<Value = Spec> {
    (0u8..4, 0u8..4, 0u8..4, any::<bool>(), 0u8..10).prop_map(|(kind, size, switch, rdma, fate)| {
        Spec {
            kind,
            size,
            switch,
            rdma,
            fate,
        }
    })
}

fn want() -> impl Strategy<Value = Want> {
    (0u8..4, 0u32..4, 0u8..5, prop::bool::weighted(0.3)).prop_map(|(kind, count, size, rdma)| {
        Want {
            kind: KINDS[usize::from(kind)],
            count,
            capacity_bytes_min: if size == 4 {
                0
            } else {
                SIZES[usize::from(size)]
            },
            rdma,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn the_index_places_as_the_scan_does(
        specs in prop::collection::vec(spec(), 0..40),
        ports in 0u8..24,
        wants in prop::collection::vec(want(), 1..4),
    ) {
        let state = pool(&specs, ports);
        prop_assert_eq!(state.check_invariants(), Ok(()));
        prop_assert_eq!(place(&state, &wants), oracle(&state, &wants));
    }
}

#[test]
fn the_oracle_is_not_trivial() {
    // A pool where a request fits on one switch, one that needs a mix, and one that fails: the
    // property above compares all three kinds of answer.
    let specs: Vec<Spec> = (0..12)
        .map(|i| Spec {
            kind: 0,
            size: i % 4,
            switch: i % 2,
            rdma: false,
            fate: 9,
        })
        .collect();
    let state = pool(&specs, 12);
    let gpus = |count| Want {
        kind: DeviceKind::Gpu,
        count,
        capacity_bytes_min: 24 << 30,
        rdma: false,
    };
    let one = oracle(&state, &[gpus(2)]).expect("fits on one switch");
    assert_eq!(one.crossings, 0);
    let mixed = oracle(&state, &[gpus(7)]).expect("fits on two switches");
    assert!(mixed.crossings > 0, "{mixed:?}");
    assert!(oracle(&state, &[gpus(10)]).is_err());
    assert_eq!(place(&state, &[gpus(7)]), Ok(mixed));
}
