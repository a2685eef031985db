//! Faults on demand: `qemu -- fault KIND DEVICE` injects one of the bench's faults into the VM
//! a running `qemu -- up` holds, so a person can watch the appliance react. `up` listens on
//! `faults.sock` in its run directory (mode 0600); a request is one line `KIND DEVICE`, the
//! answer one line `ok: WHAT` or `error: WHY`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use crate::switch::{Switch, SwitchError};

/// Longest request line read.
const REQUEST_BYTES_MAX: u64 = 256;

/// The faults a person can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultKind {
    /// Sets an NVMe drive's SMART critical-warning bits (0x04: reliability degraded).
    Smart,
    /// Clears them again.
    SmartClear,
    /// Pulls the device from its port without warning the guest (surprise removal).
    Remove,
    /// Takes a NIC's link down.
    LinkDown,
    /// Brings it up again.
    LinkUp,
    /// Makes an NVMe drive's reads fail with media errors.
    MediaErrors,
    /// An uncorrectable PCIe error (AER) on the device's slot.
    PcieError,
    /// The switch reports the link of the device's port down.
    PortDown,
    /// The switch reports it up again.
    PortUp,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Smart => "smart",
            FaultKind::SmartClear => "smart-clear",
            FaultKind::Remove => "remove",
            FaultKind::LinkDown => "link-down",
            FaultKind::LinkUp => "link-up",
            FaultKind::MediaErrors => "media-errors",
            FaultKind::PcieError => "pcie-error",
            FaultKind::PortDown => "port-down",
            FaultKind::PortUp => "port-up",
        }
    }

    pub fn parse(text: &str) -> Option<FaultKind> {
        <FaultKind as clap::ValueEnum>::value_variants()
            .iter()
            .copied()
            .find(|k| k.name() == text)
    }
}

/// Injects `kind` into `device`; says what was done.
pub fn inject(switch: &Switch, kind: FaultKind, device: &str) -> Result<String, SwitchError> {
    match kind {
        FaultKind::Smart => switch
            .set_smart_critical_warning(device, 0x04)
            .map(|()| format!("{device}: SMART critical warning 0x04 set")),
        FaultKind::SmartClear => switch
            .set_smart_critical_warning(device, 0)
            .map(|()| format!("{device}: SMART critical warning cleared")),
        FaultKind::Remove => switch
            .surprise_remove(device)
            .map(|port| format!("{device}: pulled from port {port}")),
        FaultKind::LinkDown => switch
            .set_nic_link(device, false)
            .map(|()| format!("{device}: link down")),
        FaultKind::LinkUp => switch
            .set_nic_link(device, true)
            .map(|()| format!("{device}: link up")),
        FaultKind::MediaErrors => switch
            .inject_media_errors(device)
            .map(|()| format!("{device}: reads now fail with media errors")),
        FaultKind::PcieError => switch
            .inject_pcie_error(device)
            .map(|()| format!("{device}: its root port reported a poisoned TLP (AER)")),
        FaultKind::PortDown => switch
            .set_port_link(device, false)
            .map(|port| format!("{device}: the switch reported port {port}'s link down")),
        FaultKind::PortUp => switch
            .set_port_link(device, true)
            .map(|port| format!("{device}: the switch reported port {port}'s link up")),
    }
}

/// Serves fault requests on `socket` for `switch`, on a thread of its own, for as long as the
/// process lives.
pub fn listen(socket: &Path, switch: Switch) -> std::io::Result<()> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("faults".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = answer(stream, &switch) {
                    tracing::warn!(error = %e, "fault request");
                }
            }
        })
        .map(drop)
}

fn answer(stream: UnixStream, switch: &Switch) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(std::io::Read::take(&stream, REQUEST_BYTES_MAX)).read_line(&mut line)?;
    let reply = match line.split_whitespace().collect::<Vec<_>>()[..] {
        [kind, device] => match FaultKind::parse(kind) {
            Some(kind) => match inject(switch, kind, device) {
                Ok(done) => format!("ok: {done}"),
                Err(e) => format!("error: {}", drivers::error_chain(&e)),
            },
            None => format!("error: no fault {kind:?}"),
        },
        _ => format!(
            "error: a request is `KIND DEVICE`, not {:?}",
            line.trim_end()
        ),
    };
    tracing::info!(request = line.trim_end(), reply, "fault");
    let mut stream = stream;
    stream.write_all(reply.as_bytes())?;
    stream.write_all(b"\n")
}

/// Sends one fault request to the `up` listening on `socket`; its answer.
pub fn send(socket: &Path, kind: FaultKind, device: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "connect to {}: is `qemu -- up` running (with this run directory)?",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    writeln!(stream, "{} {device}", kind.name())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    Ok(answer.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qmp::QmpError;
    use crate::switch::Hotplug;
    use serde_json::{Map, Value};
    use std::sync::{Arc, Mutex};

    /// Records the QMP commands the switch sends.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Hotplug for Recorder {
        fn device_add(&self, driver: &str, _: Map<String, Value>) -> Result<(), QmpError> {
            self.0.lock().unwrap().push(format!("device_add {driver}"));
            Ok(())
        }
        fn device_del(&self, id: &str, _: Option<Duration>) -> Result<(), QmpError> {
            self.0.lock().unwrap().push(format!("device_del {id}"));
            Ok(())
        }
        fn execute(&self, command: &str, arguments: Value) -> Result<Value, QmpError> {
            self.0
                .lock()
                .unwrap()
                .push(format!("{command} {arguments}"));
            Ok(Value::Null)
        }
    }

    #[test]
    fn a_request_on_the_socket_injects_the_fault_or_says_why_not() {
        let recorder = Arc::new(Recorder::default());
        let switch = Switch::new(&crate::BenchTopology::sample(), recorder.clone());
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("faults.sock");
        listen(&socket, switch.clone()).unwrap();
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let refused = send(&socket, FaultKind::Smart, "nvme-0").unwrap();
        assert!(
            refused.starts_with("error:") && refused.contains("nvme-0"),
            "{refused}"
        );
        switch.attach("nvme-0", 1).unwrap();
        let done = send(&socket, FaultKind::Smart, "nvme-0").unwrap();
        assert_eq!(done, "ok: nvme-0: SMART critical warning 0x04 set");
        let calls = recorder.0.lock().unwrap().clone();
        assert!(
            calls
                .iter()
                .any(|c| c.starts_with("qom-set") && c.contains("smart_critical_warning")),
            "{calls:?}"
        );
        let mut raw = UnixStream::connect(&socket).unwrap();
        raw.write_all(b"melt nvme-0\n").unwrap();
        let mut answer = String::new();
        BufReader::new(raw).read_line(&mut answer).unwrap();
        assert_eq!(answer.trim_end(), "error: no fault \"melt\"");
    }

    #[test]
    fn every_kind_parses_back_from_its_name() {
        for kind in <FaultKind as clap::ValueEnum>::value_variants() {
            assert_eq!(FaultKind::parse(kind.name()), Some(*kind));
        }
        assert_eq!(FaultKind::parse("melt"), None);
    }
}
