//! The free pool, indexed for placement: the devices free to compose by kind and switch, ordered
//! by capacity then id (RDMA-capable ones also in sets of their own), and the free ports by
//! switch. Derived from State's devices and ports: `State::apply` keeps it in step as they change,
//! `State::check_invariants` compares it with a rebuild. Placement reads it instead of scanning
//! every device, so a constrained compose costs O(switches x wanted devices x log n).

use rkyv::{Archive, Deserialize as RkyvDeserialize, Serialize as RkyvSerialize};
use std::collections::{BTreeMap, BTreeSet};

use super::domain::{Device, DeviceKind, Port};
use super::ids::{DeviceId, PortId, SwitchName};

/// A set of free devices: those of one kind behind one switch (RDMA-capable only, or all).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[derive(Archive, RkyvSerialize, RkyvDeserialize)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
pub struct PoolKey {
    pub kind: DeviceKind,
    pub switch: SwitchName,
    pub rdma_only: bool,
}

/// The free pool's index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[derive(Archive, RkyvSerialize, RkyvDeserialize)]
pub struct FreePool {
    /// Free devices by (kind, switch, RDMA-only), each set ordered by (capacity, id).
    devices: BTreeMap<PoolKey, BTreeSet<(u64, DeviceId)>>,
    /// Free ports by switch.
    ports_by_switch: BTreeMap<SwitchName, BTreeSet<PortId>>,
    /// Every free port.
    ports: BTreeSet<PortId>,
}

impl FreePool {
    /// The index of `devices` and `ports`, built from nothing.
    pub fn build<'a>(
        devices: impl IntoIterator<Item = &'a Device>,
        ports: impl IntoIterator<Item = &'a Port>,
    ) -> FreePool {
        let mut pool = FreePool::default();
        for device in devices {
            pool.add_device(device);
        }
        for port in ports {
            pool.add_port(port);
        }
        pool
    }

    fn keys(device: &Device) -> impl Iterator<Item = PoolKey> + '_ {
        let all = PoolKey {
            kind: device.kind,
            switch: device.switch.clone(),
            rdma_only: false,
        };
        let rdma = device.rdma.then(|| PoolKey {
            rdma_only: true,
            ..all.clone()
        });
        std::iter::once(all).chain(rdma)
    }

    /// Adds `device` if it is free to compose.
    pub fn add_device(&mut self, device: &Device) {
        if !device.is_available() {
            return;
        }
        for key in Self::keys(device) {
            self.devices
                .entry(key)
                .or_default()
                .insert((device.capacity_bytes, device.id.clone()));
        }
    }

    /// Removes `device` (as it is now) if it is in the index.
    pub fn remove_device(&mut self, device: &Device) {
        if !device.is_available() {
            return;
        }
        for key in Self::keys(device) {
            if let Some(set) = self.devices.get_mut(&key) {
                set.remove(&(device.capacity_bytes, device.id.clone()));
                if set.is_empty() {
                    self.devices.remove(&key);
                }
            }
        }
    }

    /// Adds `port` if no device uses it.
    pub fn add_port(&mut self, port: &Port) {
        if port.device.is_some() {
            return;
        }
        self.ports_by_switch
            .entry(port.switch.clone())
            .or_default()
            .insert(port.id);
        self.ports.insert(port.id);
    }

    /// Removes `port` (as it is now) if it is in the index.
    pub fn remove_port(&mut self, port: &Port) {
        if port.device.is_some() {
            return;
        }
        if let Some(set) = self.ports_by_switch.get_mut(&port.switch) {
            set.remove(&port.id);
            if set.is_empty() {
                self.ports_by_switch.remove(&port.switch);
            }
        }
        self.ports.remove(&port.id);
    }

    /// The switches behind which some device is free, in name order.
    pub fn switches(&self) -> BTreeSet<&SwitchName> {
        self.devices.keys().map(|k| &k.switch).collect()
    }

    /// Free devices of `kind` behind `switch` with at least `capacity_min` bytes (RDMA-capable
    /// ones only if `rdma`), smallest first, then by id.
    pub fn candidates<'a>(
        &'a self,
        kind: DeviceKind,
        switch: &SwitchName,
        capacity_min: u64,
        rdma: bool,
    ) -> impl Iterator<Item = (u64, &'a DeviceId)> + 'a {
        let key = PoolKey {
            kind,
            switch: switch.clone(),
            rdma_only: rdma,
        };
        self.devices
            .get(&key)
            .into_iter()
            .flat_map(move |set| set.range((capacity_min, DeviceId::default())..))
            .map(|(capacity, id)| (*capacity, id))
    }

    /// How many free ports there are.
    pub fn ports_free(&self) -> usize {
        self.ports.len()
    }

    /// Free ports behind `switch`, lowest first.
    pub fn ports_on(&self, switch: &SwitchName) -> impl Iterator<Item = PortId> + '_ {
        self.ports_by_switch
            .get(switch)
            .into_iter()
            .flat_map(|set| set.iter().copied())
    }

    /// Every free port, lowest first.
    pub fn ports(&self) -> impl Iterator<Item = PortId> + '_ {
        self.ports.iter().copied()
    }
}
