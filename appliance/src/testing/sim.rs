//! The simulated fabric: an in-process, deterministic (seeded) switch and server that implement
//! both `drivers::Fabric` and `drivers::Host`, with fault injection: the switch refuses, a device
//! vanishes mid-compose, a driver bind times out. Used by `appliance serve --fabric sim` and by
//! the deterministic simulation tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;
use std::time::Duration;

use drivers::{
    DriverChoice, Fabric, FabricError, FabricEvent, FabricPort, Host, HostDevice, HostError,
    HostObservation, Inventory, NvmeIdentity, PciAddress, PoolDevice,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::topology::Topology;

/// One-shot faults, consumed by the first call they match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The switch refuses the next attach of this device.
    RefuseAttach { device: String },
    /// The switch refuses the next detach of this device.
    RefuseDetach { device: String },
    /// The next attach of this device succeeds at the switch, then the device vanishes.
    VanishOnAttach { device: String },
    /// The next bind of this device times out.
    BindTimeout { device: String },
    /// The next Identify Controller of this NVMe answers with another serial number.
    WrongSerial { device: String },
}

/// Random fault rates, in parts per million of calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultRates {
    pub refuse_ppm: u32,
    pub vanish_ppm: u32,
    pub bind_timeout_ppm: u32,
}

/// Calls seen, for tests and the status line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimCounters {
    pub attaches: u64,
    pub detaches: u64,
    pub binds: u64,
    pub faults: u64,
}

#[derive(Debug)]
struct Inner {
    devices: BTreeMap<String, PoolDevice>,
    ports: BTreeMap<u16, FabricPort>,
    /// Devices that left the pool (still remembered so a test can restore them).
    vanished: BTreeMap<String, PoolDevice>,
    bound: BTreeMap<u32, DriverChoice>,
    /// Slots the server powered off: empty to it until the switch attaches something there.
    powered_off: BTreeSet<u32>,
    rng: StdRng,
    rates: FaultRates,
    scheduled: Vec<Fault>,
    counters: SimCounters,
}

/// The simulated switch and server.
#[derive(Debug)]
pub struct SimFabric {
    inner: Mutex<Inner>,
    observer: Mutex<Option<Sender<HostObservation>>>,
    /// The switch's reports, kept until `events()` takes the receiver.
    reports: Mutex<(Sender<FabricEvent>, Option<Receiver<FabricEvent>>)>,
}

/// The PCI address the simulated server gives the device in `slot`.
pub fn address_of_slot(slot: u32) -> PciAddress {
    PciAddress {
        domain: 0,
        bus: (slot % 255 + 1) as u8,
        device: 0,
        function: 0,
    }
}

impl SimFabric {
    /// A fabric holding `topology`, random faults drawn from `seed`.
    pub fn new(topology: &Topology, seed: u64) -> SimFabric {
        let inventory = topology.inventory();
        let inner = Inner {
            devices: inventory
                .devices
                .into_iter()
                .map(|d| (d.id.clone(), d))
                .collect(),
            ports: inventory.ports.into_iter().map(|p| (p.id, p)).collect(),
            vanished: BTreeMap::new(),
            bound: BTreeMap::new(),
            powered_off: BTreeSet::new(),
            rng: StdRng::seed_from_u64(seed),
            rates: FaultRates::default(),
            scheduled: Vec::new(),
            counters: SimCounters::default(),
        };
        let (reports, taken) = channel();
        SimFabric {
            inner: Mutex::new(inner),
            observer: Mutex::new(None),
            reports: Mutex::new((reports, Some(taken))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data; keep going with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_rates(&self, rates: FaultRates) {
        self.lock().rates = rates;
    }

    /// Drops every scheduled fault and random rate.
    pub fn clear_faults(&self) {
        let mut inner = self.lock();
        inner.scheduled.clear();
        inner.rates = FaultRates::default();
    }

    pub fn schedule(&self, fault: Fault) {
        self.lock().scheduled.push(fault);
    }

    pub fn counters(&self) -> SimCounters {
        self.lock().counters
    }

    /// Removes a device from the pool now (a cable pulled, a card dead).
    pub fn vanish(&self, device: &str) {
        let removed = {
            let mut inner = self.lock();
            vanish_locked(&mut inner, device)
        };
        if let Some(slot) = removed {
            self.notify(HostObservation::DeviceRemoved {
                address: address_of_slot(slot),
                slot: Some(slot),
            });
        }
    }

    /// The host reports an NVMe SMART critical warning (`bits`; 0 = cleared) of the device
    /// attached at `device`'s port; false when it is attached nowhere.
    pub fn smart_warning(&self, device: &str, bits: u8) -> bool {
        self.report(device, |address| HostObservation::NvmeCriticalWarning {
            address,
            bits,
        })
    }

    /// The host reports the SMART media errors count of the NVMe attached at `device`'s port
    /// rising by `rose_by` to `media_errors`; false when it is attached nowhere.
    pub fn media_errors(&self, device: &str, media_errors: u128, rose_by: u128) -> bool {
        self.report(device, |address| HostObservation::NvmeMediaErrors {
            address,
            media_errors,
            rose_by,
        })
    }

    /// The host reports the link of the NIC attached at `device`'s port going up or down.
    pub fn link(&self, device: &str, up: bool) -> bool {
        self.report(device, |address| HostObservation::LinkChanged {
            address,
            up,
        })
    }

    /// The switch reports the link of `device`'s port down (or up); false when `device` is
    /// attached nowhere.
    pub fn port_link(&self, device: &str, up: bool) -> bool {
        let port = self
            .lock()
            .devices
            .get(device)
            .and_then(|d| d.attached_port);
        let Some(port) = port else {
            return false;
        };
        let reason = match up {
            true => "link up",
            false => "surprise down (simulated)",
        };
        let event = FabricEvent::PortLink {
            port,
            up,
            reason: reason.into(),
        };
        let reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        let _ = reports.0.send(event);
        true
    }

    fn report(
        &self,
        device: &str,
        observation: impl FnOnce(PciAddress) -> HostObservation,
    ) -> bool {
        let slot = {
            let inner = self.lock();
            let port = inner.devices.get(device).and_then(|d| d.attached_port);
            port.and_then(|p| inner.ports.get(&p).map(|q| q.slot))
        };
        match slot {
            Some(slot) => {
                self.notify(observation(address_of_slot(slot)));
                true
            }
            None => false,
        }
    }

    /// Puts a vanished device back into the pool, unattached.
    pub fn restore(&self, device: &str) {
        let mut inner = self.lock();
        if let Some(d) = inner.vanished.remove(device) {
            inner.devices.insert(device.to_string(), d);
        }
    }

    fn notify(&self, observation: HostObservation) {
        if let Some(tx) = self
            .observer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = tx.send(observation);
        }
    }

    /// The device in `slot` as the server would see it.
    fn in_slot(inner: &Inner, slot: u32) -> Option<HostDevice> {
        if inner.powered_off.contains(&slot) {
            return None;
        }
        let port = inner.ports.values().find(|p| p.slot == slot)?;
        let device = inner.devices.get(port.attached.as_ref()?)?;
        Some(HostDevice {
            address: address_of_slot(slot),
            slot: Some(slot),
            vendor_id: device.vendor_id,
            device_id: device.device_id,
            class: device.class,
            driver: inner.bound.get(&slot).and_then(driver_name),
        })
    }
}

fn driver_name(choice: &DriverChoice) -> Option<String> {
    match choice {
        DriverChoice::Nvme => Some("nvme".into()),
        DriverChoice::VfioPci => Some("vfio-pci".into()),
        DriverChoice::Default => Some("default".into()),
        DriverChoice::None => None,
    }
}

/// Removes a device from the pool; returns the slot it occupied.
fn vanish_locked(inner: &mut Inner, device: &str) -> Option<u32> {
    let mut d = inner.devices.remove(device)?;
    let port = d.attached_port.take().and_then(|p| inner.ports.get_mut(&p));
    let slot = port.map(|p| {
        p.attached = None;
        p.slot
    });
    if let Some(slot) = slot {
        inner.bound.remove(&slot);
    }
    inner.vanished.insert(device.to_string(), d);
    slot
}

/// Consumes a scheduled fault matching `pred`, or draws a random one at `ppm`.
fn fault(inner: &mut Inner, pred: impl Fn(&Fault) -> bool, ppm: u32) -> bool {
    if let Some(i) = inner.scheduled.iter().position(pred) {
        inner.scheduled.remove(i);
        inner.counters.faults += 1;
        return true;
    }
    let hit = ppm > 0 && inner.rng.gen_range(0..1_000_000) < ppm;
    if hit {
        inner.counters.faults += 1;
    }
    hit
}

impl Fabric for SimFabric {
    fn events(&self) -> Result<Receiver<FabricEvent>, FabricError> {
        let mut reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        reports.1.take().ok_or_else(|| FabricError::Link {
            operation: "events",
            reason: "events() may be called once".into(),
        })
    }

    fn inventory(&self) -> Result<Inventory, FabricError> {
        let inner = self.lock();
        Ok(Inventory {
            devices: inner.devices.values().cloned().collect(),
            ports: inner.ports.values().cloned().collect(),
        })
    }

    fn attach(&self, device: &str, port: u16) -> Result<(), FabricError> {
        let mut inner = self.lock();
        inner.counters.attaches += 1;
        let d = inner
            .devices
            .get(device)
            .ok_or_else(|| FabricError::UnknownDevice {
                device: device.into(),
            })?;
        let p = inner
            .ports
            .get(&port)
            .ok_or(FabricError::UnknownPort { port })?;
        let refuse = |reason: &str| FabricError::Refused {
            operation: "attach",
            device: device.into(),
            port,
            reason: reason.into(),
        };
        if d.attached_port == Some(port) {
            return Ok(());
        }
        if d.attached_port.is_some() {
            return Err(refuse("device is attached to another port"));
        }
        if p.attached.is_some() {
            return Err(refuse("port is occupied"));
        }
        let rate = inner.rates.refuse_ppm;
        if fault(
            &mut inner,
            |f| matches!(f, Fault::RefuseAttach { device: d } if d == device),
            rate,
        ) {
            return Err(refuse("injected: switch refused"));
        }
        if let Some(d) = inner.devices.get_mut(device) {
            d.attached_port = Some(port);
        }
        if let Some(p) = inner.ports.get_mut(&port) {
            p.attached = Some(device.to_string());
            // What the switch attaches powers its slot on, as pciehp does on presence.
            let slot = p.slot;
            inner.powered_off.remove(&slot);
        }
        let rate = inner.rates.vanish_ppm;
        if fault(
            &mut inner,
            |f| matches!(f, Fault::VanishOnAttach { device: d } if d == device),
            rate,
        ) {
            vanish_locked(&mut inner, device);
        }
        Ok(())
    }

    fn detach(&self, device: &str, port: u16) -> Result<(), FabricError> {
        let mut inner = self.lock();
        inner.counters.detaches += 1;
        let d = inner
            .devices
            .get(device)
            .ok_or_else(|| FabricError::UnknownDevice {
                device: device.into(),
            })?;
        if !inner.ports.contains_key(&port) {
            return Err(FabricError::UnknownPort { port });
        }
        if d.attached_port.is_none() {
            return Ok(());
        }
        if d.attached_port != Some(port) {
            let reason = format!("device is attached to port {:?}", d.attached_port);
            return Err(FabricError::Refused {
                operation: "detach",
                device: device.into(),
                port,
                reason,
            });
        }
        let rate = inner.rates.refuse_ppm;
        if fault(
            &mut inner,
            |f| matches!(f, Fault::RefuseDetach { device: d } if d == device),
            rate,
        ) {
            let reason = "injected: switch refused".into();
            return Err(FabricError::Refused {
                operation: "detach",
                device: device.into(),
                port,
                reason,
            });
        }
        if let Some(d) = inner.devices.get_mut(device) {
            d.attached_port = None;
        }
        let slot = inner.ports.get_mut(&port).map(|p| {
            p.attached = None;
            p.slot
        });
        if let Some(slot) = slot {
            inner.bound.remove(&slot);
        }
        Ok(())
    }
}

impl Host for SimFabric {
    fn wait_for_device(&self, slot: u32, timeout: Duration) -> Result<HostDevice, HostError> {
        let inner = self.lock();
        Self::in_slot(&inner, slot).ok_or_else(|| HostError::Timeout {
            what: format!("a device in slot {slot}"),
            timeout_ms: timeout.as_millis() as u64,
        })
    }

    fn wait_for_removal(&self, slot: u32, timeout: Duration) -> Result<(), HostError> {
        let inner = self.lock();
        match Self::in_slot(&inner, slot) {
            None => Ok(()),
            Some(_) => Err(HostError::Timeout {
                what: format!("slot {slot} to empty"),
                timeout_ms: timeout.as_millis() as u64,
            }),
        }
    }

    fn set_slot_power(&self, slot: u32, on: bool) -> Result<(), HostError> {
        let mut inner = self.lock();
        if on {
            inner.powered_off.remove(&slot);
        } else {
            inner.powered_off.insert(slot);
            inner.bound.remove(&slot);
        }
        Ok(())
    }

    fn bind(
        &self,
        address: PciAddress,
        driver: DriverChoice,
        timeout: Duration,
    ) -> Result<(), HostError> {
        let mut inner = self.lock();
        inner.counters.binds += 1;
        let slot = inner
            .ports
            .values()
            .map(|p| p.slot)
            .find(|s| address_of_slot(*s) == address);
        let device = slot.and_then(|s| Self::in_slot(&inner, s)).and_then(|_| {
            let port = inner.ports.values().find(|p| Some(p.slot) == slot)?;
            port.attached.clone()
        });
        let (Some(slot), Some(device)) = (slot, device) else {
            return Err(HostError::Device {
                operation: "bind",
                address,
                reason: "no such device".into(),
            });
        };
        let rate = inner.rates.bind_timeout_ppm;
        if fault(
            &mut inner,
            |f| matches!(f, Fault::BindTimeout { device: d } if *d == device),
            rate,
        ) {
            let what = format!("{address} to bind to {driver:?} (injected)");
            return Err(HostError::Timeout {
                what,
                timeout_ms: timeout.as_millis() as u64,
            });
        }
        inner.bound.insert(slot, driver);
        Ok(())
    }

    fn identify_nvme(&self, address: PciAddress) -> Result<NvmeIdentity, HostError> {
        let mut inner = self.lock();
        let port = inner
            .ports
            .values()
            .find(|p| address_of_slot(p.slot) == address && p.attached.is_some());
        let device = port.and_then(|p| inner.devices.get(p.attached.as_ref()?));
        let Some(device) = device.filter(|d| d.class.is_nvme()) else {
            return Err(HostError::Device {
                operation: "identify",
                address,
                reason: "no NVMe controller here".into(),
            });
        };
        if inner.bound.get(&port.map(|p| p.slot).unwrap_or(0)) != Some(&DriverChoice::Nvme) {
            return Err(HostError::Device {
                operation: "identify",
                address,
                reason: "not bound to nvme".into(),
            });
        }
        let (id, mut serial) = (device.id.clone(), device.serial.clone());
        let (model, firmware, capacity_bytes) = (
            device.model.clone(),
            device.firmware.clone(),
            device.capacity_bytes,
        );
        if fault(
            &mut inner,
            |f| matches!(f, Fault::WrongSerial { device: d } if *d == id),
            0,
        ) {
            serial.push_str("-OTHER");
        }
        Ok(NvmeIdentity {
            serial,
            model,
            firmware,
            capacity_bytes,
            namespaces: 1,
        })
    }

    fn present(&self) -> Result<Vec<HostDevice>, HostError> {
        let inner = self.lock();
        let slots: BTreeSet<u32> = inner.ports.values().map(|p| p.slot).collect();
        Ok(slots
            .into_iter()
            .filter_map(|s| Self::in_slot(&inner, s))
            .collect())
    }

    fn observations(&self) -> Result<Receiver<HostObservation>, HostError> {
        let (tx, rx) = channel();
        *self.observer.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fabric() -> SimFabric {
        let topology = crate::topology::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/sample.toml"),
        )
        .expect("sample");
        SimFabric::new(&topology, 7)
    }

    #[test]
    fn a_slot_the_server_powered_off_is_empty_until_the_switch_attaches_there() {
        let sim = fabric();
        let t = Duration::from_millis(10);
        sim.attach("nvme-0", 3).expect("attach");
        sim.set_slot_power(3, false).expect("power off");
        sim.wait_for_removal(3, t).expect("the server let it go");
        sim.set_slot_power(3, true).expect("power on");
        sim.wait_for_device(3, t)
            .expect("powered again, it is back");
        sim.set_slot_power(3, false).expect("power off");
        sim.detach("nvme-0", 3)
            .expect("the switch still detaches it");
        sim.attach("nvme-0", 3).expect("attach");
        sim.wait_for_device(3, t)
            .expect("an attach powers the slot");
    }

    #[test]
    fn attach_shows_the_device_in_its_slot_and_detach_removes_it() {
        let sim = fabric();
        let t = Duration::from_millis(10);
        sim.attach("nvme-0", 3).expect("attach");
        sim.attach("nvme-0", 3).expect("attach is idempotent");
        let dev = sim.wait_for_device(3, t).expect("present");
        assert!(dev.class.is_nvme());
        sim.bind(dev.address, DriverChoice::Nvme, t).expect("bind");
        assert_eq!(
            sim.identify_nvme(dev.address).expect("identify").serial,
            "S6NVME2000"
        );
        assert!(sim.attach("gpu-0", 3).is_err(), "an occupied port refuses");
        sim.detach("nvme-0", 3).expect("detach");
        sim.wait_for_removal(3, t).expect("gone");
    }

    #[test]
    fn scheduled_faults_fire_once() {
        let sim = fabric();
        let t = Duration::from_millis(10);
        sim.schedule(Fault::RefuseAttach {
            device: "gpu-1".into(),
        });
        assert!(matches!(
            sim.attach("gpu-1", 1),
            Err(FabricError::Refused { .. })
        ));
        sim.attach("gpu-1", 1).expect("second attach works");
        sim.schedule(Fault::BindTimeout {
            device: "gpu-1".into(),
        });
        let address = sim.wait_for_device(1, t).expect("present").address;
        assert!(matches!(
            sim.bind(address, DriverChoice::VfioPci, t),
            Err(HostError::Timeout { .. })
        ));
        sim.schedule(Fault::VanishOnAttach {
            device: "gpu-2".into(),
        });
        sim.attach("gpu-2", 2).expect("switch accepts");
        assert!(
            sim.wait_for_device(2, t).is_err(),
            "vanished device never shows"
        );
        assert!(sim
            .inventory()
            .expect("inventory")
            .devices
            .iter()
            .all(|d| d.id != "gpu-2"));
        assert_eq!(sim.counters().faults, 3);
    }
}
