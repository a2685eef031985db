//! End-to-end tests: build the image, boot it in QEMU, drive it through its console, API and QMP.
//!
//! This library is the tests' harness: one image build shared by every test of a binary, one VM
//! at a time per binary (the machine has 2 cores), a fresh run directory per test, and boots
//! and power-offs with deadlines. A [`qemu::Vm`] kills its QEMU when dropped, so a failing test
//! never leaves a VM behind.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use appliance::api::client::{Client, Trust};
use appliance::api::{Reply, Request};
use qemu::ready::READY_PREFIX;
use qemu::{ReadyLine, Vm, VmOptions};

/// Deadline of one boot to the ready line under TCG (a boot takes ~13 s; the machine is shared).
pub const BOOT_TIMEOUT_MS: u64 = 120_000;
/// Deadline of a clean power-off, from the power button to QEMU's exit.
pub const POWEROFF_TIMEOUT_MS: u64 = 60_000;

/// The image, built once per test binary (concurrent builds are serialized by `image`).
pub fn artifacts() -> Result<&'static image::Artifacts> {
    static BUILT: OnceLock<Result<image::Artifacts, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        init_tracing();
        image::build(&image::BuildOptions::default()).map_err(|e| format!("{:#}", anyhow!(e)))
    });
    built
        .as_ref()
        .map_err(|e| anyhow!("image build failed: {e}"))
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Serializes the VMs of one test binary; hold it for the whole test.
pub fn one_vm_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// A fresh, empty run directory for test `name` under target/e2e.
pub fn run_dir(name: &str) -> Result<PathBuf> {
    let dir = image::workspace_dir().join("target/e2e").join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// Options for test `name`: the image, the bench's sample fabric, a captured console, a fresh
/// run directory with a blank data disk in it.
pub fn options(name: &str) -> Result<VmOptions> {
    Ok(VmOptions::new(artifacts()?, &run_dir(name)?))
}

/// A VM that reached its ready line.
#[derive(Debug)]
pub struct Booted {
    pub vm: Vm,
    pub ready: ReadyLine,
    /// From QEMU's start to the ready line, as the bench saw it.
    pub ready_ms: u64,
}

/// Launches a VM and waits for the ready line.
pub fn boot(options: VmOptions) -> Result<Booted> {
    let vm = Vm::launch(options)?;
    let line = vm
        .console()
        .wait_for(READY_PREFIX, Duration::from_millis(BOOT_TIMEOUT_MS))?;
    let ready_ms = u64::try_from(vm.started().elapsed().as_millis()).unwrap_or(u64::MAX);
    let ready = ReadyLine::parse(&line).ok_or_else(|| anyhow!("not a ready line: {line}"))?;
    Ok(Booted {
        vm,
        ready,
        ready_ms,
    })
}

/// Presses the power button and waits for a clean exit (PID 1's `reboot(POWER_OFF)`).
pub fn power_off(mut vm: Vm) -> Result<()> {
    vm.qmp().system_powerdown()?;
    let status = vm
        .wait_exit(Duration::from_millis(POWEROFF_TIMEOUT_MS))
        .with_context(|| format!("power-off; console tail:\n{}", tail(&vm)))?;
    if !status.success() {
        bail!(
            "QEMU exited with {status} after the power button; console tail:\n{}",
            tail(&vm)
        );
    }
    Ok(())
}

/// The last lines of the console, for failure messages.
pub fn tail(vm: &Vm) -> String {
    let lines = vm.console().lines();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Polls `probe` every 200 ms until it returns Some or `timeout` passes (`drivers::wait_until`);
/// a probe's error does not end the wait, and the last one is in the timeout's message.
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let mut last_error = None;
    let found = drivers::wait_until(timeout, Duration::from_millis(200), || match probe() {
        Ok(value) => value,
        Err(e) => {
            last_error = Some(format!("{e:#}"));
            None
        }
    });
    found.ok_or_else(|| {
        anyhow!(
            "timed out after {} ms waiting for {what}; last error: {last_error:?}",
            timeout.as_millis()
        )
    })
}

/// How long one login attempt may take: QEMU's user networking accepts a connection on the
/// host before the guest listens, and such a connection is never answered.
const LOGIN_ATTEMPT: Duration = Duration::from_secs(10);
/// How long one request may take once logged in (a compose waits for the hardware).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(150);

/// A client of the VM's forwarded HTTPS API, pinned to the certificate the bench provisioned
/// and logged in as `admin` with the provisioned password (retried until the API answers).
pub fn api(vm: &Vm) -> Result<Client> {
    let credentials = vm.credentials()?;
    let trust = Trust::Pinned(credentials.cert_pem.clone());
    let url = vm.api_url();
    let token = wait_until(Duration::from_secs(60), "the API to take a login", || {
        let mut client = Client::new(&url, &trust, LOGIN_ATTEMPT)?;
        let answer = client.login(&credentials.account, &credentials.admin_password, None)?;
        match client.token() {
            Some(token) if answer.status == 201 => Ok(Some(token.to_string())),
            _ => bail!("login answered {}: {}", answer.status, answer.json()),
        }
    })?;
    Ok(Client::new(&url, &trust, REQUEST_TIMEOUT)?.with_token(&token))
}

/// The reply to one of the appliance's requests (through `POST /redfish/v1/Oem/Appliance/
/// Requests`); an error answer is an error naming its status and body.
pub fn call(client: &Client, request: &Request) -> Result<Reply> {
    match client.request(request)? {
        Ok(reply) => Ok(reply),
        Err(answer) => bail!("{request:?} answered {}: {}", answer.status, answer.json()),
    }
}

/// Copies the guest's data disk (ext4) out with debugfs (no mount needed) and returns the journal
/// directory in the copy.
pub fn journal_copy(data_disk: &std::path::Path, into: &std::path::Path) -> Result<PathBuf> {
    std::fs::create_dir_all(into).with_context(|| format!("create {}", into.display()))?;
    let output = std::process::Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump / {}", into.display()))
        .arg(data_disk)
        .output()
        .context("run debugfs (e2fsprogs)")?;
    if !output.status.success() {
        bail!(
            "debugfs rdump of {} failed: {}",
            data_disk.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let nested = into.join("journal");
    Ok(if nested.is_dir() {
        nested
    } else {
        into.to_path_buf()
    })
}
