//! PCI, RDMA sysfs and LinuxHost against fake sysfs trees built from tests/fixtures.

mod common;

use std::time::Duration;

use drivers::linux::LinuxHost;
use drivers::pci::{DeviceRole, PciBus, PciError};
use drivers::rdma::{RdmaError, RdmaSysfs};
use drivers::{ClassCode, Host, HostError, PciAddress};

fn addr(text: &str) -> PciAddress {
    text.parse().expect("valid address in the test")
}

#[test]
fn enumerates_the_tree_recorded_on_this_host() {
    let root = common::tree(&["host-recorded.tree"]);
    let bus = PciBus::new(root.path());
    let devices = bus.devices().expect("the recorded tree enumerates");
    assert_eq!(devices.len(), 6, "{devices:#?}");
    let net = devices
        .iter()
        .find(|d| d.address == addr("0000:00:03.0"))
        .expect("virtio-net recorded");
    assert_eq!(
        (net.vendor_id, net.device_id, net.class),
        (0x1af4, 0x1041, ClassCode(0x020000))
    );
    assert_eq!(net.role(), DeviceRole::Ethernet);
    assert_eq!(net.driver.as_deref(), Some("virtio-pci"));
    assert_eq!(
        net.numa_node, None,
        "numa_node -1 means no NUMA information"
    );
    let bridge = devices
        .iter()
        .find(|d| d.address == addr("0000:00:00.0"))
        .expect("host bridge recorded");
    assert_eq!(bridge.driver, None);
    assert_eq!(bus.slots().expect("no slots dir is no slots"), vec![]);
}

#[test]
fn enumerates_a_q35_guest_with_slots() {
    let root = common::tree(&["q35-guest.tree"]);
    let bus = PciBus::new(root.path());
    let devices = bus.devices().expect("q35 tree enumerates");
    assert_eq!(devices.len(), 8);
    let nvme = bus.device(addr("0000:01:00.0")).expect("nvme present");
    assert_eq!(nvme.role(), DeviceRole::Nvme);
    assert_eq!((nvme.vendor_id, nvme.device_id), (0x1b36, 0x0010));
    assert_eq!(
        (nvme.subsystem_vendor_id, nvme.subsystem_device_id),
        (Some(0x1af4), Some(0x1100))
    );
    assert_eq!(nvme.driver.as_deref(), Some("nvme"));
    assert_eq!(nvme.link_speed.as_deref(), Some("16.0 GT/s PCIe"));
    assert_eq!((nvme.link_width, nvme.iommu_group), (Some(32), Some(3)));
    let net = bus.device(addr("0000:02:00.0")).expect("net present");
    assert_eq!(
        (net.link_speed, net.link_width),
        (None, None),
        "Unknown speed and width 0 are no link"
    );
    let gpu = bus.device(addr("0000:04:00.0")).expect("display present");
    assert_eq!((gpu.role(), gpu.driver), (DeviceRole::Display, None));

    let slots = bus.slots().expect("slots");
    let names: Vec<_> = slots.iter().map(|s| (s.number(), s.power)).collect();
    assert_eq!(
        names,
        vec![
            (Some(1), Some(true)),
            (Some(2), Some(true)),
            (Some(3), Some(false)),
            (Some(4), Some(true))
        ]
    );
    let in_one: Vec<_> = bus
        .devices_in_slot(&slots[0])
        .expect("slot 1")
        .into_iter()
        .map(|d| d.address)
        .collect();
    assert_eq!(in_one, vec![addr("0000:01:00.0")]);
    assert!(bus.devices_in_slot(&slots[2]).expect("slot 3").is_empty());
    assert_eq!(
        bus.slot_of(addr("0000:04:00.0"))
            .expect("lookup")
            .map(|s| s.name),
        Some("4".to_string())
    );
}

#[test]
fn classifies_class_codes() {
    use drivers::pci::classify;
    let cases = [
        (0x030000, DeviceRole::Display),
        (0x030200, DeviceRole::Display),
        (0x010802, DeviceRole::Nvme),
        (0x010801, DeviceRole::Other),
        (0x020000, DeviceRole::Ethernet),
        (0x020700, DeviceRole::Infiniband),
        (0x010700, DeviceRole::Sas),
        (0x010000, DeviceRole::Sas),
        (0x010400, DeviceRole::Sas),
        (0x0c0400, DeviceRole::Sas),
        (0x010600, DeviceRole::Other),
        (0x060400, DeviceRole::Other),
    ];
    for (class, role) in cases {
        assert_eq!(classify(ClassCode(class)), role, "class {class:#08x}");
    }
}

#[test]
fn a_device_that_vanishes_between_listing_and_reading_is_skipped() {
    let root = common::tree(&["q35-guest.tree", "vanished.tree"]);
    let bus = PciBus::new(root.path());
    assert_eq!(bus.devices().expect("vanished device is skipped").len(), 8);
    match bus.device(addr("0000:05:00.0")) {
        Err(PciError::Vanished { address, path }) => {
            assert_eq!(address, addr("0000:05:00.0"));
            assert!(path.ends_with("sys/bus/pci/devices/0000:05:00.0"), "{path}");
        }
        other => panic!("expected Vanished, got {other:?}"),
    }
}

#[test]
fn a_missing_mandatory_file_is_an_error_naming_it() {
    let root = common::tree(&["q35-guest.tree"]);
    std::fs::remove_file(
        root.path()
            .join("sys/devices/pci0000:00/0000:00:02.0/0000:01:00.0/class"),
    )
    .expect("rm class");
    let error = PciBus::new(root.path())
        .devices()
        .expect_err("missing class must fail");
    let text = format!(
        "{error}: {}",
        std::error::Error::source(&error).expect("has a source")
    );
    assert!(
        text.contains("0000:01:00.0") && text.contains("/class"),
        "{text}"
    );
}

#[test]
fn garbage_values_are_refused_with_path_and_value() {
    let expected_values = [
        "0xZZZZ",
        "0x1080200",
        "zero",
        "on",
        "0000:01",
        "bogus",
        "ACTIVE",
    ];
    for (line, value) in common::lines("garbage.tree").iter().zip(expected_values) {
        let root = common::tree(&["q35-guest.tree"]);
        common::apply_line(root.path(), line);
        let bus = PciBus::new(root.path());
        let error: Box<dyn std::error::Error> = if line.contains("infiniband") {
            Box::new(RdmaSysfs::new(root.path()).devices().expect_err(line))
        } else if line.contains("slots") {
            Box::new(bus.slots().expect_err(line))
        } else {
            Box::new(bus.devices().expect_err(line))
        };
        let text = drivers::error_chain(error.as_ref());
        assert!(
            text.contains(value),
            "{line}: error {text:?} does not name {value:?}"
        );
        assert!(
            text.contains('/') || text.contains("bogus"),
            "{line}: error {text:?} does not name the path"
        );
    }
}

#[test]
fn slot_power_remove_and_rescan_write_the_right_files() {
    let root = common::tree(&["q35-guest.tree"]);
    let bus = PciBus::new(root.path());
    bus.set_slot_power("3", true).expect("power on");
    assert_eq!(bus.slot("3").expect("slot 3").power, Some(true));
    bus.remove(addr("0000:01:00.0")).expect("remove");
    let removed = std::fs::read_to_string(
        root.path()
            .join("sys/devices/pci0000:00/0000:00:02.0/0000:01:00.0/remove"),
    );
    assert_eq!(removed.expect("remove written"), "1");
    bus.rescan().expect("rescan");
    assert_eq!(
        std::fs::read_to_string(root.path().join("sys/bus/pci/rescan")).expect("rescan written"),
        "1"
    );
    assert!(matches!(bus.slot("9"), Err(PciError::NoSlot { .. })));
    assert!(matches!(
        bus.set_slot_power("9", true),
        Err(PciError::SlotPower { .. })
    ));
}

#[test]
fn bind_writes_override_unbinds_and_probes_then_times_out_without_a_kernel() {
    let root = common::tree(&["q35-guest.tree"]);
    let bus = PciBus::new(root.path());
    let nvme = addr("0000:01:00.0");
    bus.bind(nvme, Some("nvme"), Duration::from_millis(1))
        .expect("already bound is done");
    match bus.bind(nvme, Some("vfio-pci"), Duration::from_millis(30)) {
        Err(PciError::BindTimeout { actual, driver, .. }) => {
            assert_eq!(
                (actual.as_deref(), driver.as_str()),
                (Some("nvme"), "vfio-pci")
            )
        }
        other => panic!("expected BindTimeout, got {other:?}"),
    }
    let read = |p: &str| std::fs::read_to_string(root.path().join(p)).expect("written");
    assert_eq!(
        read("sys/devices/pci0000:00/0000:00:02.0/0000:01:00.0/driver_override"),
        "vfio-pci"
    );
    assert_eq!(read("sys/bus/pci/drivers/nvme/unbind"), "0000:01:00.0");
    assert_eq!(read("sys/bus/pci/drivers_probe"), "0000:01:00.0");
    match bus.bind(nvme, Some("mlx5_core"), Duration::from_millis(1)) {
        Err(PciError::NoDriver { path, .. }) => {
            assert!(path.ends_with("drivers/mlx5_core"), "{path}")
        }
        other => panic!("expected NoDriver, got {other:?}"),
    }
}

#[test]
fn bind_returns_once_the_kernel_shows_the_driver() {
    let root = common::tree(&["q35-guest.tree"]);
    let bus = PciBus::new(root.path());
    let gpu = addr("0000:04:00.0");
    let device_dir = root
        .path()
        .join("sys/devices/pci0000:00/0000:00:02.3/0000:04:00.0");
    let probe = root.path().join("sys/bus/pci/drivers_probe");
    std::thread::scope(|scope| {
        // A stand-in for the kernel: when the address is written to drivers_probe, bind to the
        // driver named in driver_override.
        let kernel = scope.spawn(|| {
            let probed =
                drivers::try_wait_until(Duration::from_secs(10), Duration::from_millis(1), || {
                    Ok::<_, std::io::Error>(
                        std::fs::read_to_string(&probe)?
                            .contains("0000:04:00.0")
                            .then_some(()),
                    )
                });
            assert!(
                probed.expect("read probe").is_some(),
                "bind never wrote drivers_probe"
            );
            let driver =
                std::fs::read_to_string(device_dir.join("driver_override")).expect("override");
            let target = format!("../../../../bus/pci/drivers/{driver}");
            std::os::unix::fs::symlink(target, device_dir.join("driver")).expect("link driver");
        });
        bus.bind(gpu, Some("vfio-pci"), Duration::from_secs(10))
            .expect("bound once the kernel links it");
        kernel.join().expect("fake kernel");
    });
    assert_eq!(
        bus.device(gpu).expect("gpu").driver.as_deref(),
        Some("vfio-pci")
    );
}

#[test]
fn rdma_devices_and_ports_from_sysfs() {
    let root = common::tree(&["q35-guest.tree"]);
    let devices = RdmaSysfs::new(root.path())
        .devices()
        .expect("rdma enumerates");
    assert_eq!(devices.len(), 1);
    let port = &devices[0].ports[0];
    assert_eq!((devices[0].name.as_str(), port.number), ("rxe0", 1));
    assert!(port.is_active());
    assert_eq!(
        (port.phys_state.as_str(), port.link_layer.as_str()),
        ("LinkUp", "Ethernet")
    );
    assert_eq!(port.rate, "10 Gb/sec (1X QDR)");
    assert_eq!(
        port.gids.len(),
        2,
        "the all-zero GID is left out: {:?}",
        port.gids
    );
    assert_eq!(port.netdev.as_deref(), Some("eth0"));
    let empty = tempfile::tempdir().expect("tmp");
    assert!(RdmaSysfs::new(empty.path())
        .devices()
        .expect("no class dir")
        .is_empty());
    assert!(matches!(
        RdmaSysfs::new(root.path()).device("mlx5_0"),
        Err(RdmaError::Enumerate(_))
    ));
}

#[test]
fn linux_host_on_a_fake_tree() {
    let root = common::tree(&["q35-guest.tree"]);
    let host = LinuxHost::new(root.path()).expect("tree has a PCI bus");
    let present: Vec<_> = host
        .present()
        .expect("present")
        .into_iter()
        .map(|d| (d.address, d.slot))
        .collect();
    assert_eq!(
        present,
        vec![
            (addr("0000:01:00.0"), Some(1)),
            (addr("0000:02:00.0"), Some(2)),
            (addr("0000:04:00.0"), Some(4))
        ]
    );
    let nvme = host
        .wait_for_device(1, Duration::from_millis(10))
        .expect("slot 1 is occupied");
    assert_eq!(
        (nvme.class, nvme.driver.as_deref()),
        (ClassCode::NVME, Some("nvme"))
    );
    host.wait_for_removal(3, Duration::from_millis(10))
        .expect("slot 3 is empty");
    match host.wait_for_device(3, Duration::from_millis(20)) {
        Err(HostError::Timeout { what, timeout_ms }) => {
            assert_eq!((what.as_str(), timeout_ms), ("a device in slot 3", 20))
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(
        host.nvme_char_device(addr("0000:01:00.0")).expect("nvme0"),
        root.path().join("dev/nvme0")
    );
    match host.identify_nvme(addr("0000:01:00.0")) {
        Err(HostError::Device { reason, .. }) => assert!(reason.contains("dev/nvme0"), "{reason}"),
        other => panic!("identify without /dev/nvme0 must fail naming it, got {other:?}"),
    }
    match host.bind(
        addr("0000:04:00.0"),
        drivers::DriverChoice::Nvme,
        Duration::from_millis(10),
    ) {
        Err(HostError::Timeout { what, .. }) => assert!(what.contains("0000:04:00.0"), "{what}"),
        other => panic!("expected Timeout, got {other:?}"),
    }
    let empty = tempfile::tempdir().expect("tmp");
    assert!(matches!(
        LinuxHost::new(empty.path()),
        Err(HostError::Io { .. })
    ));
}

#[test]
fn uevents_become_host_observations_with_their_slot() {
    use drivers::linux::observation_of;
    use drivers::HostObservation;
    let root = common::tree(&["q35-guest.tree"]);
    let bus = PciBus::new(root.path());
    let raw = |action: &str, address: &str| {
        let text = format!("{action}@/devices/pci0000:00/0000:00:02.2/{address}\0ACTION={action}\0DEVPATH=/devices/pci0000:00/0000:00:02.2/{address}\0SUBSYSTEM=pci\0PCI_SLOT_NAME={address}\0SEQNUM=5\0");
        drivers::uevent::parse(text.as_bytes())
            .expect("valid")
            .expect("kernel")
    };
    // Slot 3 is empty in the tree: the slot is known from its address even for a removed device.
    let added = observation_of(&raw("add", "0000:03:00.0"), &bus, root.path());
    assert_eq!(
        added,
        Some(HostObservation::DeviceAdded {
            address: addr("0000:03:00.0"),
            slot: Some(3)
        })
    );
    let removed = observation_of(&raw("remove", "0000:03:00.0"), &bus, root.path());
    assert_eq!(
        removed,
        Some(HostObservation::DeviceRemoved {
            address: addr("0000:03:00.0"),
            slot: Some(3)
        })
    );
    assert_eq!(
        observation_of(&raw("bind", "0000:03:00.0"), &bus, root.path()),
        None
    );
    let outside = observation_of(&raw("add", "0000:00:1f.0"), &bus, root.path());
    assert_eq!(
        outside,
        Some(HostObservation::DeviceAdded {
            address: addr("0000:00:1f.0"),
            slot: None
        })
    );
    let aen = b"change@/devices/virtual/nvme-subsystem/nvme0\0ACTION=change\0DEVPATH=/devices/virtual/nvme-subsystem/nvme0\0SUBSYSTEM=nvme\0DEVNAME=nvme0\0NVME_AEN=0x000002\0";
    let aen = drivers::uevent::parse(aen).expect("valid").expect("kernel");
    assert_eq!(
        observation_of(&aen, &bus, root.path()),
        None,
        "no /dev/nvme0 in the fake tree: logged, no observation"
    );
}

#[test]
fn an_oversized_attribute_is_refused() {
    let root = common::tree(&["q35-guest.tree"]);
    let vendor = root
        .path()
        .join("sys/devices/pci0000:00/0000:00:02.0/0000:01:00.0/vendor");
    std::fs::write(&vendor, "0".repeat(5000)).expect("write a huge vendor file");
    match drivers::sysfs::read(&vendor) {
        Err(drivers::sysfs::SysfsError::TooLong { path, bytes }) => {
            assert!(
                path.ends_with("/vendor") && bytes > drivers::sysfs::ATTRIBUTE_BYTES_MAX,
                "{path} {bytes}"
            )
        }
        other => panic!("expected TooLong, got {other:?}"),
    }
    assert!(PciBus::new(root.path()).devices().is_err());
}

#[test]
fn a_recorded_tree_replays_to_the_same_devices_slots_and_ports() {
    let original = common::tree(&["q35-guest.tree"]);
    let mut recorded = Vec::new();
    drivers::selftest::record_tree(original.path(), &mut recorded);
    let replayed = tempfile::tempdir().expect("tmp");
    for line in String::from_utf8(recorded).expect("utf8").lines() {
        let line = line
            .strip_prefix("SELFTEST FIXTURE ")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        common::apply_line(replayed.path(), line);
    }
    let (a, b) = (PciBus::new(original.path()), PciBus::new(replayed.path()));
    assert_eq!(
        a.devices().expect("original"),
        b.devices().expect("replayed")
    );
    assert_eq!(a.slots().expect("original"), b.slots().expect("replayed"));
    let (a, b) = (
        RdmaSysfs::new(original.path()),
        RdmaSysfs::new(replayed.path()),
    );
    assert_eq!(
        a.devices().expect("original"),
        b.devices().expect("replayed")
    );
}

#[test]
fn enumerates_the_tree_recorded_in_the_qemu_guest() {
    let root = common::tree(&["q35-recorded.tree"]);
    let bus = PciBus::new(root.path());
    let devices = bus.devices().expect("recorded guest tree enumerates");
    assert_eq!(devices.len(), 13);
    let nvme = bus
        .device(addr("0000:04:00.0"))
        .expect("the hot-added NVMe");
    assert_eq!(
        (nvme.role(), nvme.driver.as_deref(), nvme.iommu_group),
        (DeviceRole::Nvme, Some("nvme"), Some(10))
    );
    assert_eq!(
        (nvme.link_speed.as_deref(), nvme.link_width),
        (Some("2.5 GT/s PCIe"), Some(1))
    );
    let watchdog = bus.device(addr("0000:00:07.0")).expect("i6300esb");
    assert_eq!(
        watchdog.driver.as_deref(),
        Some("i6300ESB timer"),
        "driver names may hold spaces"
    );
    let powered: Vec<_> = bus
        .slots()
        .expect("slots")
        .into_iter()
        .map(|s| (s.name, s.power))
        .collect();
    let expected = [("1", false), ("2", false), ("3", false), ("4", true)];
    assert_eq!(
        powered,
        expected.map(|(n, p)| (n.to_string(), Some(p))).to_vec()
    );
    let host = LinuxHost::new(root.path()).expect("host");
    let present: Vec<_> = host
        .present()
        .expect("present")
        .into_iter()
        .map(|d| (d.address, d.slot))
        .collect();
    assert_eq!(present, vec![(addr("0000:04:00.0"), Some(4))]);
    let nets: Vec<_> = devices
        .iter()
        .filter(|d| d.role() == DeviceRole::Ethernet)
        .map(|d| d.address)
        .collect();
    assert_eq!(nets, vec![addr("0000:00:06.0")]);
    let rxe = RdmaSysfs::new(root.path())
        .device("rxe0")
        .expect("rxe0 recorded");
    assert!(
        rxe.ports[0].is_active() && rxe.ports[0].netdev.as_deref() == Some("eth0"),
        "{rxe:?}"
    );
}
