//! End-to-end: the appliance boots in QEMU to its ready line, powers off cleanly and comes back
//! with the same journal, recovers from a watchdog reset, and refuses bad input (a foreign data
//! disk, a topology with an error). Decided from the serial console and QMP only.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use appliance::api::{Query, Reply, Request};
use qemu::ready::READY_PREFIX;
use rand::RngCore;
use tests::{boot, one_vm_at_a_time, options, power_off, tail, BOOT_TIMEOUT_MS};

/// Test 1: boot to the ready line; report the time.
#[test]
fn boots_to_ready() -> Result<()> {
    let _one = one_vm_at_a_time();
    let mut options = options("boots_to_ready")?;
    options.extra_cmdline = "appliance.console=on".into();
    let booted = boot(options)?;
    println!(
        "boot to ready: {} ms (QEMU start to ready line, {:?}); guest boot_ms={:?}",
        booted.ready_ms,
        booted.vm.accel(),
        booted.ready.boot_ms
    );
    ensure!(
        booted.ready.api.as_deref() == Some("https://0.0.0.0:443"),
        "the ready line names the API: {:?}",
        booted.ready
    );
    let stages = booted
        .vm
        .console()
        .lines()
        .into_iter()
        .filter(|l| l.contains("APPLIANCE BOOT stage="))
        .count();
    ensure!(
        stages > 0,
        "the console shows the boot stages with their times:\n{}",
        tail(&booted.vm)
    );
    // The boot a person watches is short: the kernel's own messages stay off the console
    // (`quiet`; about 440 lines came before PID 1's first line without it).
    let lines = booted.vm.console().lines();
    let kernel_lines = lines
        .iter()
        .take_while(|l| !l.contains("APPLIANCE"))
        .count();
    ensure!(
        kernel_lines <= 30,
        "{kernel_lines} kernel lines before PID 1's first:\n{}",
        lines[..kernel_lines].join("\n")
    );
    // The topology's `[appliance]` reached PID 1 on the kernel command line: the Managers
    // resource names the appliance and its site.
    let client = tests::api(&booted.vm)?;
    let (status, manager) = client.get_json("/redfish/v1/Managers/Appliance")?;
    ensure!(
        status == 200 && manager["Name"] == "Appliance bench at qemu",
        "the manager names the topology's identity: {status} {manager}"
    );
    // Nothing answers without a login.
    let anonymous = appliance::api::client::Client::new(
        &booted.vm.api_url(),
        &appliance::api::client::Trust::Pinned(booted.vm.credentials()?.cert_pem.clone()),
        Duration::from_secs(30),
    )?;
    let answer = anonymous.get("/redfish/v1/Systems")?;
    ensure!(
        answer.status == 401,
        "an anonymous GET of Systems: {}",
        answer.status
    );
    the_console_answers_keys_and_comes_back_when_it_dies(&booted.vm, &client)?;
    power_off(booted.vm)
}

/// `appliance.console=on`: PID 1 runs the full-screen console on the serial line once the
/// service is ready. It asks for a new PIN twice; `q` ends its process, the supervisor starts
/// it again, locked, and the service answered throughout.
fn the_console_answers_keys_and_comes_back_when_it_dies(
    vm: &qemu::Vm,
    client: &appliance::api::client::Client,
) -> Result<()> {
    // The screen as an 80x24 terminal shows the serial line's bytes (the console draws only
    // what changed, so its text is read through a terminal emulator, not from the raw log).
    let log = vm.paths().console_log.clone();
    let screen = || {
        let size = |n| std::num::NonZeroU16::new(n).unwrap_or(std::num::NonZeroU16::MIN);
        let mut terminal = vt100::Parser::new(size(24), size(80), 0);
        terminal.process(&std::fs::read(&log).unwrap_or_default());
        terminal.screen().contents()
    };
    let shows = |text: &str| {
        tests::wait_until(
            Duration::from_secs(60),
            &format!("the console shows {text:?}"),
            || Ok(screen().contains(text).then_some(())),
        )
        .with_context(|| format!("the screen:\n{}", screen()))
    };
    shows("New PIN:")?;
    vm.console().type_keys(b"2468\r")?;
    shows("The same PIN again")?;
    vm.console().type_keys(b"2468\r")?;
    shows("PIN set.")?;
    shows("c/F2 compose")?;
    vm.console().type_keys(b"q")?;
    vm.console()
        .wait_for("APPLIANCE CONSOLE exited", Duration::from_secs(30))?;
    let (status, _) = client.get_json("/redfish/v1/Systems")?;
    ensure!(
        status == 200,
        "the service answers with the console gone: {status}"
    );
    let restarted = |lines: Vec<String>| {
        lines
            .iter()
            .filter(|l| l.contains("APPLIANCE CONSOLE started"))
            .count()
    };
    tests::wait_until(Duration::from_secs(30), "the console started again", || {
        Ok((restarted(vm.console().lines()) >= 2).then_some(()))
    })?;
    vm.console().type_keys(b"2468\r")?;
    shows("Unlocked.")
}

/// Test 3 (journal part): a clean power-off and a boot again lose nothing: the second boot
/// replays at least every event the first one had durable when the power button was pressed.
#[test]
fn clean_power_off_and_boot_again_keeps_the_journal() -> Result<()> {
    let _one = one_vm_at_a_time();
    let options = options("clean_power_off")?;
    let first = boot(options.clone())?;
    let client = tests::api(&first.vm)?;
    let head = match tests::call(&client, &Request::query(Query::Status))? {
        Reply::Status(status) => status.journal_head,
        other => anyhow::bail!("status: {other:?}"),
    };
    drop(client);
    power_off(first.vm)?;
    let second = boot(options)?;
    let after = second
        .ready
        .journal_head
        .context("the second ready line has journal_head")?;
    ensure!(
        after >= head,
        "journal head after a clean power-off: {after}, before: {head}"
    );
    ensure!(
        second.ready.replayed.is_some(),
        "the ready line reports the replay: {:?}",
        second.ready
    );
    power_off(second.vm)
}

/// Test 5, the watchdog: a test flag hangs the service's watchdog feeding; the i6300esb resets
/// the VM, which boots again to a second ready line.
#[test]
fn watchdog_resets_a_hung_appliance() -> Result<()> {
    let _one = one_vm_at_a_time();
    let mut options = options("watchdog")?;
    options.extra_cmdline = "appliance.test_hang_watchdog=1".into();
    let booted = boot(options)?;
    let (first, _) = booted
        .vm
        .console()
        .wait_for_after(0, READY_PREFIX, Duration::from_secs(1))?;
    let timeout = Duration::from_millis(BOOT_TIMEOUT_MS);
    booted
        .vm
        .qmp()
        .wait_event(
            "WATCHDOG",
            |data| data.get("action").and_then(|a| a.as_str()) == Some("reset"),
            timeout,
        )
        .with_context(|| format!("the watchdog fires; console:\n{}", tail(&booted.vm)))?;
    booted
        .vm
        .qmp()
        .wait_event("RESET", |_| true, timeout)
        .with_context(|| format!("the VM resets; console:\n{}", tail(&booted.vm)))?;
    let (second, _) = booted
        .vm
        .console()
        .wait_for_after(first + 1, READY_PREFIX, timeout)?;
    ensure!(second > first, "a second ready line after the reset");
    Ok(())
}

/// Test 6a: a data disk of random bytes is refused with a clear console message and left untouched.
#[test]
fn a_foreign_data_disk_is_refused_and_untouched() -> Result<()> {
    let _one = one_vm_at_a_time();
    let options = options("foreign_disk")?;
    let mut bytes = vec![0u8; 4 << 20];
    rand::thread_rng().fill_bytes(&mut bytes);
    std::fs::write(&options.data_disk, &bytes).context("write the random data disk")?;
    let mut vm = qemu::Vm::launch(options.clone())?;
    let line = vm
        .console()
        .wait_for("DATA-DISK REFUSED", Duration::from_millis(BOOT_TIMEOUT_MS))
        .context("a console line refusing the data disk")?;
    println!("{line}");
    ensure!(
        !vm.console()
            .lines()
            .iter()
            .any(|l| l.contains(READY_PREFIX)),
        "no ready line on a foreign disk"
    );
    vm.kill();
    let after = std::fs::read(&options.data_disk).context("read the data disk back")?;
    ensure!(after == bytes, "the foreign data disk was modified");
    Ok(())
}

/// Test 6b: the bench refuses a topology file with an error, naming the file and the line.
#[test]
fn a_bad_topology_is_refused_naming_the_line() -> Result<()> {
    let dir = tests::run_dir("bad_topology")?;
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[[port]]\nid = 1\nswitch = \"sw0\"\nslot = \"one\"\n",
    )?;
    let err = qemu::BenchTopology::load(&path).expect_err("a bad topology is refused");
    let text = err.to_string();
    ensure!(
        text.contains("bad.toml") && text.contains("line 4"),
        "error names file and line: {text}"
    );
    Ok(())
}
