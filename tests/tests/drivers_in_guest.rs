//! The drivers on the real kernel: boots the image with `appliance.selftest=drivers`, lets
//! `qemu::run_driver_selftest` answer each `SELFTEST WAIT` line of `drivers::selftest::run_in_guest`
//! through QMP (hot-add an NVMe, inject a SMART critical warning, take the NIC's link down and up,
//! hot-remove the NVMe), and asserts that every required step passed. The
//! guest's figures are printed and written to target/e2e/drivers_in_guest/figures.json.
//!
//! With `DRIVERS_SELFTEST_INIT=/path/to/static/selftest_init` the image's /init is that binary
//! (drivers/examples/selftest_init.rs, a minimal PID 1 that runs only the self-test) instead of
//! the appliance: the drivers can be tested on the real kernel independently of PID 1.
//! With `DRIVERS_RECORD_FIXTURES=/path/file.tree` the guest also prints its sysfs trees
//! (`drivers.record_fixtures=1`) and the test writes them there as a drivers fixture.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use drivers::selftest::SELFTEST_NETDEV_MAC;
use qemu::{Vm, VmOptions};
use serde_json::Value;
use tests::{one_vm_at_a_time, options, tail, BOOT_TIMEOUT_MS};

/// The whole self-test, boot included, under TCG on a shared machine.
const SELFTEST_TIMEOUT_MS: u64 = 900_000;
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
    let deadline = Instant::now() + Duration::from_millis(SELFTEST_TIMEOUT_MS);
    let outcome = qemu::run_driver_selftest(&vm, &port, deadline)
        .with_context(|| format!("the self-test runs; console tail:\n{}", tail(&vm)))?;
    let (lines, figures) = (outcome.lines, outcome.figures);
    for line in &lines {
        println!("{line}");
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
