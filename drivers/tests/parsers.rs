//! Parsers and encoders on bytes: uevents, NVMe command layout and Identify/SMART data, RDMA
//! netlink messages, mountinfo.

mod common;

use std::mem::offset_of;

use drivers::mount::parse_mountinfo;
use drivers::nvme::{self, NvmeAdminCmd, NvmeError, Page};
use drivers::rdma;
use drivers::uevent::{self, DeviceEvent, UeventAction, UeventError};
use drivers::PciAddress;

#[test]
fn parses_a_uevent_recorded_from_this_hosts_kernel() {
    let bytes = std::fs::read(common::fixture_path("uevent-pci-change-host.bin")).expect("fixture");
    let event = uevent::parse(&bytes)
        .expect("valid")
        .expect("a kernel message");
    assert_eq!(event.action, UeventAction::Change);
    assert_eq!(event.devpath, "/devices/pci0000:00/0000:00:03.0");
    assert_eq!((event.subsystem.as_str(), event.seqnum), ("pci", Some(831)));
    assert_eq!(
        event.vars.get("PCI_ID").map(String::as_str),
        Some("1AF4:1041")
    );
    let address: PciAddress = "0000:00:03.0".parse().expect("address");
    assert_eq!(
        event.device_event(),
        Some(DeviceEvent::Pci {
            action: UeventAction::Change,
            address,
            driver: Some("virtio-pci".into())
        })
    );
}

#[test]
fn types_nvme_infiniband_and_net_uevents() {
    let cases: [(&[u8], DeviceEvent); 4] = [
        (
            b"add@/devices/pci0000:00/0000:00:02.0/0000:01:00.0\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:02.0/0000:01:00.0\0SUBSYSTEM=pci\0PCI_SLOT_NAME=0000:01:00.0\0SEQNUM=1200\0",
            DeviceEvent::Pci { action: UeventAction::Add, address: "0000:01:00.0".parse().expect("a"), driver: None },
        ),
        (
            b"add@/devices/pci0000:00/0000:00:02.0/0000:01:00.0/nvme/nvme0\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:02.0/0000:01:00.0/nvme/nvme0\0SUBSYSTEM=nvme\0MAJOR=239\0MINOR=0\0DEVNAME=nvme0\0SEQNUM=1201\0",
            DeviceEvent::Nvme { action: UeventAction::Add, name: "nvme0".into() },
        ),
        (
            b"add@/devices/virtual/net/eth0/rxe0\0ACTION=add\0DEVPATH=/devices/virtual/net/eth0/rxe0\0SUBSYSTEM=infiniband\0NAME=rxe0\0SEQNUM=1300\0",
            DeviceEvent::Infiniband { action: UeventAction::Add, name: "rxe0".into() },
        ),
        (
            b"remove@/devices/virtual/net/dummy0\0ACTION=remove\0DEVPATH=/devices/virtual/net/dummy0\0SUBSYSTEM=net\0INTERFACE=dummy0\0IFINDEX=7\0SEQNUM=1400\0",
            DeviceEvent::Net { action: UeventAction::Remove, interface: "dummy0".into() },
        ),
    ];
    for (bytes, expected) in cases {
        let event = uevent::parse(bytes)
            .expect("valid")
            .expect("kernel message");
        assert_eq!(event.device_event(), Some(expected));
    }
    let cpu = b"online@/devices/system/cpu/cpu1\0ACTION=online\0DEVPATH=/devices/system/cpu/cpu1\0SUBSYSTEM=cpu\0SEQNUM=9\0";
    assert_eq!(
        uevent::parse(cpu)
            .expect("valid")
            .expect("kernel")
            .device_event(),
        None
    );
}

#[test]
fn skips_libudev_and_refuses_garbage() {
    let mut udev = b"libudev\0".to_vec();
    udev.extend_from_slice(&[0xfe, 0xed, 0xca, 0xfe, 0, 0, 0, 0x28]);
    assert_eq!(
        uevent::parse(&udev).expect("udev message is not an error"),
        None
    );
    let garbage: [&[u8]; 5] = [
        b"",
        b"no header here\0ACTION=add\0",
        b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0SEQNUM=1\0",
        b"add@/devices/x\0ACTION=remove\0DEVPATH=/devices/x\0SUBSYSTEM=pci\0",
        b"add@/devices/x\0ACTION=add\0SUBSYSTEM=pci\0SEQNUM=twelve\0",
    ];
    for bytes in garbage {
        assert!(
            matches!(uevent::parse(bytes), Err(UeventError::Malformed { .. })),
            "{bytes:?} must be refused"
        );
    }
    let huge = vec![b'a'; uevent::MESSAGE_BYTES_MAX + 1];
    assert!(matches!(
        uevent::parse(&huge),
        Err(UeventError::TooLong { .. })
    ));
}

#[test]
fn nvme_command_layout_matches_the_kernel_header() {
    assert_eq!(std::mem::size_of::<NvmeAdminCmd>(), 72);
    let offsets = [
        (offset_of!(NvmeAdminCmd, opcode), 0),
        (offset_of!(NvmeAdminCmd, flags), 1),
        (offset_of!(NvmeAdminCmd, nsid), 4),
        (offset_of!(NvmeAdminCmd, cdw2), 8),
        (offset_of!(NvmeAdminCmd, metadata), 16),
        (offset_of!(NvmeAdminCmd, addr), 24),
        (offset_of!(NvmeAdminCmd, metadata_len), 32),
        (offset_of!(NvmeAdminCmd, data_len), 36),
        (offset_of!(NvmeAdminCmd, cdw10), 40),
        (offset_of!(NvmeAdminCmd, cdw15), 60),
        (offset_of!(NvmeAdminCmd, timeout_ms), 64),
        (offset_of!(NvmeAdminCmd, result), 68),
    ];
    for (actual, expected) in offsets {
        assert_eq!(actual, expected);
    }
    // Values computed by the C compiler from linux/nvme_ioctl.h on this host.
    assert_eq!(nvme::NVME_IOCTL_ADMIN_CMD, 0xc048_4e41);
    assert_eq!(nvme::NVME_URING_CMD_ADMIN, 0xc048_4e82);
    assert_eq!(std::mem::align_of::<Page>(), 4096);
}

#[test]
fn nvme_commands_encode_identify_and_get_log_page() {
    let mut page = Page::default();
    let cmd = nvme::get_log_page_command(
        nvme::LOG_SMART,
        nvme::NSID_ALL,
        nvme::SMART_LOG_BYTES,
        &mut page,
    );
    assert_eq!(
        (cmd.opcode, cmd.nsid, cmd.data_len),
        (0x02, 0xffff_ffff, 512)
    );
    assert_eq!(cmd.cdw10, (127 << 16) | 0x02, "NUMDL = 512/4 - 1, LID = 2");
    let bytes = cmd.to_uring_bytes();
    assert_eq!(bytes[0], 0x02);
    assert_eq!(&bytes[4..8], &0xffff_ffffu32.to_ne_bytes());
    assert_eq!(&bytes[24..32], &(page.0.as_ptr() as u64).to_ne_bytes());
    assert_eq!(&bytes[36..40], &512u32.to_ne_bytes());
    assert_eq!(&bytes[40..44], &((127u32 << 16) | 2).to_ne_bytes());
    assert_eq!(&bytes[64..68], &nvme::ADMIN_TIMEOUT_MS.to_ne_bytes());
    assert!(bytes[72..].iter().all(|b| *b == 0));
    let id = nvme::identify_command(nvme::CNS_CONTROLLER, 0, &mut page);
    assert_eq!((id.opcode, id.cdw10, id.data_len), (0x06, 1, 4096));
}

/// Identify Controller data as QEMU's nvme device fills it for serial NVME0001.
fn identify_controller_bytes() -> Vec<u8> {
    let mut data = vec![0u8; 4096];
    data[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
    data[4..24].copy_from_slice(b"NVME0001            ");
    data[24..64].copy_from_slice(b"QEMU NVMe Ctrl                          ");
    data[64..72].copy_from_slice(b"9.2.0   ");
    data[280..296].copy_from_slice(&(64u128 << 20).to_le_bytes());
    data[516..520].copy_from_slice(&256u32.to_le_bytes());
    data
}

#[test]
fn parses_identify_controller_and_refuses_garbage() {
    let id = nvme::parse_identify_controller(&identify_controller_bytes()).expect("valid");
    assert_eq!(
        (id.serial.as_str(), id.model.as_str(), id.firmware.as_str()),
        ("NVME0001", "QEMU NVMe Ctrl", "9.2.0")
    );
    assert_eq!(
        (id.vendor_id, id.total_capacity_bytes, id.namespaces),
        (0x1b36, 64 << 20, 256)
    );
    let mut bad = identify_controller_bytes();
    bad[6] = 0xff;
    match nvme::parse_identify_controller(&bad) {
        Err(NvmeError::BadField { field, .. }) => assert_eq!(field, "SN"),
        other => panic!("expected BadField SN, got {other:?}"),
    }
    assert!(matches!(
        nvme::parse_identify_controller(&[0u8; 100]),
        Err(NvmeError::Short { bytes: 100, .. })
    ));
}

#[test]
fn parses_identify_namespace_and_refuses_garbage() {
    let mut data = vec![0u8; 4096];
    data[0..8].copy_from_slice(&131_072u64.to_le_bytes());
    data[8..16].copy_from_slice(&131_072u64.to_le_bytes());
    data[16..24].copy_from_slice(&100u64.to_le_bytes());
    data[25] = 1; // two formats
    data[26] = 1; // using format 1
    data[128 + 2] = 9;
    data[128 + 4 + 2] = 12;
    let ns = nvme::parse_identify_namespace(&data).expect("valid");
    assert_eq!(
        (ns.size_blocks, ns.block_bytes, ns.size_bytes()),
        (131_072, 4096, 512 << 20)
    );
    let mut bad = data.clone();
    bad[26] = 5;
    assert!(matches!(
        nvme::parse_identify_namespace(&bad),
        Err(NvmeError::BadField { field: "FLBAS", .. })
    ));
    let mut bad = data.clone();
    bad[128 + 4 + 2] = 40;
    assert!(matches!(
        nvme::parse_identify_namespace(&bad),
        Err(NvmeError::BadField { field: "LBADS", .. })
    ));
    let mut bad = data;
    bad[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        nvme::parse_identify_namespace(&bad),
        Err(NvmeError::BadField { field: "NCAP", .. })
    ));
}

#[test]
fn parses_the_smart_log_and_refuses_garbage() {
    let mut data = vec![0u8; 512];
    data[0] = 0x02;
    data[1..3].copy_from_slice(&323u16.to_le_bytes());
    data[3] = 100;
    data[4] = 10;
    data[5] = 3;
    data[144..160].copy_from_slice(&7u128.to_le_bytes());
    data[160..176].copy_from_slice(&42u128.to_le_bytes());
    let log = nvme::parse_smart_log(&data).expect("valid");
    assert_eq!(
        (
            log.critical_warning,
            log.temperature_kelvin,
            log.available_spare_percent
        ),
        (2, 323, 100)
    );
    assert_eq!(
        (log.percentage_used, log.unsafe_shutdowns, log.media_errors),
        (3, 7, 42)
    );
    data[3] = 200;
    assert!(matches!(
        nvme::parse_smart_log(&data),
        Err(NvmeError::BadField {
            field: "available spare",
            ..
        })
    ));
    assert!(matches!(
        nvme::parse_smart_log(&data[..511]),
        Err(NvmeError::Short { bytes: 511, .. })
    ));
}

#[test]
fn rdma_newlink_and_dellink_bytes() {
    let message = rdma::encode_newlink(7, "rxe0", "rxe", "eth0").expect("valid names");
    let mut expected = Vec::new();
    expected.extend_from_slice(&48u32.to_ne_bytes()); // 16 header + 3 attributes of 12, 8, 12 bytes
    expected.extend_from_slice(&((5u16 << 10) + 3).to_ne_bytes()); // RDMA_NL_NLDEV, NEWLINK
    expected.extend_from_slice(&5u16.to_ne_bytes()); // NLM_F_REQUEST | NLM_F_ACK
    expected.extend_from_slice(&7u32.to_ne_bytes());
    expected.extend_from_slice(&0u32.to_ne_bytes());
    expected.extend_from_slice(&9u16.to_ne_bytes());
    expected.extend_from_slice(&2u16.to_ne_bytes()); // DEV_NAME
    expected.extend_from_slice(b"rxe0\0\0\0\0");
    expected.extend_from_slice(&8u16.to_ne_bytes());
    expected.extend_from_slice(&65u16.to_ne_bytes()); // LINK_TYPE
    expected.extend_from_slice(b"rxe\0");
    expected.extend_from_slice(&9u16.to_ne_bytes());
    expected.extend_from_slice(&51u16.to_ne_bytes()); // NDEV_NAME
    expected.extend_from_slice(b"eth0\0\0\0\0");
    assert_eq!(message, expected);

    let del = rdma::encode_dellink(8, 3);
    assert_eq!(del.len(), 24);
    assert_eq!(&del[4..6], &((5u16 << 10) + 4).to_ne_bytes());
    assert_eq!(
        &del[16..24],
        &[
            &8u16.to_ne_bytes()[..],
            &1u16.to_ne_bytes(),
            &3u32.to_ne_bytes()
        ]
        .concat()[..]
    );

    for bad in ["", "a\0b", &"x".repeat(64)] {
        assert!(
            rdma::encode_newlink(1, bad, "rxe", "eth0").is_err(),
            "{bad:?} must be refused"
        );
    }
}

#[test]
fn rdma_reply_parsing_handles_acks_and_garbage() {
    let reply = rdma::encode_newlink(1, "rxe0", "rxe", "eth0").expect("valid");
    let messages = rdma::split_messages("test", &reply).expect("one message");
    assert_eq!(messages.len(), 1);
    let attributes = rdma::parse_attributes("test", &messages[0].payload).expect("attributes");
    assert_eq!(attributes[0], (2, b"rxe0\0".to_vec()));
    let mut truncated = reply.clone();
    truncated[0] = 200;
    assert!(rdma::split_messages("test", &truncated).is_err());
    assert!(rdma::parse_attributes("test", &[40, 0, 1, 0, 0]).is_err());
}

#[test]
fn parses_mountinfo_recorded_on_this_host() {
    let text =
        std::fs::read_to_string(common::fixture_path("mountinfo-host.txt")).expect("fixture");
    let mounts = parse_mountinfo("mountinfo-host.txt", &text).expect("valid");
    assert!(
        mounts
            .iter()
            .any(|m| m.mount_point == "/proc" && m.fs_type == "proc"),
        "{mounts:#?}"
    );
    let escaped = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n";
    let entry = &parse_mountinfo("inline", escaped).expect("valid")[0];
    assert_eq!(
        (entry.id, entry.parent, entry.device.as_str()),
        (36, 35, "98:0")
    );
    assert_eq!(
        (
            entry.mount_point.as_str(),
            entry.fs_type.as_str(),
            entry.source.as_str()
        ),
        ("/mnt/with space", "ext3", "/dev/root")
    );
    for bad in [
        "36 35 98:0 / /mnt rw ext3 /dev/root rw",
        "x 35 98:0 / /mnt rw - ext3 /dev/root rw",
        "36 35 - ext3",
    ] {
        assert!(
            parse_mountinfo("inline", bad).is_err(),
            "{bad:?} must be refused"
        );
    }
}
