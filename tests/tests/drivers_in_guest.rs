//! The drivers on the real kernel: boots the image with `appliance.selftest=drivers`, answers
//! each `SELFTEST WAIT` line of `drivers::selftest::run_in_guest` through QMP (hot-add an NVMe,
//! inject a SMART critical warning, take the NIC's link down and up, hot-remove the NVMe), and
//! asserts that every step passed. The
//! guest's figures are printed and written to target/e2e/drivers_in_guest/figures.json.
//!
//! With `DRIVERS_SELFTEST_INIT=/path/to/static/selftest_init` the image's /init is that binary
//! (drivers/examples/selftest_init.rs, a minimal PID 1 that runs only the self-test) instead of
//! the appliance: the drivers can be tested on the real kernel independently of PID 1.
//! With `DRIVERS_RECORD_FIXTURES=/path/file.tree` the guest also prints its sysfs trees
//! (`drivers.record_fixtures=1`) and the test writes them there as a drivers fixture.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use drivers::selftest::{
    SELFTEST_CRITICAL_WARNING, SELFTEST_DEVICE_ID, SELFTEST_DRIVE_BYTES, SELFTEST_NETDEV_ID,
    SELFTEST_NETDEV_MAC, SELFTEST_SERIAL,
};
use qemu::{Vm, VmOptions};
use serde_json::{json, Map, Value};
use tests::{one_vm_at_a_time, options, tail, BOOT_TIMEOUT_MS};

/// The whole self-test, boot included, under TCG on a shared machine.
const SELFTEST_TIMEOUT_MS: u64 = 900_000;
const DRIVE_NODE: &str = "selftest-blk";
/// Steps that must have passed (the list).
const REQUIRED_STEPS: [&str; 12] = [
    "pci_enumerate",
    "hotplug_add",
    "nvme_identify_uring",
    "linux_host",
    "nvme_smart",
    "nvme_critical_warning",
    "rebind_vfio",
    "nvme_mount",
    "rdma_rxe",
    "link_monitor",
    "watchdog",
    "hotplug_remove",
];

/// Options for the VM: the appliance image, or one whose /init is `DRIVERS_SELFTEST_INIT`.
fn vm_options(name: &str) -> Result<VmOptions> {
    let Some(init) = std::env::var_os("DRIVERS_SELFTEST_INIT") else {
        return options(name);
    };
    let build = image::BuildOptions {
        appliance_binary: Some(init.into()),
        out_dir: image::workspace_dir().join("target/e2e/drivers-selftest-image"),
        ..image::BuildOptions::default()
    };
    let artifacts = image::build(&build).context("build the image around DRIVERS_SELFTEST_INIT")?;
    Ok(VmOptions::new(&artifacts, &tests::run_dir(name)?))
}

/// The text from "SELFTEST" on (the console may prefix kernel output on the same line).
fn selftest_part(line: &str) -> Option<&str> {
    line.find("SELFTEST ").map(|at| &line[at..])
}

/// Answers one WAIT line through QMP.
fn answer(vm: &Vm, run_dir: &Path, port: &str, wait: &str) -> Result<()> {
    let qmp = vm.qmp();
    let add = format!("device_add nvme id={SELFTEST_DEVICE_ID} serial={SELFTEST_SERIAL}");
    let qom =
        format!("qom-set {SELFTEST_DEVICE_ID} smart_critical_warning={SELFTEST_CRITICAL_WARNING}");
    let del = format!("device_del {SELFTEST_DEVICE_ID}");
    if wait == add {
        let drive = run_dir.join("selftest-nvme.img");
        qemu::vm::create_sparse(&drive, SELFTEST_DRIVE_BYTES)?;
        let file = json!({"driver": "file", "filename": drive.display().to_string()});
        qmp.execute(
            "blockdev-add",
            json!({"driver": "raw", "node-name": DRIVE_NODE, "file": file}),
        )?;
        let mut properties = Map::new();
        properties.insert("id".into(), SELFTEST_DEVICE_ID.into());
        properties.insert("serial".into(), SELFTEST_SERIAL.into());
        properties.insert("drive".into(), DRIVE_NODE.into());
        properties.insert("bus".into(), port.into());
        qmp.device_add("nvme", properties)?;
    } else if wait == qom {
        let path = format!("/machine/peripheral/{SELFTEST_DEVICE_ID}");
        qmp.qom_set(
            &path,
            "smart_critical_warning",
            json!(SELFTEST_CRITICAL_WARNING),
        )?;
    } else if wait == del {
        qmp.device_del(SELFTEST_DEVICE_ID, None)?;
    } else if let Some(rest) = wait.strip_prefix("set_link ") {
        let up = match rest.split_once(' ') {
            Some((SELFTEST_NETDEV_ID, "off")) => false,
            Some((SELFTEST_NETDEV_ID, "on")) => true,
            _ => {
                bail!("the guest asked for {wait:?}: expected set_link {SELFTEST_NETDEV_ID} on|off")
            }
        };
        qmp.set_link(SELFTEST_NETDEV_ID, up)?;
    } else {
        bail!("the guest asked for {wait:?}, which this test does not know");
    }
    Ok(())
}

/// Reads the console until DONE, answering WAITs; returns the SELFTEST lines.
fn drive(vm: &Vm, run_dir: &Path, port: &str) -> Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_millis(SELFTEST_TIMEOUT_MS);
    let mut from = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let is_event = |l: &str| {
            selftest_part(l)
                .is_some_and(|p| p.starts_with("SELFTEST WAIT ") || p.starts_with("SELFTEST DONE"))
        };
        let (at, line) = vm
            .console()
            .wait_until(from, is_event, "SELFTEST WAIT or DONE", left)
            .with_context(|| format!("console tail:\n{}", tail(vm)))?;
        from = at + 1;
        let part = selftest_part(&line).unwrap_or_default();
        if part.starts_with("SELFTEST DONE") {
            break;
        }
        let wait = part.trim_start_matches("SELFTEST WAIT ").trim();
        answer(vm, run_dir, port, wait)
            .with_context(|| format!("answering {wait:?}; console tail:\n{}", tail(vm)))?;
    }
    Ok(vm
        .console()
        .lines()
        .iter()
        .filter_map(|l| selftest_part(l).map(String::from))
        .collect())
}

#[test]
fn drivers_pass_their_selftest_in_the_guest() -> Result<()> {
    let _one = one_vm_at_a_time();
    ensure!(
        SELFTEST_NETDEV_MAC.eq_ignore_ascii_case(qemu::args::MGMT_MAC),
        "the guest looks for the NIC by MAC {SELFTEST_NETDEV_MAC}, the bench gives it {}",
        qemu::args::MGMT_MAC
    );
    let mut options = vm_options("drivers_in_guest")?;
    options.extra_cmdline = "appliance.selftest=drivers".into();
    let record = std::env::var_os("DRIVERS_RECORD_FIXTURES");
    if record.is_some() {
        options
            .extra_cmdline
            .push_str(&format!(" {}", drivers::selftest::RECORD_FLAG));
    }
    let run_dir = options.run_dir.clone();
    // The last fabric port: the bench attaches nothing there in self-test mode.
    let port = options
        .topology
        .ports
        .iter()
        .map(|p| p.id)
        .max()
        .context("the topology has ports")?;
    let port = qemu::args::root_port_id(port);
    let vm = Vm::launch(options)?;
    vm.console()
        .wait_for("SELFTEST STEP", Duration::from_millis(BOOT_TIMEOUT_MS))
        .with_context(|| format!("the self-test starts; console tail:\n{}", tail(&vm)))?;
    let lines = drive(&vm, &run_dir, &port)?;
    for line in &lines {
        println!("{line}");
    }
    let mut figures = BTreeMap::new();
    for line in &lines {
        let mut words = line.split_whitespace().skip(1);
        if let (Some("FIGURE"), Some(name), Some(value)) =
            (words.next(), words.next(), words.next())
        {
            figures.insert(
                name.to_string(),
                value
                    .parse::<u64>()
                    .with_context(|| format!("figure line {line:?}"))?,
            );
        }
    }
    std::fs::write(
        run_dir.join("figures.json"),
        serde_json::to_string_pretty(&figures)?,
    )?;
    if let Some(path) = record {
        let mut tree = String::from("# Recorded in the QEMU guest by tests/tests/drivers_in_guest.rs (DRIVERS_RECORD_FIXTURES).\n");
        // A kernel message printed in the middle of a line cuts it ("[   20.36] eth0 ..."): drop it.
        let cut = |l: &&str| l.contains('[') && l.contains("] ");
        for line in lines
            .iter()
            .filter_map(|l| l.strip_prefix("SELFTEST FIXTURE "))
            .filter(|l| !cut(l))
        {
            tree.push_str(line);
            tree.push('\n');
        }
        std::fs::write(&path, tree)
            .with_context(|| format!("write {}", Path::new(&path).display()))?;
    }
    let failed: Vec<_> = lines
        .iter()
        .filter(|l| l.starts_with("SELFTEST FAIL"))
        .collect();
    ensure!(
        failed.is_empty(),
        "the guest's self-test failed:\n{failed:#?}"
    );
    for step in REQUIRED_STEPS {
        let pass = format!("SELFTEST PASS {step}");
        ensure!(
            lines.iter().any(|l| l.starts_with(&pass)),
            "step {step} did not pass:\n{lines:#?}"
        );
    }
    let done = lines
        .iter()
        .find(|l| l.starts_with("SELFTEST DONE"))
        .context("DONE line")?;
    ensure!(done.ends_with("failed=0"), "{done}");
    for name in [
        "smart_uring_us",
        "smart_ioctl_us",
        "pci_enumerate_us",
        "hotplug_visible_ms",
    ] {
        ensure!(
            figures.contains_key(name),
            "figure {name} missing: {figures:?}"
        );
    }
    let figures: Value = serde_json::to_value(&figures)?;
    println!("figures: {figures}");
    Ok(())
}
