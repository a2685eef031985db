//! [`LinuxHost`]: the [`Host`] trait on the real kernel (sysfs, uevents, rtnetlink link changes,
//! NVMe admin commands), every path under an injectable root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use tracing::{info, info_span, warn};

use crate::aer::{self, AerCounts};
use crate::link::{LinkEvent, LinkMonitor};
use crate::nvme::{NvmeController, NvmeError};
use crate::pci::{PciBus, PciDevice, PciError};
use crate::sysfs::{self, SysfsError};
use crate::uevent::{DeviceEvent, Uevent, UeventAction, UeventListener};
use crate::{
    error_chain, DriverChoice, Host, HostDevice, HostError, HostObservation, NvmeIdentity,
    PciAddress,
};

/// A wait for a device re-reads sysfs at least this often even without a uevent, in case the
/// socket overflowed (ENOBUFS) and the event was lost.
pub const RECHECK_MS: u64 = 1000;
/// How long identify waits for a just-bound NVMe controller to finish its reset and go live.
pub const NVME_LIVE_TIMEOUT_MS: u64 = 30_000;

impl From<PciError> for HostError {
    fn from(error: PciError) -> HostError {
        match error {
            PciError::Vanished { address, path } => HostError::Device {
                operation: "read",
                address,
                reason: format!("vanished ({path} missing)"),
            },
            PciError::NoDriver {
                address,
                driver,
                path,
            } => HostError::Device {
                operation: "bind",
                address,
                reason: format!("driver {driver} not loaded ({path})"),
            },
            PciError::BindTimeout {
                address,
                driver,
                actual,
                timeout_ms,
            } => HostError::Timeout {
                what: format!("{address} bound to {driver} (bound to {actual:?})"),
                timeout_ms,
            },
            other => sysfs_to_host(&other),
        }
    }
}

/// Flattens an error chain into a HostError that names the path and value.
fn sysfs_to_host(error: &PciError) -> HostError {
    let operation = "sysfs";
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(inner) = source {
        if let Some(sysfs_error) = inner.downcast_ref::<SysfsError>() {
            return match sysfs_error {
                SysfsError::Read { path, source } | SysfsError::List { path, source } => {
                    HostError::Io {
                        operation,
                        path: path.clone(),
                        source: std::io::Error::new(source.kind(), error.to_string()),
                    }
                }
                SysfsError::Write { path, source, .. } => HostError::Io {
                    operation,
                    path: path.clone(),
                    source: std::io::Error::new(source.kind(), error.to_string()),
                },
                SysfsError::Parse {
                    path,
                    value,
                    expected,
                } => HostError::BadValue {
                    path: path.clone(),
                    value: value.clone(),
                    expected,
                },
                SysfsError::TooLong { path, bytes } => HostError::BadValue {
                    path: path.clone(),
                    value: format!("{bytes} bytes"),
                    expected: "a sysfs attribute",
                },
            };
        }
        source = inner.source();
    }
    HostError::Io {
        operation,
        path: String::new(),
        source: std::io::Error::other(error.to_string()),
    }
}

/// The host side on the real kernel.
#[derive(Debug)]
pub struct LinuxHost {
    root: PathBuf,
    pci: PciBus,
    observing: AtomicBool,
}

impl LinuxHost {
    /// `root` is "/" in production; every path is `root.join("sys/...")` / `root.join("dev/...")`.
    pub fn new(root: &Path) -> Result<LinuxHost, HostError> {
        let devices = sysfs::under(root, "sys/bus/pci/devices");
        if !devices.is_dir() {
            let source = std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory");
            return Err(HostError::Io {
                operation: "open PCI bus",
                path: devices.display().to_string(),
                source,
            });
        }
        Ok(LinuxHost {
            root: root.to_path_buf(),
            pci: PciBus::new(root),
            observing: AtomicBool::new(false),
        })
    }

    pub fn pci(&self) -> &PciBus {
        &self.pci
    }

    fn host_device(&self, device: &PciDevice, slot: Option<u32>) -> HostDevice {
        HostDevice {
            address: device.address,
            slot,
            vendor_id: device.vendor_id,
            device_id: device.device_id,
            class: device.class,
            driver: device.driver.clone(),
        }
    }

    /// The first function present in slot `slot`, if any.
    fn in_slot(&self, slot: u32) -> Result<Option<HostDevice>, HostError> {
        let slot_info = self.pci.slot(&slot.to_string())?;
        let mut devices = self.pci.devices_in_slot(&slot_info)?;
        devices.sort_by_key(|d| d.address);
        Ok(devices.first().map(|d| self.host_device(d, Some(slot))))
    }

    /// Waits until `done` returns a value, re-checking on every PCI uevent and at least every
    /// [`RECHECK_MS`]. Without a uevent socket (a fake root) it re-checks every RECHECK_MS only.
    fn wait_for<T>(
        &self,
        what: String,
        timeout: Duration,
        mut done: impl FnMut() -> Result<Option<T>, HostError>,
    ) -> Result<T, HostError> {
        let listener = if self.root == Path::new("/") {
            UeventListener::open().ok()
        } else {
            None
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = done()? {
                return Ok(value);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HostError::Timeout {
                    what,
                    timeout_ms: timeout.as_millis() as u64,
                });
            }
            let slice = left.min(Duration::from_millis(RECHECK_MS));
            match &listener {
                Some(l) => match l.recv_timeout(slice) {
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "uevent receive failed; re-reading sysfs"),
                },
                None => std::thread::sleep(slice),
            }
        }
    }

    /// Waits until the NVMe controller of `address` is live (its char device refuses opens with
    /// EAGAIN while the driver is still resetting it); returns its char device. The nvme driver
    /// probes asynchronously, so right after the bind its `nvme/nvmeN` entry may not exist yet:
    /// that is waited for too, within the same timeout.
    pub fn wait_nvme_live(
        &self,
        address: PciAddress,
        timeout: Duration,
    ) -> Result<PathBuf, HostError> {
        let dir = self.pci.device_dir(address).join("nvme");
        let live = || {
            let Ok(path) = self.nvme_char_device(address) else {
                return Ok(None);
            };
            let name = path.file_name().unwrap_or_default();
            let state = dir.join(name).join("state");
            match sysfs::read_optional(&state) {
                Ok(value) => Ok((value.as_deref() == Some("live")).then_some(path)),
                Err(e) => Err(HostError::Io {
                    operation: "read NVMe controller state",
                    path: state.display().to_string(),
                    source: std::io::Error::other(e.to_string()),
                }),
            }
        };
        self.wait_for(
            format!(
                "NVMe controller of {address} live ({}/nvmeN/state)",
                dir.display()
            ),
            timeout,
            live,
        )
    }

    /// The controller char device (`dev/nvmeN`) of an NVMe function bound to the nvme driver.
    pub fn nvme_char_device(&self, address: PciAddress) -> Result<PathBuf, HostError> {
        let dir = self.pci.device_dir(address).join("nvme");
        let names = sysfs::list(&dir).map_err(|e| HostError::Device {
            operation: "find NVMe controller",
            address,
            reason: format!(
                "{e}: {}",
                std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            ),
        })?;
        let name = names
            .into_iter()
            .find(|n| n.starts_with("nvme"))
            .ok_or_else(|| HostError::Device {
                operation: "find NVMe controller",
                address,
                reason: format!("{} holds no nvmeN entry", dir.display()),
            })?;
        Ok(sysfs::under(&self.root, "dev").join(name))
    }
}

fn nvme_to_host(address: PciAddress, error: NvmeError) -> HostError {
    let mut reason = error.to_string();
    if let Some(source) = std::error::Error::source(&error) {
        reason = format!("{reason}: {source}");
    }
    HostError::Device {
        operation: "NVMe admin",
        address,
        reason,
    }
}

impl Host for LinuxHost {
    fn wait_for_device(&self, slot: u32, timeout: Duration) -> Result<HostDevice, HostError> {
        let _span = info_span!("wait_for_device", slot).entered();
        self.wait_for(format!("a device in slot {slot}"), timeout, || {
            self.in_slot(slot)
        })
    }

    fn wait_for_removal(&self, slot: u32, timeout: Duration) -> Result<(), HostError> {
        let _span = info_span!("wait_for_removal", slot).entered();
        self.wait_for(format!("slot {slot} to be empty"), timeout, || {
            Ok(self.in_slot(slot)?.is_none().then_some(()))
        })
    }

    fn set_slot_power(&self, slot: u32, on: bool) -> Result<(), HostError> {
        Ok(self.pci.set_slot_power(&slot.to_string(), on)?)
    }

    fn bind(
        &self,
        address: PciAddress,
        driver: DriverChoice,
        timeout: Duration,
    ) -> Result<(), HostError> {
        match driver {
            DriverChoice::Nvme => self.pci.bind(address, Some("nvme"), timeout)?,
            DriverChoice::VfioPci => self.pci.bind(address, Some("vfio-pci"), timeout)?,
            DriverChoice::None => self.pci.bind(address, None, timeout)?,
            DriverChoice::Default => {
                self.pci.bind_default(address, timeout)?;
            }
        }
        Ok(())
    }

    fn identify_nvme(&self, address: PciAddress) -> Result<NvmeIdentity, HostError> {
        let _span = info_span!("identify_nvme", %address).entered();
        let path = self.wait_nvme_live(address, Duration::from_millis(NVME_LIVE_TIMEOUT_MS))?;
        let mut controller =
            NvmeController::open_best(&path).map_err(|e| nvme_to_host(address, e))?;
        let id = controller
            .identify_controller()
            .map_err(|e| nvme_to_host(address, e))?;
        // Controllers without namespace management (QEMU's among them) report TNVMCAP 0: then
        // the capacity is namespace 1's size.
        let capacity_bytes = match u64::try_from(id.total_capacity_bytes).unwrap_or(u64::MAX) {
            0 if id.namespaces > 0 => controller
                .identify_namespace(1)
                .map(|ns| ns.size_bytes())
                .unwrap_or(0),
            total => total,
        };
        Ok(NvmeIdentity {
            serial: id.serial,
            model: id.model,
            firmware: id.firmware,
            capacity_bytes,
            namespaces: id.namespaces,
        })
    }

    fn present(&self) -> Result<Vec<HostDevice>, HostError> {
        let slots = self.pci.slots()?;
        let mut present = Vec::new();
        for device in self.pci.devices()? {
            if let Some(slot) = slots.iter().find(|s| s.holds(device.address)) {
                present.push(self.host_device(&device, slot.number()));
            }
        }
        Ok(present)
    }

    fn bring_up(&self, address: PciAddress) -> Result<Vec<String>, HostError> {
        let _span = info_span!("bring_up", %address).entered();
        let interfaces = interfaces_of(&self.root, address);
        for interface in &interfaces {
            crate::link::set_up(interface, true).map_err(|e| HostError::Device {
                operation: "set link up",
                address,
                reason: format!("{interface}: {}", error_chain(&e)),
            })?;
        }
        Ok(interfaces)
    }

    fn observations(&self) -> Result<Receiver<HostObservation>, HostError> {
        if self.observing.swap(true, Ordering::SeqCst) {
            let source = std::io::Error::other("observations() may be called once");
            return Err(HostError::Io {
                operation: "observe uevents",
                path: "NETLINK_KOBJECT_UEVENT".into(),
                source,
            });
        }
        // Both sockets are opened here, in the caller's network namespace, before any thread
        // starts: a failure leaves nothing running.
        let listener = UeventListener::open().map_err(|e| HostError::Io {
            operation: "observe uevents",
            path: "NETLINK_KOBJECT_UEVENT".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let links = LinkMonitor::open(&self.root).map_err(|e| HostError::Io {
            operation: "observe links",
            path: "NETLINK_ROUTE RTMGRP_LINK".into(),
            source: std::io::Error::other(error_chain(&e)),
        })?;
        let (sender, receiver) = mpsc::channel();
        let (pci, root) = (self.pci.clone(), self.root.clone());
        let link_sender = sender.clone();
        let smart_sender = sender.clone();
        spawn("uevent-observer", move || {
            observe(listener, pci, root, sender)
        })?;
        spawn("link-observer", move || observe_links(links, link_sender))?;
        let probe_sender = smart_sender.clone();
        let smart_root = self.root.clone();
        spawn("smart-poller", move || {
            poll_smart(&smart_root, smart_sender)
        })?;
        let aer_sender = probe_sender.clone();
        let probe_root = self.root.clone();
        spawn("read-prober", move || {
            probe_reads(&probe_root, probe_sender)
        })?;
        let (aer_pci, aer_root) = (self.pci.clone(), self.root.clone());
        spawn("aer-poller", move || {
            poll_aer(&aer_pci, &aer_root, aer_sender)
        })?;
        Ok(receiver)
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Result<(), HostError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map(drop)
        .map_err(|source| HostError::Io {
            operation: "spawn observer thread",
            path: name.to_string(),
            source,
        })
}

/// Forwards link up/down changes of netdevs backed by a PCI function, until the receiver is
/// dropped (noticed at the next change, as for uevents). Interfaces without a PCI function
/// (lo, veth, bridges) are not the appliance's and are only logged.
fn observe_links(mut links: LinkMonitor, sender: mpsc::Sender<HostObservation>) {
    loop {
        let event = match links.recv_timeout(Duration::from_millis(RECHECK_MS)) {
            Ok(Some(event)) => event,
            Ok(None) => continue,
            Err(e) => {
                warn!(error = %error_chain(&e), "link notification failed or malformed; going on");
                continue;
            }
        };
        info!(
            interface = event.change.name,
            up = event.change.up,
            address = ?event.address,
            rdma_ports = ?event.rdma_ports,
            "link changed"
        );
        let Some(observation) = link_observation(&event) else {
            continue;
        };
        if sender.send(observation).is_err() {
            return;
        }
    }
}

/// How often every NVMe controller's SMART log is read, at the most (each round waits this
/// plus up to a quarter of it at random, so many appliances do not poll in step).
pub const SMART_POLL_MS: u64 = 1000;

/// Reads every NVMe controller's SMART critical-warning bits each [`SMART_POLL_MS`] (jittered),
/// until the receiver is dropped (noticed at the next report), and reports a controller's bits when they differ from what it
/// last reported for it: the controller raises an asynchronous event only for the warnings the
/// kernel enabled (Linux enables none of the SMART ones), so polling is what sees a dying drive.
/// A controller first seen with no bits set is not reported; one that went away is forgotten.
fn poll_smart(root: &Path, sender: mpsc::Sender<HostObservation>) {
    let mut last: BTreeMap<String, u8> = BTreeMap::new();
    let mut media: BTreeMap<String, u128> = BTreeMap::new();
    let mut jitter = u64::from(std::process::id());
    loop {
        // A small LCG is jitter enough; the bits of a warning are not secret.
        jitter = jitter.wrapping_mul(6364136223846793005).wrapping_add(1);
        let wait = SMART_POLL_MS + (jitter >> 33) % (SMART_POLL_MS / 4 + 1);
        std::thread::sleep(Duration::from_millis(wait));
        let controllers = sysfs::list(&sysfs::under(root, "sys/class/nvme")).unwrap_or_default();
        last.retain(|name, _| controllers.contains(name));
        media.retain(|name, _| controllers.contains(name));
        for name in controllers {
            let _span = info_span!("smart_poll", controller = name).entered();
            let (address, bits, media_errors) = match smart_bits(root, &name) {
                Ok(read) => read,
                // Mid hot-plug, or a controller that does not answer: the next round looks again.
                Err(_) => continue,
            };
            if let Some(rose_by) = media_errors_rise(&mut media, &name, media_errors) {
                warn!(
                    controller = name,
                    media_errors, rose_by, "NVMe media errors rising"
                );
                let observation = HostObservation::NvmeMediaErrors {
                    address,
                    media_errors,
                    rose_by,
                };
                if sender.send(observation).is_err() {
                    return;
                }
            }
            let before = last.insert(name.clone(), bits);
            if before.unwrap_or(0) == bits {
                continue;
            }
            info!(
                controller = name,
                bits, "NVMe SMART critical warning changed"
            );
            if sender
                .send(HostObservation::NvmeCriticalWarning { address, bits })
                .is_err()
            {
                return;
            }
        }
    }
}

/// How often every NVMe controller's first namespace is read (one direct 4 KiB read at its
/// start), and how long that read may take before it counts as failed.
pub const READ_PROBE_MS: u64 = 1000;
pub const READ_PROBE_TIMEOUT_MS: u64 = 3000;

/// Reads every NVMe controller's first namespace each [`READ_PROBE_MS`], bypassing the page
/// cache, and reports a controller whose read fails (an I/O error: the media errors a dying drive
/// returns) or does not answer within [`READ_PROBE_TIMEOUT_MS`] (each read runs on its own thread,
/// so a hung one holds up nothing; it is not read again until it has answered). A failure is
/// reported once, until a read of it succeeds again; a controller that went away is forgotten.
fn probe_reads(root: &Path, sender: mpsc::Sender<HostObservation>) {
    let mut reported: BTreeMap<String, String> = BTreeMap::new();
    let mut hung: BTreeMap<String, mpsc::Receiver<Result<(), ProbeError>>> = BTreeMap::new();
    loop {
        std::thread::sleep(Duration::from_millis(READ_PROBE_MS));
        let controllers = sysfs::list(&sysfs::under(root, "sys/class/nvme")).unwrap_or_default();
        reported.retain(|name, _| controllers.contains(name));
        hung.retain(|name, read| {
            controllers.contains(name) && read.try_recv() == Err(mpsc::TryRecvError::Empty)
        });
        for name in &controllers {
            if hung.contains_key(name) {
                continue;
            }
            let Ok(address) = controller_address(root, name) else {
                continue;
            };
            let Some(namespace) = first_namespace(root, name) else {
                continue;
            };
            let path = sysfs::under(root, "dev").join(&namespace);
            let (done, read) = mpsc::channel();
            let reader = path.clone();
            if spawn("read-probe", move || {
                let _ = done.send(read_direct(&reader));
            })
            .is_err()
            {
                continue;
            }
            let timeout = Duration::from_millis(READ_PROBE_TIMEOUT_MS);
            let evidence = match read.recv_timeout(timeout) {
                Ok(Ok(())) => {
                    reported.remove(name);
                    continue;
                }
                // Not the drive's answer: it is going away (unbound or removed mid-probe).
                Ok(Err(ProbeError::Gone(_))) => continue,
                Ok(Err(ProbeError::Io(error))) => {
                    format!("read probe of {}: {error}", path.display())
                }
                Err(_) => {
                    hung.insert(name.clone(), read);
                    format!(
                        "read probe of {}: no answer within {READ_PROBE_TIMEOUT_MS} ms",
                        path.display()
                    )
                }
            };
            if reported.get(name) == Some(&evidence) {
                continue;
            }
            warn!(controller = name, %evidence, "NVMe read probe failed");
            reported.insert(name.clone(), evidence.clone());
            if (sender.send(HostObservation::NvmeReadFailed { address, evidence })).is_err() {
                return;
            }
        }
    }
}

/// How often the PCIe AER counters of every device in a hotplug slot are read.
pub const AER_POLL_MS: u64 = 1000;

/// Reads the uncorrectable AER counters of every device in a hotplug slot and of its port
/// ([`aer::read`]) each [`AER_POLL_MS`], and reports a device whose counts rose since the last
/// read, until the receiver is dropped (noticed at the next report). The first read of a device
/// is its baseline: a port's counters outlive the devices behind it, and an error the kernel
/// logged before the appliance looked is not news. Correctable errors are not read (the link
/// healed them). A device that left its slot is forgotten.
fn poll_aer(pci: &PciBus, root: &Path, sender: mpsc::Sender<HostObservation>) {
    let mut last: BTreeMap<PciAddress, AerCounts> = BTreeMap::new();
    let mut unreadable: BTreeMap<PciAddress, String> = BTreeMap::new();
    loop {
        std::thread::sleep(Duration::from_millis(AER_POLL_MS));
        let (Ok(slots), Ok(devices)) = (pci.slots(), pci.devices()) else {
            continue;
        };
        let slotted: Vec<PciAddress> = devices
            .iter()
            .filter(|d| slots.iter().any(|s| s.holds(d.address)))
            .map(|d| d.address)
            .collect();
        last.retain(|address, _| slotted.contains(address));
        unreadable.retain(|address, _| slotted.contains(address));
        for address in slotted {
            let counts = match aer::read(root, address) {
                Ok(Some(counts)) => counts,
                Ok(None) => continue,
                Err(error) => {
                    if unreadable.get(&address) != Some(&error) {
                        warn!(%address, %error, "AER counters unreadable; not judged by them");
                        unreadable.insert(address, error);
                    }
                    continue;
                }
            };
            let Some(before) = last.insert(address, counts.clone()) else {
                continue;
            };
            let rises = counts.rises_since(&before);
            if rises.is_empty() {
                continue;
            }
            let fatal = rises.iter().any(|rise| rise.starts_with("fatal:"));
            let evidence = format!(
                "AER counters (aer_dev_fatal, aer_dev_nonfatal) of {address} and its port: {}",
                rises.join(", ")
            );
            warn!(%address, fatal, %evidence, "PCIe uncorrectable errors");
            let observation = HostObservation::PcieUncorrectable {
                address,
                fatal,
                evidence,
            };
            if sender.send(observation).is_err() {
                return;
            }
        }
    }
}

/// The first namespace of controller `name` (`nvme0` -> `nvme0n1`), if it has one.
fn first_namespace(root: &Path, name: &str) -> Option<String> {
    let dir = sysfs::under(root, "sys/class/nvme").join(name);
    let mut namespaces: Vec<String> = sysfs::list(&dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|entry| {
            entry.strip_prefix(name).is_some_and(|rest| {
                rest.strip_prefix('n')
                    .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            })
        })
        .collect();
    namespaces.sort();
    namespaces.into_iter().next()
}

/// Why a read probe did not read.
#[derive(Debug, PartialEq)]
enum ProbeError {
    /// The namespace is going away (its node or its device is gone): nothing to say of the drive.
    Gone(String),
    /// The drive answered with an error (EIO; ENODATA for a medium error).
    Io(String),
}

/// One 4 KiB read at the start of `path`, bypassing the page cache (O_DIRECT, an aligned buffer).
fn read_direct(path: &Path) -> Result<(), ProbeError> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const BLOCK: usize = 4096;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| ProbeError::Gone(format!("open: {e}")))?;
    let mut buffer = vec![0u8; 2 * BLOCK];
    let offset = buffer.as_ptr().align_offset(BLOCK);
    let block = &mut buffer[offset..offset + BLOCK];
    file.read_exact_at(block, 0).map_err(|e| {
        let what = format!("read of {BLOCK} bytes at 0: {e}");
        match e.raw_os_error() {
            Some(libc::ENODEV | libc::ENXIO | libc::ENOENT) => ProbeError::Gone(what),
            _ => ProbeError::Io(what),
        }
    })
}

/// The network interfaces of PCI function `address`: `net/*` below it, or below its virtio
/// device (virtio-net registers its netdev on `virtioN`, a child of the PCI function).
fn interfaces_of(root: &Path, address: PciAddress) -> Vec<String> {
    let function = sysfs::under(root, &format!("sys/bus/pci/devices/{address}"));
    let mut parents = vec![function.clone()];
    for child in sysfs::list(&function).unwrap_or_default() {
        if child.starts_with("virtio") {
            parents.push(function.join(child));
        }
    }
    parents
        .iter()
        .flat_map(|parent| sysfs::list(&parent.join("net")).unwrap_or_default())
        .collect()
}

/// What a link change means to the host: the PCI function's link went up or down.
pub fn link_observation(event: &LinkEvent) -> Option<HostObservation> {
    Some(HostObservation::LinkChanged {
        address: event.address?,
        up: event.change.up,
    })
}

/// Forwards PCI add/remove uevents, and NVMe SMART critical warnings (on the kernel's NVME_AEN
/// change uevents), until the receiver is dropped.
fn observe(
    listener: UeventListener,
    pci: PciBus,
    root: PathBuf,
    sender: mpsc::Sender<HostObservation>,
) {
    loop {
        let event = match listener.recv_timeout(Duration::from_millis(RECHECK_MS)) {
            Ok(Some(event)) => event,
            Ok(None) => continue,
            Err(e) => {
                warn!(error = %e, "uevent receive failed or malformed; going on");
                continue;
            }
        };
        let Some(observation) = observation_of(&event, &pci, &root) else {
            continue;
        };
        if sender.send(observation).is_err() {
            return;
        }
    }
}

/// What a uevent means to the host: a PCI device added to or removed from a slot, or an NVMe
/// asynchronous event (NVME_AEN) after which the SMART log shows critical-warning bits.
pub fn observation_of(event: &Uevent, pci: &PciBus, root: &Path) -> Option<HostObservation> {
    match event.device_event()? {
        DeviceEvent::Pci {
            action, address, ..
        } => {
            let slot = pci.slot_of(address).ok().flatten().and_then(|s| s.number());
            match action {
                UeventAction::Add => Some(HostObservation::DeviceAdded { address, slot }),
                UeventAction::Remove => Some(HostObservation::DeviceRemoved { address, slot }),
                _ => None,
            }
        }
        DeviceEvent::Nvme {
            action: UeventAction::Change,
            name,
        } if event.vars.contains_key("NVME_AEN") => {
            critical_warning(root, &name).unwrap_or_else(|e| {
                warn!(error = %e, controller = name, "SMART read after an NVMe event failed");
                None
            })
        }
        _ => None,
    }
}

/// The SMART critical-warning bits of controller `name` (`nvme0`), as an observation when set.
fn critical_warning(root: &Path, name: &str) -> Result<Option<HostObservation>, String> {
    let (address, bits, _) = smart_bits(root, name)?;
    Ok((bits != 0).then_some(HostObservation::NvmeCriticalWarning { address, bits }))
}

/// The PCI address of controller `name`.
fn controller_address(root: &Path, name: &str) -> Result<PciAddress, String> {
    let link = sysfs::under(root, "sys/class/nvme")
        .join(name)
        .join("device");
    let target = sysfs::link_name(&link)
        .map_err(|e| e.to_string())?
        .ok_or(format!("{} missing", link.display()))?;
    target
        .parse()
        .map_err(|e| format!("{}: {e}", link.display()))
}

/// The PCI address of controller `name`, its SMART critical-warning bits and its media and
/// data integrity errors count.
fn smart_bits(root: &Path, name: &str) -> Result<(PciAddress, u8, u128), String> {
    let address = controller_address(root, name)?;
    let path = sysfs::under(root, "dev").join(name);
    let smart = NvmeController::open_best(&path)
        .and_then(|mut c| c.smart_log())
        .map_err(|e| e.to_string())?;
    Ok((address, smart.critical_warning, smart.media_errors))
}

/// How much `count`, controller `name`'s media errors now, rose since its last read in `last`
/// (recorded); None on its first read (the baseline: errors from before are not news) and when
/// it did not rise.
fn media_errors_rise(last: &mut BTreeMap<String, u128>, name: &str, count: u128) -> Option<u128> {
    let before = last.insert(name.to_string(), count)?;
    (count > before).then(|| count - before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_errors_count_from_their_first_read_and_only_a_rise_is_news() {
        let mut last = BTreeMap::new();
        assert_eq!(
            media_errors_rise(&mut last, "nvme0", 3),
            None,
            "the baseline"
        );
        assert_eq!(media_errors_rise(&mut last, "nvme0", 3), None);
        assert_eq!(media_errors_rise(&mut last, "nvme0", 5), Some(2));
        assert_eq!(media_errors_rise(&mut last, "nvme0", 5), None);
        assert_eq!(media_errors_rise(&mut last, "nvme1", 0), None);
        assert_eq!(media_errors_rise(&mut last, "nvme1", 1), Some(1));
    }

    #[test]
    fn the_first_namespace_of_a_controller_is_its_lowest_nvme_x_n_y() {
        let root = tempfile::tempdir().expect("tempdir");
        let controller = root.path().join("sys/class/nvme/nvme1");
        for entry in [
            "nvme1n2",
            "nvme1n1",
            "nvme1c1n1",
            "ng1n1",
            "device",
            "nvme1n",
        ] {
            std::fs::create_dir_all(controller.join(entry)).expect("mkdir");
        }
        assert_eq!(
            first_namespace(root.path(), "nvme1").as_deref(),
            Some("nvme1n1")
        );
        std::fs::create_dir_all(root.path().join("sys/class/nvme/nvme2/device")).expect("mkdir");
        assert_eq!(first_namespace(root.path(), "nvme2"), None, "no namespace");
    }

    #[test]
    fn a_probe_of_a_missing_namespace_says_it_is_gone_not_failing() {
        let root = tempfile::tempdir().expect("tempdir");
        let missing = root.path().join("dev/nvme9n1");
        assert!(matches!(read_direct(&missing), Err(ProbeError::Gone(_))));
    }
}
