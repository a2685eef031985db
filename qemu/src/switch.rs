//! The emulated fabric switch: the pool of devices from the topology, which port each is attached
//! to, the JSON-lines protocol of `drivers::serial_fabric` served over the VM's virtio-serial link,
//! and fault injection for tests (surprise removal, SMART critical warning, NIC link down, media
//! errors, PCIe AER errors, and a port's link down as the switch itself reports it: an event
//! line to every connected link).
//!
//! Attach is a QMP `device_add` of the pool device on its port's root port; detach is a
//! `device_del` that waits until QEMU has removed the device (pciehp takes ~5 s to honour the
//! attention button; a device the server let go first, powering its slot off, QEMU removed at
//! once, and `device_del` finds nothing: detached).
//!
//! States of a port (the switch's truth, reported by `inventory`):
//!
//! | state    | attach d          | detach d            | surprise_remove  |
//! | -------- | ----------------- | ------------------- | ---------------- |
//! | empty    | device_add → d    | refused (empty)     | refused (empty)  |
//! | holds d  | refused (busy)    | device_del+wait → ∅ | device_del → ∅   |

use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use drivers::serial_fabric::{
    FabricReply, FabricRequest, RefusalKind, ReplyLine, RequestLine, LINE_BYTES_MAX,
};
use drivers::{error_chain, FabricEvent, FabricPort, Inventory};
use serde_json::{json, Map, Value};

use crate::args::{
    pool_block_node, pool_debug_node, pool_device_id, pool_file_node, pool_netdev_id, root_port_id,
    shelf_block_node, shelf_device_id,
};
use crate::qmp::{lists, Qmp, QmpError};
use crate::topology::{BenchDevice, BenchTopology, DeviceKind};

/// How long a detach waits for the guest to release the device.
pub const DETACH_TIMEOUT_MS: u64 = 30_000;

/// Errors of the switch's host-side API.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("the switch has no device {device:?}")]
    UnknownDevice { device: String },
    #[error("the switch has no port {port}")]
    UnknownPort { port: u16 },
    #[error("{operation} {device}: {reason}")]
    Refused {
        operation: &'static str,
        device: String,
        reason: String,
    },
    #[error("{operation} {device}: QMP")]
    Qmp {
        operation: &'static str,
        device: String,
        #[source]
        source: QmpError,
    },
}

/// What the switch needs of QEMU; QMP in the bench, a recorder in unit tests.
pub trait Hotplug: Send + Sync {
    fn device_add(&self, driver: &str, properties: Map<String, Value>) -> Result<(), QmpError>;
    fn device_del(&self, id: &str, wait: Option<Duration>) -> Result<(), QmpError>;
    fn execute(&self, command: &str, arguments: Value) -> Result<Value, QmpError>;
}

impl Hotplug for Qmp {
    fn device_add(&self, driver: &str, properties: Map<String, Value>) -> Result<(), QmpError> {
        Qmp::device_add(self, driver, properties)
    }
    fn device_del(&self, id: &str, wait: Option<Duration>) -> Result<(), QmpError> {
        Qmp::device_del(self, id, wait)
    }
    fn execute(&self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        Qmp::execute(self, command, arguments)
    }
}

/// The switch; cheap to clone, shared by the link's thread and the host-side API.
#[derive(Clone)]
pub struct Switch {
    state: Arc<Mutex<State>>,
    qemu: Arc<dyn Hotplug>,
}

impl std::fmt::Debug for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Switch")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct State {
    devices: Vec<BenchDevice>,
    ports: Vec<FabricPort>,
    /// Ports whose device was pulled without waiting for QEMU to delete it (port -> QEMU id):
    /// QEMU keeps it on the root port until the guest has powered the slot off.
    draining: std::collections::BTreeMap<u16, String>,
    /// The connected links' writers, where replies and the switch's own reports go (one line
    /// at a time under the lock, so a report never cuts a reply in half).
    links: Links,
}

/// The connected links (Debug shows how many).
#[derive(Default, Clone)]
struct Links(Vec<LinkOut>);

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} link(s)", self.0.len())
    }
}

/// Where one connected link's lines are written.
pub type LinkOut = Arc<Mutex<dyn Write + Send>>;

/// Writes `line` and a newline to `out`; false when the link is gone.
fn send_line(out: &LinkOut, line: &impl serde::Serialize) -> bool {
    let mut text = serde_json::to_string(line).unwrap_or_default();
    text.push('\n');
    let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_ok()
}

impl Switch {
    pub fn new(topology: &BenchTopology, qemu: Arc<dyn Hotplug>) -> Switch {
        let state = State {
            devices: topology.devices.clone(),
            ports: topology.ports.clone(),
            draining: Default::default(),
            links: Links::default(),
        };
        Switch {
            state: Arc::new(Mutex::new(state)),
            qemu,
        }
    }

    /// The pool and ports as the switch sees them now.
    pub fn inventory(&self) -> Inventory {
        let state = self.lock();
        Inventory {
            devices: state.devices.iter().map(|d| d.pool.clone()).collect(),
            ports: state.ports.clone(),
        }
    }

    /// Attaches `device` to `port` (QMP device_add on the port's root port).
    pub fn attach(&self, device: &str, port: u16) -> Result<(), SwitchError> {
        let _span = tracing::info_span!("switch_attach", device, port).entered();
        self.drained(device, port)?;
        let mut state = self.lock();
        let (d, p) = state.find(device, port)?;
        if let Some(other) = &state.ports[p].attached {
            return Err(refused(
                "attach",
                device,
                format!("port {port} already holds {other}"),
            ));
        }
        if let Some(at) = state.devices[d].pool.attached_port {
            return Err(refused(
                "attach",
                device,
                format!("it is attached to port {at}"),
            ));
        }
        let (driver, properties) = device_properties(&state.devices[d], port);
        let qmp = |source| SwitchError::Qmp {
            operation: "attach",
            device: device.into(),
            source,
        };
        self.qemu.device_add(driver, properties).map_err(qmp)?;
        // An HBA's shelf disks go behind it before the guest sees the slot power on (pciehp
        // takes a second), so that its driver finds them at its first scan.
        for (target, disk) in state.devices[d].disks.iter().enumerate() {
            if let Err(e) = self
                .qemu
                .device_add("scsi-hd", shelf_disk_properties(device, disk, target))
            {
                let _ = self
                    .qemu
                    .device_del(&pool_device_id(device), Some(Duration::from_secs(10)));
                return Err(qmp(e));
            }
        }
        state.devices[d].pool.attached_port = Some(port);
        state.ports[p].attached = Some(device.to_string());
        Ok(())
    }

    /// Waits until QEMU has deleted what was pulled from `port` (a root port holds one device:
    /// a new one added beside the old would take another function the guest never scans), and,
    /// for an HBA, until no other HBA holds its shelf disks (a disk's backend serves one device:
    /// behind a pulled HBA they go only when QEMU deletes it, after the guest's pciehp).
    fn drained(&self, device: &str, port: u16) -> Result<(), SwitchError> {
        let (mut held, disks_holders) = {
            let state = self.lock();
            let held: Vec<String> = state.draining.get(&port).cloned().into_iter().collect();
            let mut holders = Vec::new();
            if let Some(me) = state.devices.iter().find(|d| d.pool.id == device) {
                for disk in &me.disks {
                    for other in state.devices.iter().filter(|o| o.pool.id != device) {
                        if other.disks.contains(disk) {
                            holders.push(shelf_device_id(&other.pool.id, disk));
                        }
                    }
                }
            }
            (held, holders)
        };
        held.extend(disks_holders);
        if held.is_empty() {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + Duration::from_millis(DETACH_TIMEOUT_MS);
        loop {
            let listed = self
                .qemu
                .execute("qom-list", json!({"path": "/machine/peripheral"}))
                .map_err(|source| SwitchError::Qmp {
                    operation: "attach",
                    device: device.into(),
                    source,
                })?;
            let present: Vec<&String> = held.iter().filter(|name| lists(&listed, name)).collect();
            if present.is_empty() {
                self.lock().draining.remove(&port);
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(refused(
                    "attach",
                    device,
                    format!(
                        "port {port} or its shelf is still held by {present:?}, pulled but not yet deleted by QEMU"
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Detaches `device` from `port` and waits until QEMU has removed it.
    pub fn detach(&self, device: &str, port: u16) -> Result<(), SwitchError> {
        let _span = tracing::info_span!("switch_detach", device, port).entered();
        self.remove(device, port, Some(Duration::from_millis(DETACH_TIMEOUT_MS)))
    }

    /// Fault: the device disappears from its port without waiting for the guest's consent (the
    /// switch forgets it at once; the guest sees the slot empty once pciehp has run).
    pub fn surprise_remove(&self, device: &str) -> Result<u16, SwitchError> {
        let port = self.attached_port(device, "surprise_remove")?;
        self.remove(device, port, None)?;
        self.lock().draining.insert(port, pool_device_id(device));
        Ok(port)
    }

    /// Fault: sets the NVMe drive's SMART critical-warning bits.
    pub fn set_smart_critical_warning(&self, device: &str, bits: u8) -> Result<(), SwitchError> {
        self.attached_port(device, "smart_critical_warning")?;
        let path = format!("/machine/peripheral/{}", pool_device_id(device));
        let arguments = json!({"path": path, "property": "smart_critical_warning", "value": bits});
        self.qmp("smart_critical_warning", device, "qom-set", arguments)
    }

    /// Fault: the NIC's link goes down (or up again).
    pub fn set_nic_link(&self, device: &str, up: bool) -> Result<(), SwitchError> {
        self.attached_port(device, "set_link")?;
        self.qmp(
            "set_link",
            device,
            "set_link",
            json!({"name": pool_device_id(device), "up": up}),
        )
    }

    /// Fault: an uncorrectable non-fatal PCIe error (a poisoned TLP) reported by the root port of
    /// the device's slot, through the monitor's `pcie_aer_inject_error` (QEMU's emulated NVMe,
    /// NICs and GPU stand-ins have no AER capability; the root ports do). The guest's AER driver
    /// logs it, recovers the link and counts it in the port's `aer_dev_nonfatal`.
    pub fn inject_pcie_error(&self, device: &str) -> Result<(), SwitchError> {
        let port = self.attached_port(device, "pcie_aer_inject_error")?;
        let command = format!("pcie_aer_inject_error {} POISON_TLP", root_port_id(port));
        let fail = |reason: String| refused("inject a PCIe error", device, reason);
        let output = self
            .qemu
            .execute("human-monitor-command", json!({"command-line": command}))
            .map_err(|source| SwitchError::Qmp {
                operation: "pcie_aer_inject_error",
                device: device.into(),
                source,
            })?;
        // HMP answers in text: "OK id: rp2 root bus: 0000:00, bus: 0 devfn: 2.0" on success,
        // the reason otherwise.
        match output.as_str().map(str::trim) {
            Some(text) if text.starts_with("OK") => Ok(()),
            text => Err(fail(format!("{command}: {}", text.unwrap_or("no answer")))),
        }
    }

    /// Fault: media errors (EIO) on an NVMe drive from its next read on ([`inject_media_errors`]).
    pub fn inject_media_errors(&self, device: &str) -> Result<(), SwitchError> {
        let found = {
            let state = self.lock();
            state.devices.iter().find(|d| d.pool.id == device).cloned()
        };
        let found = found.ok_or_else(|| SwitchError::UnknownDevice {
            device: device.into(),
        })?;
        if found.kind != DeviceKind::Nvme {
            return Err(refused(
                "inject media errors",
                device,
                "it is not an NVMe drive".into(),
            ));
        }
        inject_media_errors(self.qemu.as_ref(), &found)
    }

    fn qmp(
        &self,
        operation: &'static str,
        device: &str,
        command: &str,
        arguments: Value,
    ) -> Result<(), SwitchError> {
        self.qemu
            .execute(command, arguments)
            .map(drop)
            .map_err(|source| SwitchError::Qmp {
                operation,
                device: device.into(),
                source,
            })
    }

    fn attached_port(&self, device: &str, operation: &'static str) -> Result<u16, SwitchError> {
        let state = self.lock();
        let found = state.devices.iter().find(|d| d.pool.id == device);
        let found = found.ok_or_else(|| SwitchError::UnknownDevice {
            device: device.into(),
        })?;
        found
            .pool
            .attached_port
            .ok_or_else(|| refused(operation, device, "it is not attached".into()))
    }

    fn remove(&self, device: &str, port: u16, wait: Option<Duration>) -> Result<(), SwitchError> {
        let mut state = self.lock();
        let (d, p) = state.find(device, port)?;
        if state.ports[p].attached.as_deref() != Some(device) {
            let holds = state.ports[p]
                .attached
                .clone()
                .unwrap_or_else(|| "nothing".into());
            return Err(refused(
                "detach",
                device,
                format!("port {port} holds {holds}"),
            ));
        }
        match self.qemu.device_del(&pool_device_id(device), wait) {
            // QEMU deleted it already: the server powered its slot off (an orderly removal).
            Err(QmpError::Command { class, .. }) if class == "DeviceNotFound" => {}
            Err(source) => {
                return Err(SwitchError::Qmp {
                    operation: "detach",
                    device: device.into(),
                    source,
                })
            }
            Ok(()) => {}
        }
        state.devices[d].pool.attached_port = None;
        state.ports[p].attached = None;
        Ok(())
    }

    /// Answers one protocol request.
    pub fn handle(&self, request: FabricRequest) -> FabricReply {
        let outcome = match &request {
            FabricRequest::Inventory => {
                return FabricReply::Inventory {
                    inventory: self.inventory(),
                }
            }
            FabricRequest::Attach { device, port } => self.attach(device, *port),
            FabricRequest::Detach { device, port } => self.detach(device, *port),
        };
        match outcome {
            Ok(()) => FabricReply::Done,
            Err(e) => {
                let kind = match e {
                    SwitchError::UnknownDevice { .. } => RefusalKind::UnknownDevice,
                    SwitchError::UnknownPort { .. } => RefusalKind::UnknownPort,
                    SwitchError::Refused { .. } | SwitchError::Qmp { .. } => RefusalKind::Refused,
                };
                FabricReply::Error {
                    kind,
                    reason: error_chain(&e),
                }
            }
        }
    }

    /// Serves the protocol on `stream` (the VM's fabric link) until it closes; replies and the
    /// switch's reports are written to `out`.
    pub fn serve(&self, stream: impl std::io::Read, out: LinkOut) {
        self.lock().links.0.push(out.clone());
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            let limit = u64::try_from(LINE_BYTES_MAX).unwrap_or(u64::MAX);
            match std::io::Read::take(std::io::Read::by_ref(&mut reader), limit)
                .read_line(&mut line)
            {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let reply = match serde_json::from_str::<RequestLine>(line.trim_end()) {
                Ok(request) => ReplyLine {
                    id: request.id,
                    reply: self.handle(request.request),
                },
                Err(e) => ReplyLine {
                    id: 0,
                    reply: FabricReply::Error {
                        kind: RefusalKind::BadRequest,
                        reason: format!("unreadable request: {e}"),
                    },
                },
            };
            if !send_line(&out, &reply) {
                break;
            }
        }
        self.lock().links.0.retain(|link| !Arc::ptr_eq(link, &out));
    }

    /// Fault: the link of `device`'s port goes down (or comes up again), and the switch says so
    /// on every connected link, as a fabric switch reports a port's link change on its own. The
    /// device stays where it is (the switch's report is the fault); returns the port.
    pub fn set_port_link(&self, device: &str, up: bool) -> Result<u16, SwitchError> {
        let port = self.attached_port(device, "port_link")?;
        let reason = match up {
            true => "link up",
            false => "surprise down (injected)",
        };
        let event = FabricEvent::PortLink {
            port,
            up,
            reason: reason.into(),
        };
        let links = self.lock().links.0.clone();
        if links.is_empty() {
            return Err(refused(
                "report a port's link",
                device,
                "no link is connected to hear it".into(),
            ));
        }
        for link in &links {
            send_line(link, &event);
        }
        Ok(port)
    }

    /// Serves the link on a thread.
    pub fn spawn_server(
        &self,
        stream: std::os::unix::net::UnixStream,
    ) -> std::io::Result<thread::JoinHandle<()>> {
        let switch = self.clone();
        let out: LinkOut = Arc::new(Mutex::new(stream.try_clone()?));
        thread::Builder::new()
            .name("fabric-switch".into())
            .spawn(move || switch.serve(stream, out))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn find(&self, device: &str, port: u16) -> Result<(usize, usize), SwitchError> {
        let d = self.devices.iter().position(|d| d.pool.id == device);
        let d = d.ok_or_else(|| SwitchError::UnknownDevice {
            device: device.into(),
        })?;
        let p = self
            .ports
            .iter()
            .position(|p| p.id == port)
            .ok_or(SwitchError::UnknownPort { port })?;
        Ok((d, p))
    }
}

fn refused(operation: &'static str, device: &str, reason: String) -> SwitchError {
    SwitchError::Refused {
        operation,
        device: device.into(),
        reason,
    }
}

/// The QMP `device_add` of shelf disk `disk` behind HBA `hba`, at SCSI target `target`.
pub fn shelf_disk_properties(hba: &str, disk: &str, target: usize) -> Map<String, Value> {
    let mut properties = Map::new();
    properties.insert("id".into(), shelf_device_id(hba, disk).into());
    properties.insert("drive".into(), shelf_block_node(disk).into());
    properties.insert("bus".into(), format!("{}.0", pool_device_id(hba)).into());
    properties.insert("scsi-id".into(), target.into());
    properties.insert("serial".into(), disk.into());
    properties
}

/// The QMP `device_add` of a pool device on fabric port `port`.
pub fn device_properties(device: &BenchDevice, port: u16) -> (&'static str, Map<String, Value>) {
    let id = &device.pool.id;
    let mut properties = Map::new();
    properties.insert("id".into(), pool_device_id(id).into());
    properties.insert("bus".into(), root_port_id(port).into());
    let driver = match device.kind {
        DeviceKind::Nvme => {
            properties.insert("drive".into(), pool_block_node(id).into());
            properties.insert("serial".into(), device.pool.serial.clone().into());
            "nvme"
        }
        DeviceKind::Nic => {
            properties.insert("netdev".into(), pool_netdev_id(id).into());
            "virtio-net-pci"
        }
        DeviceKind::Gpu => "bochs-display",
        DeviceKind::Hba => "virtio-scsi-pci",
    };
    (driver, properties)
}

/// Fault: media errors (EIO) on the NVMe drive's I/O from its next read on: a second blkdebug
/// node with an inject-error rule (armed by the `read_aio` event, which the raw format raises on
/// every read) is added over the drive's file, and the drive's raw node is reopened onto it
/// (blkdebug cannot change rules on reopen).
pub fn inject_media_errors(qemu: &dyn Hotplug, device: &BenchDevice) -> Result<(), SwitchError> {
    let id = &device.pool.id;
    let fail = |source| SwitchError::Qmp {
        operation: "inject media errors",
        device: id.clone(),
        source,
    };
    let faulty = format!("{}-faulty", pool_debug_node(id));
    let add = json!({
        "driver": "blkdebug",
        "node-name": faulty,
        "image": pool_file_node(id),
        "inject-error": [{"event": "read_aio", "errno": 5, "immediately": true}],
    });
    qemu.execute("blockdev-add", add).map_err(fail)?;
    let reopen =
        json!({"options": [{"driver": "raw", "node-name": pool_block_node(id), "file": faulty}]});
    qemu.execute("blockdev-reopen", reopen)
        .map(drop)
        .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records QMP calls; refuses device_add when told to.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
        refuse_add: bool,
        /// device_del finds nothing (QEMU removed the device when the guest powered it off).
        gone: bool,
    }

    impl Hotplug for Recorder {
        fn device_add(&self, driver: &str, properties: Map<String, Value>) -> Result<(), QmpError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("add {driver} {}", Value::Object(properties)));
            if self.refuse_add {
                return Err(QmpError::Command {
                    command: "device_add".into(),
                    class: "GenericError".into(),
                    desc: "no".into(),
                });
            }
            Ok(())
        }
        fn device_del(&self, id: &str, wait: Option<Duration>) -> Result<(), QmpError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("del {id} wait={}", wait.is_some()));
            if self.gone {
                return Err(QmpError::Command {
                    command: "device_del".into(),
                    class: "DeviceNotFound".into(),
                    desc: format!("Device '{id}' not found"),
                });
            }
            Ok(())
        }
        fn execute(&self, command: &str, arguments: Value) -> Result<Value, QmpError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("{command} {arguments}"));
            match command {
                // What QEMU's HMP answers a successful AER injection.
                "human-monitor-command" => Ok(json!("OK id: rp2 root bus: 0000:00, bus: 0")),
                _ => Ok(Value::Null),
            }
        }
    }

    fn switch(refuse_add: bool) -> (Switch, Arc<Recorder>) {
        let recorder = Arc::new(Recorder {
            refuse_add,
            ..Recorder::default()
        });
        (
            Switch::new(&BenchTopology::sample(), recorder.clone()),
            recorder,
        )
    }

    #[test]
    fn attach_then_detach_follows_the_port_table() {
        let (switch, recorder) = switch(false);
        switch.attach("nvme-0", 2).unwrap();
        let inventory = switch.inventory();
        assert_eq!(inventory.ports[1].attached.as_deref(), Some("nvme-0"));
        assert_eq!(inventory.devices[0].attached_port, Some(2));
        let busy = switch.attach("gpu-0", 2).unwrap_err();
        assert!(
            busy.to_string().contains("port 2 already holds nvme-0"),
            "{busy}"
        );
        let twice = switch.attach("nvme-0", 3).unwrap_err();
        assert!(twice.to_string().contains("attached to port 2"), "{twice}");
        switch.detach("nvme-0", 2).unwrap();
        let empty = switch.detach("nvme-0", 2).unwrap_err();
        assert!(
            empty.to_string().contains("port 2 holds nothing"),
            "{empty}"
        );
        let calls = recorder.calls.lock().unwrap();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert!(calls[0].starts_with("add nvme "), "{}", calls[0]);
        assert!(
            calls[0].contains(r#""bus":"rp2""#) && calls[0].contains(r#""serial":"POOLNVME0000""#),
            "{}",
            calls[0]
        );
        assert_eq!(calls[1], "del pool-nvme-0 wait=true");
    }

    #[test]
    fn a_device_qemu_already_removed_is_detached() {
        let recorder = Arc::new(Recorder {
            gone: true,
            ..Recorder::default()
        });
        let switch = Switch::new(&BenchTopology::sample(), recorder.clone());
        switch.attach("nvme-0", 2).unwrap();
        switch.detach("nvme-0", 2).unwrap();
        let inventory = switch.inventory();
        assert_eq!(inventory.ports[1].attached, None);
        assert_eq!(inventory.devices[0].attached_port, None);
    }

    #[test]
    fn a_failed_device_add_leaves_the_port_empty() {
        let (switch, _) = switch(true);
        let reply = switch.handle(FabricRequest::Attach {
            device: "gpu-0".into(),
            port: 1,
        });
        assert!(
            matches!(&reply, FabricReply::Error { kind: RefusalKind::Refused, reason } if reason.contains("GenericError")),
            "{reply:?}"
        );
        assert_eq!(switch.inventory().ports[0].attached, None);
    }

    #[test]
    fn unknown_names_are_typed_refusals() {
        let (switch, _) = switch(false);
        let reply = switch.handle(FabricRequest::Attach {
            device: "gpu-9".into(),
            port: 1,
        });
        assert!(
            matches!(
                reply,
                FabricReply::Error {
                    kind: RefusalKind::UnknownDevice,
                    ..
                }
            ),
            "{reply:?}"
        );
        let reply = switch.handle(FabricRequest::Detach {
            device: "gpu-0".into(),
            port: 99,
        });
        assert!(
            matches!(
                reply,
                FabricReply::Error {
                    kind: RefusalKind::UnknownPort,
                    ..
                }
            ),
            "{reply:?}"
        );
    }

    #[test]
    fn faults_need_an_attached_device_and_use_its_qom_path() {
        let (switch, recorder) = switch(false);
        assert!(switch.set_smart_critical_warning("nvme-0", 1).is_err());
        switch.attach("nvme-0", 1).unwrap();
        switch.set_smart_critical_warning("nvme-0", 0x04).unwrap();
        switch.attach("nic-0", 3).unwrap();
        switch.set_nic_link("nic-0", false).unwrap();
        assert_eq!(switch.surprise_remove("nvme-0").unwrap(), 1);
        let calls = recorder.calls.lock().unwrap();
        assert!(
            calls[1].contains("/machine/peripheral/pool-nvme-0")
                && calls[1].contains("smart_critical_warning")
        );
        assert!(
            calls[3].starts_with("set_link") && calls[3].contains(r#""up":false"#),
            "{}",
            calls[3]
        );
        assert_eq!(calls[4], "del pool-nvme-0 wait=false");
    }

    #[test]
    fn a_port_down_is_reported_on_every_connected_link() {
        let (switch, _) = switch(false);
        switch.attach("nvme-0", 2).unwrap();
        assert!(
            switch.set_port_link("nvme-0", false).is_err(),
            "no link to hear it"
        );
        let out = Arc::new(Mutex::new(Vec::new()));
        switch.lock().links.0.push(out.clone());
        assert!(
            switch.set_port_link("gpu-0", false).is_err(),
            "not attached"
        );
        assert_eq!(switch.set_port_link("nvme-0", false).unwrap(), 2);
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "{\"event\":\"port_link\",\"port\":2,\"up\":false,\"reason\":\"surprise down (injected)\"}\n"
        );
        assert_eq!(
            switch.inventory().ports[1].attached.as_deref(),
            Some("nvme-0")
        );
    }

    #[test]
    fn a_pcie_error_is_injected_at_the_root_port_of_the_devices_slot() {
        let (switch, recorder) = switch(false);
        assert!(switch.inject_pcie_error("nvme-0").is_err(), "not attached");
        switch.attach("nvme-0", 2).unwrap();
        switch.inject_pcie_error("nvme-0").unwrap();
        let calls = recorder.calls.lock().unwrap();
        assert_eq!(
            calls.last().unwrap(),
            r#"human-monitor-command {"command-line":"pcie_aer_inject_error rp2 POISON_TLP"}"#
        );
    }

    #[test]
    fn serves_the_protocol_over_a_stream() {
        let (switch, _) = switch(false);
        let input = concat!(
            r#"{"id":1,"op":"attach","device":"gpu-0","port":4}"#,
            "\n",
            "garbage\n",
            r#"{"id":2,"op":"inventory"}"#,
            "\n"
        );
        let out = Arc::new(Mutex::new(Vec::new()));
        switch.serve(input.as_bytes(), out.clone());
        assert!(
            switch.lock().links.0.is_empty(),
            "a closed link is forgotten"
        );
        let replies: Vec<ReplyLine> = String::from_utf8(out.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            replies[0],
            ReplyLine {
                id: 1,
                reply: FabricReply::Done
            }
        );
        assert!(matches!(
            replies[1].reply,
            FabricReply::Error {
                kind: RefusalKind::BadRequest,
                ..
            }
        ));
        let FabricReply::Inventory { inventory } = &replies[2].reply else {
            panic!("{:?}", replies[2])
        };
        assert_eq!(inventory.ports[3].attached.as_deref(), Some("gpu-0"));
    }
}
