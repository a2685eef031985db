//! What the bench needs of the machine it runs on: qemu-system-x86_64 (installed from Debian's
//! packages when missing and we are root), whether KVM really works, and a free local TCP port.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::args::Accel;

/// The emulator the bench runs.
pub const QEMU_BINARY: &str = "qemu-system-x86_64";
/// The Debian package that ships it.
pub const QEMU_PACKAGE: &str = "qemu-system-x86";
/// How long the KVM probe may take before it is judged unusable.
pub const KVM_PROBE_TIMEOUT_MS: u64 = 10_000;
/// How often the KVM probe checks whether its QEMU has exited.
const KVM_PROBE_POLL_MS: u64 = 20;

/// Errors preparing the host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{QEMU_BINARY} is not installed and this is not root; run: sudo apt-get update && sudo apt-get install -y {QEMU_PACKAGE}")]
    QemuMissing,
    #[error("run {command}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed with {status}")]
    CommandFailed {
        command: String,
        status: std::process::ExitStatus,
    },
    #[error(
        "{tool} is not installed and this is not root; run: sudo apt-get install -y {package}"
    )]
    ToolMissing { tool: String, package: String },
    #[error("find a free TCP port on 127.0.0.1")]
    FreePort(#[source] std::io::Error),
}

/// The emulator's path on PATH, if installed.
pub fn find_qemu() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(QEMU_BINARY))
        .find(|candidate| candidate.is_file())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Returns the emulator's path, installing `qemu-system-x86` with apt-get when missing and root.
pub fn ensure_qemu() -> Result<PathBuf, HostError> {
    // Tests of one binary call this at once; two apt-get runs would fight over dpkg's lock.
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALLING
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    if let Some(found) = find_qemu() {
        return Ok(found);
    }
    if !is_root() {
        return Err(HostError::QemuMissing);
    }
    tracing::info!("{QEMU_BINARY} missing: installing {QEMU_PACKAGE} with apt-get");
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", QEMU_PACKAGE])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    find_qemu().ok_or(HostError::QemuMissing)
}

/// Finds `tool` in the sbin/bin directories, installing `package` with apt-get when it is
/// missing and this process is root (the image ships it: mdadm).
pub fn ensure_tool(tool: &str, package: &str) -> Result<PathBuf, HostError> {
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALLING
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    let find = || image::tools::find_tool(tool, package).ok();
    if let Some(found) = find() {
        return Ok(found);
    }
    if !is_root() {
        return Err(HostError::ToolMissing {
            tool: tool.into(),
            package: package.into(),
        });
    }
    tracing::info!("{tool} missing: installing {package} with apt-get");
    let install = || {
        run(Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    if install().is_err() {
        // On a fresh machine apt-get knows no package until its lists are fetched.
        run(Command::new("apt-get").arg("update"))?;
        install()?;
    }
    find().ok_or(HostError::ToolMissing {
        tool: tool.into(),
        package: package.into(),
    })
}

fn run(command: &mut Command) -> Result<(), HostError> {
    let text = format!("{command:?}");
    let status = command.status().map_err(|source| HostError::Spawn {
        command: text.clone(),
        source,
    })?;
    if !status.success() {
        return Err(HostError::CommandFailed {
            command: text,
            status,
        });
    }
    Ok(())
}

/// The environment variable that asks for KVM (`kvm`); TCG otherwise.
const ACCEL_VARIABLE: &str = "APPLIANCE_QEMU_ACCEL";

/// TCG, unless `APPLIANCE_QEMU_ACCEL=kvm` asks for KVM and KVM really runs a q35 vCPU here (an
/// openable /dev/kvm is not enough: some nested hosts abort at the first vCPU reset, and some
/// boot the guest's kernel and then stop it with "KVM internal error ... emulation failure" at
/// its first `lock cmpxchg16b`, which no quick probe meets). TCG is slower but the same on
/// every machine, so the figures of two runs compare. Probed once per process: where the probe
/// VM hangs instead of failing, a probe costs up to `KVM_PROBE_TIMEOUT_MS`, and the bench and
/// each test binary boot several VMs.
pub fn probe_accel(qemu: &Path) -> Accel {
    static PROBED: std::sync::OnceLock<Accel> = std::sync::OnceLock::new();
    *PROBED.get_or_init(|| {
        let asked = std::env::var(ACCEL_VARIABLE).ok();
        if asks_for_kvm(asked.as_deref()) {
            probe_accel_now(qemu)
        } else {
            Accel::Tcg
        }
    })
}

/// Whether the accelerator variable's value asks for KVM (anything but `kvm`, `tcg` or unset is
/// warned about and read as TCG).
fn asks_for_kvm(value: Option<&str>) -> bool {
    match value {
        Some("kvm") => true,
        None | Some("tcg") => false,
        Some(other) => {
            tracing::warn!(
                value = other,
                "{ACCEL_VARIABLE} takes kvm or tcg; using TCG"
            );
            false
        }
    }
}

fn probe_accel_now(qemu: &Path) -> Accel {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Accel::Tcg;
    }
    if kvm_runs(qemu) {
        Accel::Kvm
    } else {
        tracing::info!("/dev/kvm is present but QEMU cannot run a vCPU with it: using TCG");
        Accel::Tcg
    }
}

/// Starts a paused q35 VM under KVM, asks it to quit over QMP, and checks it exited cleanly.
fn kvm_runs(qemu: &Path) -> bool {
    let spawned = Command::new(qemu)
        .args([
            "-accel",
            "kvm",
            "-machine",
            "q35",
            "-cpu",
            "host",
            "-nodefaults",
            "-display",
            "none",
            "-S",
        ])
        .args(["-serial", "none", "-monitor", "none", "-qmp", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = spawned else { return false };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"quit\"}\n");
    }
    let timeout = Duration::from_millis(KVM_PROBE_TIMEOUT_MS);
    let interval = Duration::from_millis(KVM_PROBE_POLL_MS);
    match drivers::try_wait_until(timeout, interval, || child.try_wait()) {
        Ok(Some(status)) => status.success(),
        Ok(None) | Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            false
        }
    }
}

/// A TCP port on 127.0.0.1 that is free now (the kernel picks it; QEMU binds it moments later).
pub fn free_local_port() -> Result<u16, HostError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(HostError::FreePort)?;
    Ok(listener.local_addr().map_err(HostError::FreePort)?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kvm_asks_for_kvm() {
        assert!(asks_for_kvm(Some("kvm")));
        assert!(!asks_for_kvm(None));
        assert!(!asks_for_kvm(Some("tcg")));
        assert!(!asks_for_kvm(Some("KVM ")), "an unknown value is TCG");
    }

    #[test]
    fn free_ports_are_bindable() {
        let port = free_local_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}
