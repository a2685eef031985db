//! End-to-end: the appliance boots in QEMU to its ready line, logs a studio directory user in
//! against a slapd on the host, powers off cleanly and comes back with the same journal,
//! recovers from a watchdog reset, and refuses bad input (a foreign data disk, a topology with
//! an error). Decided from the serial console, QMP and the forwarded HTTPS door.

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
    options.extra_cmdline = "appliance.console=on appliance.test_kill_console=1".into();
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
    directory_logins_reach_the_hosts_slapd(&booted.vm, &client)?;
    let mut screen = Screen::of(&booted.vm);
    the_console_comes_back_when_it_dies(&booted.vm, &client, &screen)?;
    the_machine_from_the_console(booted.vm, &mut screen)
}

/// The studio's directory from inside the image: a slapd on the host (the guest reaches the
/// host's loopback as 10.0.2.2, the certificate names that address) set through AccountService,
/// then a directory user logs in through the forwarded HTTPS door with its group's role, a
/// wrong password is refused, and the directory is turned off again.
fn directory_logins_reach_the_hosts_slapd(
    vm: &qemu::Vm,
    admin: &appliance::api::client::Client,
) -> Result<()> {
    use appliance::testing::slapd::{Slapd, SERVICE_DN, SERVICE_PASSWORD, SUFFIX};
    let dir = vm.paths().dir.join("slapd");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let slapd = Slapd::start_for(&dir, &["10.0.2.2"]);
    let settings = serde_json::json!({
        "LDAP": {
            "ServiceEnabled": true,
            "ServiceAddresses": [format!("ldaps://10.0.2.2:{}", slapd.port)],
            "Authentication": {"Username": SERVICE_DN, "Password": SERVICE_PASSWORD},
            "LDAPService": {"SearchSettings": {"BaseDistinguishedNames": [SUFFIX]}},
            "RemoteRoleMapping": [{"RemoteGroup": "appliance-readonly", "LocalRole": "ReadOnly"}],
            "TimeoutSeconds": 10,
        },
        "Oem": {"Appliance": {"DirectoryCertificateAuthority": slapd.ca_pem}},
    });
    let answer = admin.patch("/redfish/v1/AccountService", &settings, None)?;
    ensure!(
        answer.status == 200,
        "the directory set: {} {}",
        answer.status,
        answer.json()
    );
    let trust = appliance::api::client::Trust::Pinned(vm.credentials()?.cert_pem.clone());
    let mut ola =
        appliance::api::client::Client::new(&vm.api_url(), &trust, Duration::from_secs(60))?;
    let login = ola.login("ola", "ola-Password-1", None)?;
    ensure!(
        login.status == 201,
        "a directory login inside the image: {} {}",
        login.status,
        login.json()
    );
    let (status, session) =
        ola.get_json(login.header("location").context("the session's Location")?)?;
    ensure!(
        status == 200 && session["UserName"] == "ola",
        "ola's session: {status} {session}"
    );
    let refused =
        appliance::api::client::Client::new(&vm.api_url(), &trust, Duration::from_secs(60))?
            .login("ola", "wrong-Password-1", None)?;
    ensure!(
        refused.status == 401,
        "a wrong password: {}",
        refused.status
    );
    let answer = admin.patch(
        "/redfish/v1/AccountService",
        &serde_json::json!({"LDAP": {"ServiceEnabled": false}}),
        None,
    )?;
    ensure!(answer.status == 200, "the directory off: {}", answer.status);
    Ok(())
}

/// The serial line as an 80x24 terminal shows it, from a byte of the console's log on (the
/// console draws only what changed, so its text is read through a terminal emulator, not from
/// the raw log; after a reboot, from the new boot's first byte).
struct Screen {
    log: std::path::PathBuf,
    from: usize,
}

impl Screen {
    fn of(vm: &qemu::Vm) -> Screen {
        Screen {
            log: vm.paths().console_log.clone(),
            from: 0,
        }
    }

    /// From now on, only what the serial line shows after this moment.
    fn restart(&mut self) {
        self.from = std::fs::metadata(&self.log).map_or(0, |m| m.len() as usize);
    }

    fn text(&self) -> String {
        let size = |n| std::num::NonZeroU16::new(n).unwrap_or(std::num::NonZeroU16::MIN);
        let mut terminal = vt100::Parser::new(size(24), size(80), 0);
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        terminal.process(bytes.get(self.from..).unwrap_or_default());
        terminal.screen().contents()
    }

    /// Waits until the screen shows `text`; the screen then.
    fn shows(&self, text: &str) -> Result<String> {
        tests::wait_until(
            Duration::from_secs(60),
            &format!("the console shows {text:?}"),
            || {
                let now = self.text();
                Ok(now.contains(text).then_some(now))
            },
        )
        .with_context(|| format!("the screen:\n{}", self.text()))
    }
}

/// `appliance.console=on`: PID 1 runs the full-screen console on the serial line once the
/// service is ready. `appliance.test_kill_console=1` kills its process (SIGKILL, as a crash
/// would end it) 3 s after it started: the service answers throughout and the supervisor starts
/// the console again, which asks for a new PIN twice; `q` ends it too, and it comes back locked.
fn the_console_comes_back_when_it_dies(
    vm: &qemu::Vm,
    client: &appliance::api::client::Client,
    screen: &Screen,
) -> Result<()> {
    let console = vm.console();
    console.wait_for("APPLIANCE TEST kill_console", Duration::from_secs(60))?;
    let exited = console.wait_for("APPLIANCE CONSOLE exited", Duration::from_secs(30))?;
    ensure!(
        exited.contains("SIGKILL"),
        "the console was killed: {exited}"
    );
    let (status, _) = client.get_json("/redfish/v1/Systems")?;
    ensure!(
        status == 200,
        "the service answers with the console gone: {status}"
    );
    let started = |count: usize| {
        tests::wait_until(Duration::from_secs(30), "the console started again", || {
            let lines = console.lines();
            let starts = lines
                .iter()
                .filter(|l| l.contains("APPLIANCE CONSOLE started"))
                .count();
            Ok((starts >= count).then_some(()))
        })
    };
    started(2)?;
    screen.shows("New PIN:")?;
    console.type_keys(b"2468\r")?;
    screen.shows("The same PIN again")?;
    console.type_keys(b"2468\r")?;
    screen.shows("PIN set.")?;
    screen.shows("c/F2 compose")?;
    console.type_keys(b"q")?;
    tests::wait_until(Duration::from_secs(30), "the console ends on q", || {
        let ends = console
            .lines()
            .iter()
            .filter(|l| l.contains("APPLIANCE CONSOLE exited"))
            .count();
        Ok((ends >= 2).then_some(()))
    })?;
    started(3)?;
    console.type_keys(b"2468\r")?;
    screen.shows("Unlocked.")?;
    Ok(())
}

/// The machine's actions at the console, on the real kernel: the management port set to a new
/// address (the kernel shows it), a reboot from the console after which the journaled setting
/// is applied again, the address set back (the forwarded API answers again), the journal
/// checked, admin's password reset (the new one logs in, the old one no longer), and a power
/// off from the console that ends QEMU cleanly.
fn the_machine_from_the_console(mut vm: qemu::Vm, screen: &mut Screen) -> Result<()> {
    let console = vm.console().clone();
    set_network(&console, screen, "10.0.2.20/24")?;
    let (ready_before, _) = console.wait_for_after(0, READY_PREFIX, Duration::from_secs(1))?;
    console.type_keys(b"r\r")?;
    screen.shows("Reboot the appliance? (y/n)")?;
    screen.restart();
    console.type_keys(b"y")?;
    console.wait_for(
        "APPLIANCE SHUTDOWN requested by the operator's reboot",
        Duration::from_secs(30),
    )?;
    console.wait_for("APPLIANCE REBOOT clean shutdown", Duration::from_secs(60))?;
    console.wait_for_after(
        ready_before + 1,
        READY_PREFIX,
        Duration::from_millis(BOOT_TIMEOUT_MS),
    )?;
    // The console comes back locked (its PIN is on the data disk); the kernel has the
    // journaled address again.
    screen.shows("PIN:")?;
    console.type_keys(b"2468\r")?;
    screen.shows("Unlocked.")?;
    console.type_keys(b"w\r")?;
    screen.shows("56) 10.0.2.20/24 gateway 10.0.2.2")?;
    set_network(&console, screen, "10.0.2.15/24")?;
    // QEMU forwards the API to 10.0.2.15: it answers again.
    let client = tests::api(&vm)?;
    let head = match tests::call(&client, &Request::query(Query::Status))? {
        Reply::Status(status) => status.journal_head,
        other => anyhow::bail!("status: {other:?}"),
    };
    let events = Query::Events {
        after: head.saturating_sub(200),
        wait_ms: 0,
        limit: None,
    };
    let Reply::History(entries) = tests::call(&client, &Request::query(events))? else {
        anyhow::bail!("the events")
    };
    let reboot = entries
        .iter()
        .position(|e| e.kind == "power_requested")
        .context("the reboot is journaled")?;
    ensure!(
        entries[reboot].by.as_ref().map(|b| b.door) == Some(appliance::model::Door::Console),
        "the reboot was made at the console: {:?}",
        entries[reboot]
    );
    ensure!(
        entries[reboot..]
            .iter()
            .any(|e| e.kind == "management_network_applied"
                && e.summary.contains("now 10.0.2.20/24")),
        "the setting was applied again at the start after the reboot: {entries:#?}"
    );
    console.type_keys(b"v\r")?;
    screen.shows("journal intact:")?;
    console.type_keys(b"p")?;
    console.type_keys(b"reset\r")?;
    screen.shows("Give admin a new random password")?;
    console.type_keys(b"y")?;
    let shown = screen.shows("admin's new password: ")?;
    let password: String = shown
        .split("admin's new password: ")
        .nth(1)
        .unwrap_or_default()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let credentials = vm.credentials()?;
    let trust = appliance::api::client::Trust::Pinned(credentials.cert_pem.clone());
    let login = |password: &str| -> Result<u16> {
        let mut client =
            appliance::api::client::Client::new(&vm.api_url(), &trust, Duration::from_secs(30))?;
        Ok(client.login("admin", password, None)?.status)
    };
    ensure!(
        login(&password)? == 201,
        "the new password {password:?} logs in"
    );
    ensure!(
        login(&credentials.admin_password)? == 401,
        "the old password no longer does"
    );
    console.type_keys(b"o\r")?;
    screen.shows("Power the appliance off")?;
    console.type_keys(b"y")?;
    let status = vm
        .wait_exit(Duration::from_millis(tests::POWEROFF_TIMEOUT_MS))
        .with_context(|| format!("power off from the console; tail:\n{}", tail(&vm)))?;
    ensure!(status.success(), "QEMU exited with {status}");
    console.wait_for("APPLIANCE POWEROFF clean shutdown", Duration::from_secs(1))?;
    Ok(())
}

/// Sets the management port at the console (`w`, the address, `y`) and waits until the kernel
/// shows it (`w` Enter: the port as the kernel has it, and the setting applied).
fn set_network(console: &qemu::console::Console, screen: &Screen, address: &str) -> Result<()> {
    console.type_keys(b"w")?;
    screen.shows("> network _")?;
    console.type_keys(format!("{address} 10.0.2.2\r").as_bytes())?;
    screen.shows(&format!(
        "Set the management port to {address} gateway 10.0.2.2"
    ))?;
    console.type_keys(b"y")?;
    console.type_keys(b"w\r")?;
    screen.shows(&format!("56) {address} gateway 10.0.2.2"))?;
    screen.shows(&format!(
        "management setting {address} gateway 10.0.2.2: applied to"
    ))?;
    Ok(())
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
