//! PID-1 duties when the appliance boots as /init of its own image: mounts, modules, data disk,
//! reaping, signals, watchdog, clean power-off.
//!
//! Shape: PID 1 does the boot stages single-threaded, then becomes a small supervisor (one poll
//! loop: signals, power button, watchdog) that forks the service as a child process. Forking
//! while single-threaded is safe, and the service's own children (mke2fs...) stay the service's,
//! so PID 1 can reap every process that reaches it without stealing anyone's exit status. A
//! service that dies is logged and restarted with backoff; too many quick failures reboot.
//!
//! Console protocol (stdout of PID 1 is /dev/console = ttyS0): `APPLIANCE BOOT stage=<s> ms=<ms>
//! ...` per stage, then exactly one `APPLIANCE READY api=https://... journal_head=<seq>
//! replayed=<n> boot_ms=<ms>` per service start, `APPLIANCE PROVISION ...` for an unusable
//! provisioned item, `APPLIANCE DATA-DISK REFUSED ...` for a foreign disk,
//! `APPLIANCE SERVICE FAILED ...`, `APPLIANCE POWEROFF ...`, `APPLIANCE REBOOT ...`.

pub mod cmdline;
pub mod disk;
mod machine;
pub mod net;
mod panel;
pub mod provision;
pub mod restart;
mod service;
mod supervisor;
pub mod sys;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use drivers::module::{self, Loaded};
use drivers::watchdog::{self, Watchdog};
use drivers::{error_chain, netconf, wait_until};

/// The module load order the image builder writes (`image::LOAD_ORDER_PATH`).
pub const MODULE_LOAD_ORDER: &str = "/lib/modules/load-order";
pub const MODULE_DIR: &str = "/lib/modules";
/// Where the image ships mke2fs.
pub const MKE2FS: &str = "/usr/sbin/mke2fs";
pub const DATA_DIR: &str = "/data";
/// The HTTPS door (Redfish), on every address.
pub const API_LISTEN: &str = "0.0.0.0:443";
/// How long PID 1 waits for a device (NIC, data disk, watchdog) after loading its driver.
pub const DEVICE_WAIT_MS: u64 = 5_000;
/// How often PID 1 looks again for a device it waits for.
pub const DEVICE_POLL_MS: u64 = 50;
const DEVICE_WAIT: Duration = Duration::from_millis(DEVICE_WAIT_MS);
const DEVICE_POLL: Duration = Duration::from_millis(DEVICE_POLL_MS);
/// Watchdog timeout set on the i6300esb; fed every quarter of it.
pub const WATCHDOG_TIMEOUT_S: u32 = 20;
const _: () = assert!(
    watchdog::TIMEOUT_SECS_MIN <= WATCHDOG_TIMEOUT_S
        && WATCHDOG_TIMEOUT_S <= watchdog::TIMEOUT_SECS_MAX
);

/// Writes one line to the console, at once.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Times one boot stage and logs it.
fn stage<T>(name: &str, run: impl FnOnce() -> (T, String)) -> T {
    let start = Instant::now();
    let _span = tracing::info_span!("pid1_stage", stage = name).entered();
    let (value, details) = run();
    say(&format!(
        "APPLIANCE BOOT stage={name} ms={} {details}",
        start.elapsed().as_millis()
    ));
    value
}

/// Whether the data disk is usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDisk {
    Mounted {
        device: PathBuf,
        found: disk::DiskContents,
    },
    /// Refused or missing: PID 1 runs no service (it would acknowledge writes it cannot keep) and
    /// waits, fed watchdog and all, for a power-off.
    Unusable { reason: String },
}

/// The entry point when the binary runs as PID 1. Never returns.
pub fn main() -> ! {
    say(&format!(
        "APPLIANCE BOOT pid1 started uptime_ms={}",
        sys::uptime_ms().unwrap_or(0)
    ));
    stage("mount", || match sys::mount_early() {
        Ok(()) => ((), "proc sys dev run".into()),
        Err(e) => supervisor::reboot_hopeless(&format!("early mounts failed: {}", error_chain(&e))),
    });
    stage("console", quiet_kernel_console);
    let flags = stage("cmdline", || {
        let text = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        match cmdline::parse(&text) {
            Ok(flags) => {
                let details = format!("{flags:?}");
                (flags, details)
            }
            Err(e) => supervisor::power_off_now(&format!("bad kernel command line: {e}")),
        }
    });
    let signals = supervisor::block_signals();
    stage("modules", load_modules);
    stage("network", configure_network);
    let data = stage("data-disk", prepare_data_disk);
    stage("random", wait_for_random);
    let watchdog = stage("watchdog", || match flags.selftest {
        // The drivers' self-test opens /dev/watchdog itself; it is single-open.
        Some(_) => (None, "left to the self-test".into()),
        None => open_watchdog(),
    });
    supervisor::run(supervisor::Context {
        flags,
        signals,
        data,
        watchdog,
    })
}

/// Waits, saying so, until the kernel's random pool is initialized: the service's TLS keys,
/// session tokens and password salts come from it, and `getrandom(2)` would otherwise block the
/// service's start without a word (under QEMU's TCG with a CPU model lacking RDRAND, for
/// minutes). Before the watchdog is armed, which nobody would feed meanwhile.
fn wait_for_random() -> ((), String) {
    match sys::random_ready() {
        Ok(true) => ((), "kernel random pool initialized".into()),
        Ok(false) => {
            say("APPLIANCE BOOT waiting for the kernel's random pool (TLS keys, sessions and password salts need it; a CPU with RDRAND or a virtio-rng device fills it at boot)");
            match sys::wait_random() {
                Ok(()) => ((), "kernel random pool initialized after a wait".into()),
                Err(e) => ((), format!("waiting on /dev/random failed: {e}")),
            }
        }
        Err(e) => ((), format!("/dev/random could not be checked: {e}")),
    }
}

/// The kernel's console log level while PID 1 runs: only errors and worse (levels 0 to 3) reach
/// the serial console; everything else stays in the kernel's log (`dmesg`). A kernel message
/// printed while one of the appliance's lines is being written cuts that line in two (seen in CI:
/// `APPLIANCE READY [    6.35] pcieport 0000:00:01.0: pciehp: Slot(1): Attention button
/// pressed`, and the ready line's fields on the next line), and those lines are the console's
/// protocol.
const CONSOLE_LOGLEVEL: &str = "4";
const PRINTK: &str = "/proc/sys/kernel/printk";

fn quiet_kernel_console() -> ((), String) {
    let details = match std::fs::write(PRINTK, CONSOLE_LOGLEVEL) {
        Ok(()) => {
            format!("kernel console_loglevel={CONSOLE_LOGLEVEL}: errors only, the rest in dmesg")
        }
        Err(e) => format!(
            "write {CONSOLE_LOGLEVEL} to {PRINTK}: {e}; kernel messages may cut console lines"
        ),
    };
    ((), details)
}

fn load_modules() -> ((), String) {
    let order = std::fs::read_to_string(MODULE_LOAD_ORDER).unwrap_or_default();
    let (mut loaded, mut already, mut failed) = (0, 0, Vec::new());
    for name in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = Path::new(MODULE_DIR).join(format!("{name}.ko"));
        match module::load(&path) {
            Ok(Loaded::Now) => loaded += 1,
            Ok(Loaded::Already) => already += 1,
            Err(e) => {
                say(&format!("APPLIANCE BOOT module-failed {}", error_chain(&e)));
                failed.push(name.to_string());
            }
        }
    }
    (
        (),
        format!("loaded={loaded} already={already} failed={}", failed.len()),
    )
}

fn configure_network() -> ((), String) {
    if let Err(e) = netconf::set_up("lo") {
        say(&format!("APPLIANCE BOOT network-error {}", error_chain(&e)));
    }
    let sys_net = Path::new("/sys/class/net");
    let nic = wait_until(DEVICE_WAIT, DEVICE_POLL, || {
        net::choose_management(&net::list(sys_net)).cloned()
    });
    let Some(nic) = nic else {
        return ((), "no management NIC found".into());
    };
    let result = netconf::set_address(&nic.name, net::MANAGEMENT_ADDR, net::MANAGEMENT_NETMASK)
        .and_then(|()| netconf::set_up(&nic.name))
        .and_then(|()| netconf::add_default_route(net::MANAGEMENT_GATEWAY));
    match result {
        Ok(()) => (
            (),
            format!(
                "nic={} mac={} addr={}/24 gw={}",
                nic.name,
                nic.mac,
                net::MANAGEMENT_ADDR,
                net::MANAGEMENT_GATEWAY
            ),
        ),
        Err(e) => ((), format!("nic={} error: {}", nic.name, error_chain(&e))),
    }
}

fn prepare_data_disk() -> (DataDisk, String) {
    let sys_block = Path::new("/sys/block");
    let name = wait_until(DEVICE_WAIT, DEVICE_POLL, || {
        disk::find_by_serial(sys_block).ok()
    });
    let Some(name) = name else {
        let reason = format!(
            "no data disk: no block device with serial {:?}",
            disk::DATA_DISK_SERIAL
        );
        say(&format!("APPLIANCE DATA-DISK MISSING {reason}"));
        return (
            DataDisk::Unusable {
                reason: reason.clone(),
            },
            reason,
        );
    };
    let device = PathBuf::from("/dev").join(&name);
    let _ = std::fs::create_dir_all(DATA_DIR);
    match disk::prepare(&device, Path::new(DATA_DIR), Path::new(MKE2FS)) {
        Ok(found) => {
            let details = format!(
                "device={} found={:?} mounted={DATA_DIR}",
                device.display(),
                found.describe()
            );
            (DataDisk::Mounted { device, found }, details)
        }
        Err(e) => {
            let reason = error_chain(&e);
            if matches!(e, disk::DiskError::Foreign { .. }) {
                say(&format!("APPLIANCE DATA-DISK REFUSED {reason}; not formatting or mounting it; no service will run"));
            } else {
                say(&format!(
                    "APPLIANCE DATA-DISK FAILED {reason}; no service will run"
                ));
            }
            (
                DataDisk::Unusable {
                    reason: reason.clone(),
                },
                reason,
            )
        }
    }
}

fn open_watchdog() -> (Option<Watchdog>, String) {
    let path = Path::new("/dev/watchdog");
    if wait_until(DEVICE_WAIT, DEVICE_POLL, || path.exists().then_some(())).is_none() {
        return (None, "no /dev/watchdog".into());
    }
    match Watchdog::open_with_timeout(path, WATCHDOG_TIMEOUT_S) {
        Ok((watchdog, Ok(timeout_s))) => (Some(watchdog), format!("armed timeout_s={timeout_s}")),
        Ok((watchdog, Err(refused))) => (
            Some(watchdog),
            format!(
                "armed with the driver's default timeout ({})",
                error_chain(&refused)
            ),
        ),
        Err(e) => (None, format!("error: {}", error_chain(&e))),
    }
}
