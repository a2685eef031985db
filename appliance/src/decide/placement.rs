//! Placement: choosing devices and ports for a constrained compose.
//!
//! Policy, in order:
//! 1. **Fewest switch crossings.** Every device of the request should sit behind one switch (the
//!    "home" switch); each device from another switch is one crossing. A switch that satisfies the
//!    whole request alone wins over any mix.
//! 2. **Best fit.** For each wanted item, take the smallest devices that are large enough, so the
//!    big GPUs and NVMe stay free for requests that need them. Between home switches that both
//!    satisfy the request, prefer the one leaving the least excess capacity; ties go to the
//!    switch name's order (deterministic). When no switch suffices alone, home is the switch with
//!    the most candidates (ties: name order) and the others fill in, smallest first.
//! 3. **Ports.** A device goes to the lowest free port on its own switch, else the lowest free port.
//!
//! A failover's replacement (`replacement`) has its own order, the one an operator expects of a
//! spare: a free device of the old one's kind with at least its capacity (RDMA-capable if it
//! was), of the **same model** first, then on the **same switch**, then the best fit anywhere
//! (ties: switch name, then id).
//!
//! Wanted items are served largest minimum first, so a small item never takes the only device a
//! larger one could use. Candidates come from State's free-pool index (`model::pool`), ordered
//! by capacity: each switch costs a range lookup per wanted item, not a scan of every device.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::model::domain::{Device, DeviceKind};
use crate::model::ids::{DeviceId, PortId, SwitchName};
use crate::model::state::State;

/// One wanted item of a constrained compose: `count` devices of `kind`, each at least
/// `capacity_bytes_min` (GPU memory or NVMe capacity), RDMA-capable if `rdma`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Want {
    pub kind: DeviceKind,
    pub count: u32,
    #[serde(default)]
    pub capacity_bytes_min: u64,
    #[serde(default)]
    pub rdma: bool,
}

impl Want {
    /// `KIND:COUNT[:MIN][:rdma]`; a MIN without a unit is in GiB.
    pub fn parse(text: &str) -> Result<Want, String> {
        let parts: Vec<&str> = text.split(':').collect();
        if parts.len() < 2 || parts.len() > 4 {
            return Err(format!("{text:?}: expected KIND:COUNT[:MIN][:rdma]"));
        }
        let kind: DeviceKind = parts[0].parse()?;
        let count: u32 = parts[1]
            .parse()
            .map_err(|_| format!("{text:?}: count {:?} is not a number", parts[1]))?;
        let mut want = Want::of(kind, count);
        for part in &parts[2..] {
            if *part == "rdma" {
                want.rdma = true;
            } else {
                want.capacity_bytes_min = parse_size(part).ok_or_else(|| {
                    format!("{text:?}: size {part:?} is not like 24 (GiB), 24GiB, 2TB or 500GB")
                })?;
            }
        }
        Ok(want)
    }

    /// `count` devices of `kind`, of any size.
    pub fn of(kind: DeviceKind, count: u32) -> Want {
        Want {
            kind,
            count,
            capacity_bytes_min: 0,
            rdma: false,
        }
    }

    /// Each at least `bytes` (GPU memory or NVMe capacity).
    pub fn at_least(self, bytes: u64) -> Want {
        Want {
            capacity_bytes_min: bytes,
            ..self
        }
    }

    /// RDMA-capable only.
    pub fn rdma(self) -> Want {
        Want { rdma: true, ..self }
    }
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
    pub devices: Vec<(DeviceId, PortId)>,
    pub home_switch: SwitchName,
    pub crossings: usize,
}

/// Picks devices for `wants` among the free devices of `state`.
pub fn place(state: &State, wants: &[Want]) -> Result<Placement, PlacementError> {
    let mut order: Vec<&Want> = wants.iter().filter(|w| w.count > 0).collect();
    order.sort_by_key(|w| std::cmp::Reverse(w.capacity_bytes_min));
    if order.is_empty() {
        // Nothing wanted: no home switch either.
        return Ok(Placement {
            devices: Vec::new(),
            home_switch: SwitchName::default(),
            crossings: 0,
        });
    }
    let switches = state.pool.switches();
    let mut best: Option<(u64, &SwitchName, Vec<&DeviceId>)> = None;
    for switch in &switches {
        let lists = order.iter().map(|want| candidates(state, want, switch));
        if let Ok((picked, excess)) = pick(&order, lists) {
            if best.as_ref().is_none_or(|(e, _, _)| excess < *e) {
                best = Some((excess, switch, picked));
            }
        }
    }
    let (home, picked) = match best {
        Some((_, switch, picked)) => (switch.clone(), picked),
        None => mixed(state, &order, &switches)?,
    };
    let crossings = picked
        .iter()
        .filter(|id| state.devices[id.as_str()].switch != home)
        .count();
    let devices = assign_ports(state, &picked)?;
    Ok(Placement {
        devices,
        home_switch: home,
        crossings,
    })
}

/// The free devices behind `switch` that satisfy `want`, smallest first.
fn candidates<'a>(
    state: &'a State,
    want: &Want,
    switch: &SwitchName,
) -> impl Iterator<Item = (u64, &'a DeviceId)> + 'a {
    state
        .pool
        .candidates(want.kind, switch, want.capacity_bytes_min, want.rdma)
}

/// Best-fit pick over candidate lists (one per wanted item, each smallest first); returns the
/// ids and the excess capacity.
fn pick<'a, L>(
    order: &[&Want],
    lists: impl Iterator<Item = L>,
) -> Result<(Vec<&'a DeviceId>, u64), PlacementError>
where
    L: Iterator<Item = (u64, &'a DeviceId)>,
{
    let mut taken: BTreeSet<&DeviceId> = BTreeSet::new();
    let mut picked = Vec::new();
    let mut excess = 0u64;
    for (want, list) in order.iter().zip(lists) {
        let mut found = 0u32;
        for (capacity, id) in list {
            if found == want.count {
                break;
            }
            if taken.insert(id) {
                picked.push(id);
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

/// No single switch suffices: home is the switch with the most candidates, the others fill in
/// (home's candidates first, then everyone else's, each smallest first).
fn mixed<'a>(
    state: &'a State,
    order: &[&Want],
    switches: &BTreeSet<&'a SwitchName>,
) -> Result<(SwitchName, Vec<&'a DeviceId>), PlacementError> {
    let count = |switch: &SwitchName| -> usize {
        order
            .iter()
            .map(|want| candidates(state, want, switch).count())
            .sum()
    };
    let home = switches
        .iter()
        .map(|switch| (count(switch), std::cmp::Reverse(*switch)))
        .filter(|(n, _)| *n > 0)
        .max()
        .map(|(_, std::cmp::Reverse(switch))| switch.clone())
        .unwrap_or_default();
    let lists: Vec<Vec<(u64, &DeviceId)>> = order
        .iter()
        .map(|want| {
            let mut others: Vec<(u64, &DeviceId)> = switches
                .iter()
                .filter(|switch| ***switch != home)
                .flat_map(|switch| candidates(state, want, switch))
                .collect();
            others.sort_unstable();
            candidates(state, want, &home).chain(others).collect()
        })
        .collect();
    let (picked, _) = pick(order, lists.into_iter().map(Vec::into_iter))?;
    Ok((home, picked))
}

/// The replacement of `old` (see the module's order) and its port.
pub fn replacement(state: &State, old: &Device) -> Result<(DeviceId, PortId), PlacementError> {
    let switches = state.pool.switches();
    let fits = switches.iter().flat_map(|switch| {
        (state
            .pool
            .candidates(old.kind, switch, old.capacity_bytes, old.rdma))
        .map(move |(capacity, id)| (capacity, *switch, id))
    });
    let rank = |(capacity, switch, id): &(u64, &SwitchName, &DeviceId)| {
        let model = state.devices.get(id.as_str()).map(|d| d.model.as_str());
        let other_model = model != Some(old.model.as_str());
        let other_switch = **switch != old.switch;
        (
            other_model,
            other_switch,
            *capacity,
            (*switch).clone(),
            (*id).clone(),
        )
    };
    let best = fits.min_by_key(rank).ok_or(PlacementError::Place {
        kind: old.kind,
        capacity_bytes_min: old.capacity_bytes,
        rdma: old.rdma,
        wanted: 1,
        found: 0,
    })?;
    let (_, _, id) = best;
    let mut ports = assign_ports(state, &[id])?;
    ports
        .pop()
        .ok_or(PlacementError::Ports { needed: 1, free: 0 })
}

/// Gives each device a free port: its own switch's lowest free port, else the lowest free port.
pub fn assign_ports(
    state: &State,
    devices: &[&DeviceId],
) -> Result<Vec<(DeviceId, PortId)>, PlacementError> {
    let free = state.pool.ports_free();
    if free < devices.len() {
        return Err(PlacementError::Ports {
            needed: devices.len(),
            free,
        });
    }
    let mut taken: BTreeSet<PortId> = BTreeSet::new();
    let mut out = Vec::with_capacity(devices.len());
    for id in devices {
        let switch = state.devices.get(id.as_str()).map(|d| &d.switch);
        let own = switch.and_then(|s| state.pool.ports_on(s).find(|p| !taken.contains(p)));
        let port = own.or_else(|| state.pool.ports().find(|p| !taken.contains(p)));
        let Some(port) = port else {
            return Err(PlacementError::Ports {
                needed: devices.len(),
                free: 0,
            });
        };
        taken.insert(port);
        out.push(((*id).clone(), port));
    }
    Ok(out)
}

/// A size: a number in GiB, or with a unit (B, GiB, TiB, GB, TB).
pub fn parse_size(text: &str) -> Option<u64> {
    let (number, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| text.split_at(i))
        .unwrap_or((text, ""));
    let n: u64 = number.parse().ok()?;
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "gib" => 1 << 30,
        "b" => 1,
        "tib" => 1 << 40,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(multiplier)
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
                    port: PortId(*port),
                    switch: (*switch).into(),
                    slot: u32::from(*port),
                },
            );
        }
        for (id, kind, capacity_bytes, switch) in devices {
            let facts = DeviceFacts {
                id: (*id).into(),
                kind: *kind,
                class: 0,
                vendor_id: 0,
                device_id: 0,
                serial: id.to_string(),
                model: String::new(),
                firmware: String::new(),
                capacity_bytes: *capacity_bytes,
                rdma: false,
                switch: (*switch).into(),
            };
            let facts = Box::new(facts);
            apply(&mut state, Event::DeviceDiscovered { facts });
        }
        state
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn a_replacement_is_of_the_same_model_then_on_the_same_switch_then_the_best_fit() {
        use DeviceKind::*;
        let mut s = state(
            &[
                ("old", Gpu, 24 * GIB, "sw0"),
                ("small-other-model", Gpu, 24 * GIB, "sw0"),
                ("big-same-model-far", Gpu, 80 * GIB, "sw1"),
                ("big-same-model-near", Gpu, 80 * GIB, "sw0"),
                ("too-small", Gpu, 16 * GIB, "sw0"),
            ],
            &[(1, "sw0"), (2, "sw1")],
        );
        for (id, model) in [
            ("old", "L40S"),
            ("small-other-model", "A10"),
            ("big-same-model-far", "L40S"),
            ("big-same-model-near", "L40S"),
            ("too-small", "L40S"),
        ] {
            s.devices.get_mut(id).expect("device").model = model.into();
        }
        let old = s.devices["old"].clone();
        s.pool.remove_device(&old);
        let pick = |s: &State| replacement(s, &old).map(|(id, port)| (id.to_string(), port.0));
        assert_eq!(pick(&s), Ok(("big-same-model-near".into(), 1)));
        s.pool
            .remove_device(&s.devices["big-same-model-near"].clone());
        assert_eq!(
            pick(&s),
            Ok(("big-same-model-far".into(), 2)),
            "same model, other switch"
        );
        s.pool
            .remove_device(&s.devices["big-same-model-far"].clone());
        assert_eq!(
            pick(&s),
            Ok(("small-other-model".into(), 1)),
            "then any fit"
        );
        s.pool
            .remove_device(&s.devices["small-other-model"].clone());
        assert!(matches!(
            pick(&s),
            Err(PlacementError::Place { found: 0, .. })
        ));
    }

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
            p.devices
                .iter()
                .all(|(_, port)| *port == PortId(2) || *port == PortId(3)),
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
