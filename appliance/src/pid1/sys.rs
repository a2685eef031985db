//! PID 1's own plumbing: the early mounts (through the drivers' mounter), power-button input
//! events, the uptime, and the virtio-serial port links udev would make. Syscalls that the
//! drivers also need (modules, interfaces, the watchdog) live in `drivers`.

use std::fs;
use std::path::{Path, PathBuf};

use drivers::mount::{MountError, Mounter};
use nix::errno::Errno;
use nix::mount::MsFlags;

/// The early mounts: proc, sysfs, devtmpfs, and a tmpfs on /run, each checked in mountinfo; a
/// target that is mounted already (EBUSY) is fine.
pub fn mount_early() -> Result<(), MountError> {
    let mounter = Mounter::new(Path::new("/"));
    let hard = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    let mounts = [
        ("proc", "/proc", hard, ""),
        ("sysfs", "/sys", hard, ""),
        ("devtmpfs", "/dev", MsFlags::MS_NOSUID, "mode=0755"),
        (
            "tmpfs",
            "/run",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            "mode=0755",
        ),
    ];
    for (fs_type, target, flags, options) in mounts {
        match mounter.mount(fs_type, Path::new(target), fs_type, flags, options) {
            Ok(_)
            | Err(MountError::Mount {
                source: Errno::EBUSY,
                ..
            }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Linux `struct input_event` on x86_64: timeval (16 bytes), type u16, code u16, value i32.
pub const INPUT_EVENT_BYTES: usize = 24;
const EV_KEY: u16 = 0x01;
const KEY_POWER: u16 = 116;

/// Whether one input event record is a press of the power key.
pub fn is_power_press(event: &[u8]) -> bool {
    if event.len() != INPUT_EVENT_BYTES {
        return false;
    }
    let kind = u16::from_ne_bytes([event[16], event[17]]);
    let code = u16::from_ne_bytes([event[18], event[19]]);
    let value = i32::from_ne_bytes([event[20], event[21], event[22], event[23]]);
    kind == EV_KEY && code == KEY_POWER && value == 1
}

/// Finds every `/dev/input/eventN` whose device is named "Power Button" under `sys_input`
/// (`/sys/class/input`); ACPI may show two (the fixed button and the PNP0C0C device).
pub fn find_power_buttons(sys_input: &Path, dev_input: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(sys_input) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("event"))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter(|n| {
            fs::read_to_string(sys_input.join(n).join("device/name"))
                .is_ok_and(|s| s.trim() == "Power Button")
        })
        .map(|n| dev_input.join(n))
        .collect()
}

/// Seconds since the kernel started, from `/proc/uptime`, in milliseconds.
pub fn uptime_ms() -> Option<u64> {
    let text = fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1000.0) as u64)
}

/// Whether the kernel's random pool is initialized: until it is, a non-blocking read of
/// `/dev/random` answers `EAGAIN` (Linux 5.6 and later), and `getrandom(2)` blocks.
pub fn random_ready() -> std::io::Result<bool> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut random = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/random")?;
    match random.read(&mut [0u8; 1]) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

/// Blocks until the kernel's random pool is initialized (a blocking read of `/dev/random`).
pub fn wait_random() -> std::io::Result<()> {
    use std::io::Read;
    fs::File::open("/dev/random")?.read_exact(&mut [0u8; 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut e = vec![0u8; 16];
        e.extend_from_slice(&kind.to_ne_bytes());
        e.extend_from_slice(&code.to_ne_bytes());
        e.extend_from_slice(&value.to_ne_bytes());
        e
    }

    #[test]
    fn power_key_press_is_recognized() {
        assert!(is_power_press(&event(EV_KEY, KEY_POWER, 1)));
        assert!(!is_power_press(&event(EV_KEY, KEY_POWER, 0)), "release");
        assert!(!is_power_press(&event(EV_KEY, 30, 1)), "another key");
        assert!(!is_power_press(&event(0, 0, 0)), "sync");
        assert!(!is_power_press(&[0u8; 10]), "short");
    }

    #[test]
    fn power_button_found_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for (ev, name) in [
            ("event0", "AT Keyboard"),
            ("event1", "Power Button"),
            ("event2", "Power Button"),
        ] {
            fs::create_dir_all(dir.path().join(ev).join("device")).unwrap();
            fs::write(dir.path().join(ev).join("device/name"), format!("{name}\n")).unwrap();
        }
        let found = find_power_buttons(dir.path(), Path::new("/dev/input"));
        assert_eq!(
            found,
            [
                PathBuf::from("/dev/input/event1"),
                PathBuf::from("/dev/input/event2")
            ]
        );
    }
}

/// What udev would do for virtio-serial ports: for each `<sys_class>/vportNpM/name`, a symlink
/// `<dev>/virtio-ports/<name>` -> `../vportNpM`. Returns the names linked (existing links kept).
pub fn link_virtio_ports(sys_class: &Path, dev: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(sys_class) else {
        return Vec::new();
    };
    let mut linked = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let port = entry.file_name().to_string_lossy().into_owned();
        let name = fs::read_to_string(entry.path().join("name"))
            .unwrap_or_default()
            .trim()
            .to_string();
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            continue;
        }
        let dir = dev.join("virtio-ports");
        let _ = fs::create_dir_all(&dir);
        let link = dir.join(&name);
        if link.symlink_metadata().is_ok()
            || std::os::unix::fs::symlink(format!("../{port}"), &link).is_ok()
        {
            linked.push(name);
        }
    }
    linked.sort();
    linked
}

#[cfg(test)]
mod port_tests {
    use super::*;

    #[test]
    fn virtio_ports_get_their_udev_names() {
        let sys = tempfile::tempdir().unwrap();
        let dev = tempfile::tempdir().unwrap();
        for (port, name) in [
            ("vport1p1", "fabric0\n"),
            ("vport1p2", ""),
            ("vport1p3", "../evil"),
        ] {
            fs::create_dir_all(sys.path().join(port)).unwrap();
            fs::write(sys.path().join(port).join("name"), name).unwrap();
        }
        assert_eq!(link_virtio_ports(sys.path(), dev.path()), ["fabric0"]);
        let target = fs::read_link(dev.path().join("virtio-ports/fabric0")).unwrap();
        assert_eq!(target, PathBuf::from("../vport1p1"));
        assert_eq!(
            link_virtio_ports(sys.path(), dev.path()),
            ["fabric0"],
            "idempotent"
        );
    }
}
