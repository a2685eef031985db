//! The QMP client and the switch against a real qemu-system-x86_64: a paused q35 machine with
//! native-hotplug root ports, where devices are hot-added and removed and events are awaited.

use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use qemu::args::pool_device_id;
use qemu::{BenchTopology, Qmp, Switch};
use serde_json::{json, Map, Value};

/// A paused VM; killed on drop.
struct Paused {
    child: Child,
    qmp: Arc<Qmp>,
    _dir: tempfile::TempDir,
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[String]) -> Paused {
    let qemu = qemu::host::ensure_qemu().expect("qemu-system-x86_64 is installed");
    let dir = tempfile::tempdir().expect("tempdir");
    let output = std::fs::File::create(dir.path().join("qemu.out")).expect("create qemu.out");
    let socket = dir.path().join("qmp.sock");
    let listener = UnixListener::bind(&socket).expect("bind the QMP socket");
    let child = Command::new(qemu)
        .args([
            "-machine",
            "q35",
            "-accel",
            "tcg",
            "-nodefaults",
            "-display",
            "none",
            "-S",
        ])
        .args([
            "-global",
            "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off",
        ])
        .args([
            "-chardev",
            &format!("socket,id=qmp0,path={}", socket.display()),
            "-mon",
            "chardev=qmp0,mode=control",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("clone"))
        .stderr(output)
        .process_group(0)
        .spawn()
        .expect("start qemu");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(listener.accept().map(|(stream, _)| stream));
    });
    let stream = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("QEMU connects its QMP socket")
        .expect("accept");
    let qmp = Qmp::handshake(stream, Duration::from_secs(10)).expect("QMP handshake");
    Paused {
        child,
        qmp: Arc::new(qmp),
        _dir: dir,
    }
}

#[test]
fn status_device_add_and_errors() {
    let vm = start(&[
        "-device".into(),
        "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1".into(),
    ]);
    assert_eq!(vm.qmp.status().unwrap(), "prelaunch");
    let mut properties = Map::new();
    properties.insert("id".into(), json!("gpu"));
    properties.insert("bus".into(), json!("rp1"));
    vm.qmp
        .device_add("bochs-display", properties.clone())
        .unwrap();
    let again = vm.qmp.device_add("bochs-display", properties).unwrap_err();
    assert!(again.to_string().contains("device_add failed"), "{again}");
    let vendor = vm.qmp.qom_get("/machine/peripheral/gpu", "type").unwrap();
    assert_eq!(vendor, json!("bochs-display"));
    let unknown = vm.qmp.execute("no-such-command", Value::Null).unwrap_err();
    assert!(unknown.to_string().contains("CommandNotFound"), "{unknown}");
}

#[test]
fn the_switch_hot_adds_nvme_and_sets_smart_warning() {
    let topology = BenchTopology::sample();
    let dir = tempfile::tempdir().unwrap();
    let paths = qemu::RunPaths::new(dir.path());
    std::fs::create_dir_all(&paths.pool).unwrap();
    let mut extra = Vec::new();
    for port in &topology.ports {
        extra.push("-device".to_string());
        extra.push(format!(
            "pcie-root-port,id=rp{0},bus=pcie.0,chassis={0},slot={1}",
            port.id, port.slot
        ));
    }
    for device in topology
        .devices
        .iter()
        .filter(|d| d.kind == qemu::DeviceKind::Nvme)
    {
        qemu::vm::create_sparse(
            &paths.pool_disk(&device.pool.id),
            device.pool.capacity_bytes,
        )
        .unwrap();
        let node = json!({"driver": "raw", "node-name": qemu::args::pool_block_node(&device.pool.id),
            "file": {"driver": "blkdebug", "node-name": qemu::args::pool_debug_node(&device.pool.id),
                     "image": {"driver": "file", "node-name": qemu::args::pool_file_node(&device.pool.id),
                               "filename": paths.pool_disk(&device.pool.id)}}});
        extra.push("-blockdev".into());
        extra.push(node.to_string());
    }
    extra.push("-netdev".into());
    extra.push("user,id=pool-nic-0-net,restrict=on".into());
    let vm = start(&extra);
    let switch = Switch::new(&topology, vm.qmp.clone());
    switch.attach("nvme-0", 1).unwrap();
    switch.attach("gpu-0", 2).unwrap();
    switch.attach("nic-0", 3).unwrap();
    let path = format!("/machine/peripheral/{}", pool_device_id("nvme-0"));
    assert_eq!(
        vm.qmp.qom_get(&path, "serial").unwrap(),
        json!("POOLNVME0000")
    );
    switch.set_smart_critical_warning("nvme-0", 0x04).unwrap();
    assert_eq!(
        vm.qmp.qom_get(&path, "smart_critical_warning").unwrap(),
        json!(4)
    );
    switch.set_nic_link("nic-0", false).unwrap();
    let inventory = switch.inventory();
    assert_eq!(inventory.ports[0].attached.as_deref(), Some("nvme-0"));
    let busy = switch.attach("nvme-1", 1).unwrap_err();
    assert!(busy.to_string().contains("already holds"), "{busy}");

    // qemu-io (through HMP) prints its outcome on QEMU's stdout.
    let out = vm._dir.path().join("qemu.out");
    let io = |command: &str| {
        let line = format!("qemu-io -d {} \"{command}\"", pool_device_id("nvme-0"));
        vm.qmp
            .execute("human-monitor-command", json!({"command-line": line}))
            .unwrap();
        std::fs::read_to_string(&out).unwrap()
    };
    let before = io("write 0 4k");
    assert!(
        before.contains("wrote 4096/4096 bytes") && !before.contains("Input/output error"),
        "{before}"
    );
    assert!(
        switch.inject_media_errors("gpu-0").is_err(),
        "only NVMe drives have media"
    );
    // Reads fail from the fault on (what the appliance's read probe meets).
    let read = io("read 0 4k");
    assert!(
        read.contains("read 4096/4096 bytes") && !read.contains("Input/output error"),
        "{read}"
    );
    switch.inject_media_errors("nvme-0").unwrap();
    let after = io("read 0 4k");
    assert!(after.contains("Input/output error"), "{after}");
}
