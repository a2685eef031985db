//! A minimal PID 1 that runs only `drivers::selftest::run_in_guest`: mounts the kernel
//! filesystems, loads the image's modules, runs the self-test on the console and powers off.
//! For running the drivers' real-kernel tests before (or without) the appliance's PID 1:
//! build it static and pass it to the image build (see tests/tests/drivers_in_guest.rs,
//! `DRIVERS_SELFTEST_INIT`).

use std::ffi::CString;
use std::io::Write;
use std::os::fd::AsRawFd;

use nix::mount::{mount, MsFlags};

/// The image's module load order (image::LOAD_ORDER_PATH).
const LOAD_ORDER: &str = "/lib/modules/load-order";

fn say(text: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

fn mount_kernel_filesystems() {
    let table = [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("tmpfs", "/run", "tmpfs"),
    ];
    for (source, target, fs_type) in table {
        let _ = std::fs::create_dir_all(target);
        match mount(
            Some(source),
            target,
            Some(fs_type),
            MsFlags::MS_NOSUID,
            None::<&str>,
        ) {
            Ok(()) | Err(nix::Error::EBUSY) => {}
            Err(e) => say(&format!("SELFTEST INIT mount {fs_type} on {target}: {e}")),
        }
    }
}

fn load_modules() {
    let order = std::fs::read_to_string(LOAD_ORDER).unwrap_or_default();
    for name in order.lines().filter(|l| !l.trim().is_empty()) {
        let path = format!("/lib/modules/{name}.ko");
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) => {
                say(&format!("SELFTEST INIT open {path}: {e}"));
                continue;
            }
        };
        let params = CString::default();
        // SAFETY: finit_module with an open module file, an empty NUL-terminated parameter
        // string and no flags.
        let rc =
            unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
        if rc != 0 && nix::Error::last() != nix::Error::EEXIST {
            say(&format!(
                "SELFTEST INIT finit_module {path}: {}",
                nix::Error::last()
            ));
        }
    }
}

fn main() {
    mount_kernel_filesystems();
    // Only errors on the console: kernel messages would otherwise cut the SELFTEST lines.
    if let Err(e) = std::fs::write("/proc/sys/kernel/printk", "3") {
        say(&format!("SELFTEST INIT quiet the console: {e}"));
    }
    load_modules();
    let passed = drivers::selftest::run_in_guest(&mut std::io::stdout());
    say(&format!("SELFTEST INIT finished, all passed: {passed}"));
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    say("SELFTEST INIT reboot(POWER_OFF) failed");
    loop {
        std::thread::park();
    }
}
