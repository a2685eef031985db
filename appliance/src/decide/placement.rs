//! Placement: choosing devices and ports for a constrained compose.
//!
//! Policy, in order:
//! 1. **Fewest switch crossings.** Every device of the request should sit behind one switch (the
//!    "home" switch); each device from another switch is one crossing. A switch that satisfies the
//!    whole request alone wins over any mix.
//! 2. **Best fit.** For each wanted item, take the smallest devices that are large enough, so the
//!    big GPUs and NVMe stay free for requests that need them. Between home switches that both
//!    satisfy the request, prefer the one leaving the least excess capacity; ties go to the
//!    switch name's order (deterministic).
//! 3. **Ports.** A device goes to the lowest free port on its own switch, else the lowest free port.
//!
//! Wanted items are served largest minimum first, so a small item never takes the only device a
//! larger one could use. Cost is one pass over the devices plus a sort of the candidates.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::domain::{DeviceId, DeviceKind};
use crate::model::state::State;

/// One wanted item of a constrained compose: `count` devices of `kind`, each at least
/// `capacity_bytes_min` (GPU memory or NVMe capacity), RDMA-capable if `rdma`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Want {
    pub kind: DeviceKind,
    pub count: u32,
    #[serde(default)]
    pub capacity_bytes_min: u64,
    #[serde(default)]
    pub rdma: bool,
}

/// Why no placement exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("not enough free {kind} devices with at least {capacity_bytes_min} bytes{rdma}: wanted {wanted}, found {found}", kind = .kind.name(), rdma = if *.rdma { " and RDMA" } else { "" })]
    Place {
        kind: DeviceKind,
        capacity_bytes_min: u64,
        rdma: bool,
        wanted: u32,
        found: u32,
    },
    #[error("not enough free ports: {needed} needed, {free} free")]
    Ports { needed: usize, free: usize },
}

/// A chosen placement: device -> port, and how many devices cross away from the home switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub devices: Vec<(DeviceId, u16)>,
    pub home_switch: String,
    pub crossings: usize,
}

/// A candidate device: (capacity, id).
type Candidate<'a> = (u64, &'a str);

/// Picks devices for `wants` among the available devices of `state`.
pub fn place(state: &State, wants: &[Want]) -> Result<Placement, PlacementError> {
    let mut order: Vec<&Want> = wants.iter().filter(|w| w.count > 0).collect();
    order.sort_by_key(|w| std::cmp::Reverse(w.capacity_bytes_min));
    let by_switch = candidates(state, &order);
    let mut best: Option<(u64, &str, Vec<&str>)> = None;
    for (switch, lists) in &by_switch {
        if let Ok((picked, excess)) = pick(&order, lists.iter().map(|l| l.as_slice()).collect()) {
            if best.as_ref().is_none_or(|(e, _, _)| excess < *e) {
                best = Some((excess, switch, picked));
            }
        }
    }
    let (home, picked) = match best {
        Some((_, switch, picked)) => (switch.to_string(), picked),
        None => mixed(&order, &by_switch)?,
    };
    let crossings = picked
        .iter()
        .filter(|id| state.devices[**id].switch != home)
        .count();
    let devices = assign_ports(state, &picked)?;
    Ok(Placement {
        devices,
        home_switch: home,
        crossings,
    })
}

/// Available devices per switch, per wanted item (index into `order`), sorted by capacity.
fn candidates<'a>(state: &'a State, order: &[&Want]) -> BTreeMap<&'a str, Vec<Vec<Candidate<'a>>>> {
    let mut by_switch: BTreeMap<&str, Vec<Vec<Candidate>>> = BTreeMap::new();
    for device in state.devices.values().filter(|d| d.is_available()) {
        for (index, want) in order.iter().enumerate() {
            if want.kind == device.kind
                && device.capacity_bytes >= want.capacity_bytes_min
                && (!want.rdma || device.rdma)
            {
                let lists = by_switch
                    .entry(device.switch.as_str())
                    .or_insert_with(|| vec![Vec::new(); order.len()]);
                lists[index].push((device.capacity_bytes, device.id.as_str()));
            }
        }
    }
    for lists in by_switch.values_mut() {
        for list in lists.iter_mut() {
            list.sort_unstable();
        }
    }
    by_switch
}

/// Best-fit pick over candidate lists (one per wanted item); returns the ids and the excess capacity.
fn pick<'a>(
    order: &[&Want],
    lists: Vec<&[Candidate<'a>]>,
) -> Result<(Vec<&'a str>, u64), PlacementError> {
    let mut taken: BTreeSet<&str> = BTreeSet::new();
    let mut picked = Vec::new();
    let mut excess = 0u64;
    for (want, list) in order.iter().zip(lists) {
        let mut found = 0u32;
        for (capacity, id) in list {
            if found == want.count {
                break;
            }
            if taken.insert(id) {
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

/// No single switch suffices: home is the switch with the most candidates, others fill in.
fn mixed<'a>(
    order: &[&Want],
    by_switch: &BTreeMap<&'a str, Vec<Vec<Candidate<'a>>>>,
) -> Result<(String, Vec<&'a str>), PlacementError> {
    let home = by_switch
        .iter()
        .max_by_key(|(switch, lists)| {
            (
                lists.iter().map(Vec::len).sum::<usize>(),
                std::cmp::Reverse(**switch),
            )
        })
        .map(|(switch, _)| *switch)
        .unwrap_or("");
    let mut merged: Vec<Vec<(bool, u64, &str)>> = vec![Vec::new(); order.len()];
    for (switch, lists) in by_switch {
        for (index, list) in lists.iter().enumerate() {
            merged[index].extend(
                list.iter()
                    .map(|(capacity, id)| (*switch != home, *capacity, *id)),
            );
        }
    }
    for list in merged.iter_mut() {
        list.sort_unstable();
    }
    let lists: Vec<Vec<Candidate>> = merged
        .into_iter()
        .map(|l| l.into_iter().map(|(_, c, id)| (c, id)).collect())
        .collect();
    // Re-sorting by capacity would lose the home-first order, so pick from the merged order as is.
    let (picked, _) = pick(order, lists.iter().map(|l| l.as_slice()).collect())?;
    Ok((home.to_string(), picked))
}

/// Gives each device a free port: its own switch's lowest free port, else the lowest free port.
pub fn assign_ports(
    state: &State,
    devices: &[&str],
) -> Result<Vec<(DeviceId, u16)>, PlacementError> {
    let mut free: BTreeMap<u16, &str> = state
        .ports
        .values()
        .filter(|p| p.device.is_none())
        .map(|p| (p.id, p.switch.as_str()))
        .collect();
    if free.len() < devices.len() {
        return Err(PlacementError::Ports {
            needed: devices.len(),
            free: free.len(),
        });
    }
    let mut out = Vec::with_capacity(devices.len());
    for id in devices {
        let switch = state
            .devices
            .get(*id)
            .map(|d| d.switch.as_str())
            .unwrap_or("");
        let port = free
            .iter()
            .find(|(_, s)| **s == switch)
            .or_else(|| free.iter().next())
            .map(|(p, _)| *p);
        let Some(port) = port else {
            return Err(PlacementError::Ports {
                needed: devices.len(),
                free: 0,
            });
        };
        free.remove(&port);
        out.push((id.to_string(), port));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::{DeviceFacts, Event};

    fn state(devices: &[(&str, DeviceKind, u64, &str)], ports: &[(u16, &str)]) -> State {
        let mut state = State::default();
        let mut seq = 0;
        let mut apply = |state: &mut State, event: Event| {
            seq += 1;
            state.apply(seq, &event).expect("applies");
        };
        for (port, switch) in ports {
            apply(
                &mut state,
                Event::PortDiscovered {
                    port: *port,
                    switch: switch.to_string(),
                    slot: u32::from(*port),
                },
            );
        }
        for (id, kind, capacity_bytes, switch) in devices {
            let facts = DeviceFacts {
                id: id.to_string(),
                kind: *kind,
                class: 0,
                vendor_id: 0,
                device_id: 0,
                serial: id.to_string(),
                model: String::new(),
                firmware: String::new(),
                capacity_bytes: *capacity_bytes,
                rdma: false,
                switch: switch.to_string(),
            };
            let facts = Box::new(facts);
            apply(&mut state, Event::DeviceDiscovered { facts });
        }
        state
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn one_switch_first_then_best_fit_then_local_ports() {
        use DeviceKind::*;
        let s = state(
            &[
                ("a80", Gpu, 80 * GIB, "sw0"),
                ("a24", Gpu, 24 * GIB, "sw0"),
                ("b48", Gpu, 48 * GIB, "sw1"),
                ("b24", Gpu, 24 * GIB, "sw1"),
                ("n", Nvme, 4, "sw1"),
            ],
            &[(1, "sw0"), (2, "sw1"), (3, "sw1")],
        );
        let want = |count, min| Want {
            kind: Gpu,
            count,
            capacity_bytes_min: min,
            rdma: false,
        };
        // Best fit: the 24 GiB GPU, never the 80 GiB one.
        let p = place(&s, &[want(1, 20 * GIB)]).expect("placed");
        assert_eq!(p.devices.len(), 1);
        assert!(p.devices[0].0.ends_with("24"), "{p:?}");
        // One switch: GPU + NVMe both on sw1, on sw1's ports, no crossing.
        let nvme = Want {
            kind: Nvme,
            count: 1,
            capacity_bytes_min: 1,
            rdma: false,
        };
        let p = place(&s, &[want(1, 20 * GIB), nvme]).expect("placed");
        assert_eq!((p.home_switch.as_str(), p.crossings), ("sw1", 0), "{p:?}");
        assert!(
            p.devices.iter().all(|(_, port)| *port == 2 || *port == 3),
            "{p:?}"
        );
        // No single switch has three 24 GiB+ GPUs: a mix with one crossing per foreign device.
        let p = place(&s, &[want(3, 24 * GIB)]).expect("placed");
        assert_eq!(p.crossings, 1, "{p:?}");
        // Too many: a typed refusal naming the shortfall.
        let err = place(&s, &[want(5, 0)]).expect_err("only 4 GPUs");
        assert_eq!(
            err,
            PlacementError::Place {
                kind: Gpu,
                capacity_bytes_min: 0,
                rdma: false,
                wanted: 5,
                found: 4
            }
        );
        let err = place(&s, &[want(4, 0)]).expect_err("only 3 ports");
        assert_eq!(err, PlacementError::Ports { needed: 4, free: 3 });
    }
}
