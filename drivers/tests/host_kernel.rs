//! Tests on the build host's own kernel: the io_uring passthrough path end to end (on a device
//! that refuses NVMe commands), the O_DIRECT read probe on a real file, uevents and mounts (full
//! cycle as root; the typed permission error otherwise). NVMe, RDMA and the watchdog themselves
//! are only on the QEMU guest (drivers::selftest).

use std::path::Path;
use std::time::Duration;

use drivers::mount::{MountError, Mounter};
use drivers::nvme::{self, NvmeController, NvmeError, Transport};
use drivers::uevent::{DeviceEvent, UeventAction, UeventListener};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn uring_passthrough_reaches_the_kernel_and_fails_typed_on_a_non_nvme_device() {
    // /dev/null implements uring_cmd as a no-op that completes with 0 (drivers/char/mem.c, for
    // testing this path): the command goes through the SQE128/CQE32 ring and back.
    let mut null = NvmeController::open(Path::new("/dev/null"), Transport::Uring)
        .expect("ring with SQE128/CQE32");
    assert_eq!(
        null.smart_log()
            .expect("null uring_cmd completes")
            .critical_warning,
        0
    );
    for transport in [Transport::Uring, Transport::Ioctl] {
        let mut controller =
            NvmeController::open(Path::new("/dev/zero"), transport).expect("open /dev/zero");
        match controller.smart_log() {
            Err(NvmeError::Submit {
                path,
                opcode,
                transport: t,
                source,
            }) => {
                assert_eq!((path.as_str(), opcode, t), ("/dev/zero", 0x02, transport));
                let errno = source.raw_os_error().expect("an errno");
                assert!(
                    [libc::EOPNOTSUPP, libc::ENOTTY, libc::EINVAL].contains(&errno),
                    "{transport:?}: {source}"
                );
            }
            other => panic!("{transport:?}: /dev/zero must refuse an admin command, got {other:?}"),
        }
    }
    let best = NvmeController::open_best(Path::new("/dev/zero")).expect("falls back");
    assert_eq!(
        best.transport(),
        Transport::Ioctl,
        "a device refusing URING_CMD falls back to the ioctl"
    );
    assert!(matches!(
        NvmeController::open(Path::new("/dev/nvme-none"), Transport::Uring),
        Err(NvmeError::Open { .. })
    ));
}

#[test]
fn read_probe_reads_a_file_with_o_direct() {
    let dir =
        tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir on a disk filesystem");
    let path = dir.path().join("namespace.img");
    std::fs::write(&path, vec![0x5a; 1 << 20]).expect("write image");
    let probe = nvme::read_probe(&path, 1 << 20, 16).expect("O_DIRECT reads");
    assert_eq!((probe.reads, probe.block_bytes), (16, 4096));
    assert!(probe.max_us >= probe.median_us);
    let missing = dir.path().join("missing.img");
    assert!(matches!(
        nvme::read_probe(&missing, 1 << 20, 1),
        Err(NvmeError::Open { .. })
    ));
    std::fs::write(&missing, b"short").expect("write short file");
    assert!(matches!(
        nvme::read_probe(&missing, 1 << 20, 1),
        Err(NvmeError::Probe { offset: 0, .. })
    ));
}

#[test]
fn uevent_listener_receives_a_kernel_change_event() {
    let listener = UeventListener::open().expect("uevent sockets need no privilege");
    let net = Path::new("/sys/class/net/lo/uevent");
    let written = std::fs::write(net, "change");
    if !is_root() {
        let error = written.expect_err("only root may synthesize uevents");
        assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied);
        return;
    }
    written.expect("root synthesizes a change uevent");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let event = runtime.block_on(async {
        let mut stream = listener.into_stream().expect("register with tokio");
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match stream.next().await.expect("receive") {
                    DeviceEvent::Net { action, interface } if interface == "lo" => return action,
                    _ => continue,
                }
            }
        })
        .await
        .expect("the change uevent arrives")
    });
    assert_eq!(event, UeventAction::Change);
}

#[test]
fn mount_and_unmount_are_verified_in_mountinfo() {
    let mounter = Mounter::new(Path::new("/"));
    assert!(!mounter.mounts().expect("mountinfo parses").is_empty());
    let dir = tempfile::tempdir().expect("temp dir");
    let target = dir.path().join("mnt");
    let flags = nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV;
    let mounted = mounter.mount("selftest", &target, "tmpfs", flags, "size=1m,mode=0700");
    if !is_root() {
        match mounted {
            Err(MountError::Mount { source, .. }) => assert_eq!(source, nix::Error::EPERM),
            other => panic!("an unprivileged mount must fail with EPERM, got {other:?}"),
        }
        return;
    }
    let entry = mounted.expect("root mounts tmpfs");
    assert_eq!(
        (entry.fs_type.as_str(), entry.source.as_str()),
        ("tmpfs", "selftest")
    );
    assert!(
        entry.options.contains("nosuid") && entry.super_options.contains("size=1024k"),
        "{entry:?}"
    );
    mounter.unmount(&target).expect("unmount");
    assert_eq!(mounter.mounted_at(&target).expect("mountinfo"), None);
    assert!(matches!(
        mounter.unmount(&target),
        Err(MountError::Unmount { .. })
    ));
}

#[test]
fn mkfs_reports_a_missing_program_and_a_failing_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let image = dir.path().join("disk.img");
    match drivers::mount::mkfs(&image, "nosuchfs", "x") {
        Err(MountError::MkfsSpawn { program, .. }) => assert_eq!(program, "mkfs.nosuchfs"),
        other => panic!("expected MkfsSpawn, got {other:?}"),
    }
    std::fs::write(&image, vec![0u8; 8 << 20]).expect("blank image");
    drivers::mount::mkfs(&image, "ext4", "selftest").expect("mkfs.ext4 on an image file");
    let superblock_magic = &std::fs::read(&image).expect("read image")[1024 + 56..1024 + 58];
    assert_eq!(superblock_magic, &[0x53, 0xef], "ext4 superblock magic");
    match drivers::mount::mkfs(&dir.path().join("missing-dir/disk.img"), "ext4", "x") {
        Err(MountError::MkfsFailed { stderr, .. }) => assert!(!stderr.is_empty()),
        other => panic!("expected MkfsFailed, got {other:?}"),
    }
}

#[test]
fn watchdog_errors_name_the_ioctl_and_the_path() {
    use drivers::watchdog::{Watchdog, WatchdogError};
    match Watchdog::open(Path::new("/dev/watchdog-none")) {
        Err(WatchdogError::Open { path, .. }) => assert_eq!(path, "/dev/watchdog-none"),
        other => panic!("expected Open, got {other:?}"),
    }
    // /dev/null takes writes but no watchdog ioctl: every step fails typed, the magic close works.
    let mut not_a_watchdog = Watchdog::open(Path::new("/dev/null")).expect("open /dev/null");
    assert!(matches!(
        not_a_watchdog.set_timeout(0),
        Err(WatchdogError::BadTimeout { secs: 0 })
    ));
    match not_a_watchdog.set_timeout(30) {
        Err(WatchdogError::Ioctl {
            operation,
            path,
            source,
        }) => {
            assert_eq!(
                (operation, path.as_str(), source),
                ("WDIOC_SETTIMEOUT", "/dev/null", nix::Error::ENOTTY)
            )
        }
        other => panic!("expected Ioctl, got {other:?}"),
    }
    assert!(matches!(
        not_a_watchdog.keepalive(),
        Err(WatchdogError::Ioctl {
            operation: "WDIOC_KEEPALIVE",
            ..
        })
    ));
    not_a_watchdog
        .close()
        .expect("the magic 'V' is a plain write");
}

#[test]
fn link_up_on_loopback_and_bad_names() {
    use drivers::rdma::{set_link_up, RdmaError};
    for bad in ["", "a-name-longer-than-ifnamsiz", "a\0b"] {
        assert!(
            matches!(set_link_up(bad), Err(RdmaError::BadName { .. })),
            "{bad:?}"
        );
    }
    match set_link_up("nosuchif0") {
        Err(RdmaError::LinkUp {
            interface,
            operation,
            source,
        }) => {
            assert_eq!(
                (interface.as_str(), operation, source),
                ("nosuchif0", "SIOCGIFFLAGS", nix::Error::ENODEV)
            )
        }
        other => panic!("expected LinkUp ENODEV, got {other:?}"),
    }
    match set_link_up("lo") {
        Ok(()) => assert!(is_root(), "only root may set interface flags"),
        Err(RdmaError::LinkUp {
            operation, source, ..
        }) => {
            assert!(!is_root(), "root must be able to set lo up: {source}");
            assert_eq!((operation, source), ("SIOCSIFFLAGS", nix::Error::EPERM));
        }
        Err(other) => panic!("unexpected {other:?}"),
    }
}
