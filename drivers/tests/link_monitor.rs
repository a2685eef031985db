//! The rtnetlink link monitor: the RTM_NEWLINK/DELLINK parser on constructed byte fixtures
//! (valid, truncated, garbage, oversized lengths), the per-interface dedup, the netdev-to-PCI
//! mapping on a fake sysfs tree, and, on this host's kernel, real link changes of a veth pair
//! and of lo inside a private network namespace, through `LinkMonitor` and
//! `LinuxHost::observations()`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use drivers::link::{
    self, LinkAction, LinkError, LinkMessage, LinkMonitor, LinkTracker, OperState, RouteMessage,
    RouteSocket, IFF_LOWER_UP, IFF_RUNNING, IFF_UP, RTM_DELLINK, RTM_NEWLINK,
};
use drivers::linux::LinuxHost;
use drivers::{Host, HostObservation, PciAddress};

const UP_FLAGS: u32 = IFF_UP | IFF_RUNNING | IFF_LOWER_UP;
/// Deadline for a link change to arrive on this host (generous: the machine is shared).
const CHANGE_TIMEOUT_MS: u64 = 20_000;

fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut out = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

/// An RTM_NEWLINK/DELLINK as the kernel sends it, with an unknown attribute (IFLA_MTU) too.
fn link_bytes(kind: u16, index: i32, flags: u32, name: &str, operstate: u8) -> Vec<u8> {
    let mut body = link::encode_ifinfomsg(index as u32, flags, 0);
    body.extend(attr(4, &1500u32.to_ne_bytes()));
    body.extend(attr(3, format!("{name}\0").as_bytes()));
    body.extend(attr(16, &[operstate]));
    link::encode_message(kind, 0, 0, &body)
}

fn message(action: LinkAction, index: u32, flags: u32, name: &str) -> LinkMessage {
    LinkMessage {
        action,
        seq: 0,
        index,
        flags,
        name: Some(name.into()),
        operstate: Some(if flags == UP_FLAGS {
            OperState::Up
        } else {
            OperState::Down
        }),
    }
}

#[test]
fn parses_a_datagram_of_link_messages_and_done() {
    let mut datagram = link_bytes(RTM_NEWLINK, 2, UP_FLAGS, "eth0", 6);
    datagram.extend(link_bytes(RTM_DELLINK, 7, 0x1002, "veth1", 2));
    datagram.extend(link::encode_message(3, 2, 9, &0i32.to_ne_bytes()));
    let messages = link::parse_datagram(&datagram).expect("valid datagram");
    assert_eq!(messages.len(), 3);
    let RouteMessage::Link(eth0) = &messages[0] else {
        panic!("{:?}", messages[0])
    };
    assert_eq!(
        (eth0.action, eth0.index, eth0.flags, eth0.name.as_deref()),
        (LinkAction::New, 2, UP_FLAGS, Some("eth0"))
    );
    assert_eq!(eth0.operstate, Some(OperState::Up));
    assert!(eth0.is_up());
    let RouteMessage::Link(veth) = &messages[1] else {
        panic!("{:?}", messages[1])
    };
    assert_eq!((veth.action, veth.index), (LinkAction::Delete, 7));
    assert!(!veth.is_up());
    assert_eq!(messages[2], RouteMessage::Done { seq: 9 });
    // lo: operstate UNKNOWN with carrier and admin up is up; admin down keeps LOWER_UP.
    let lo = link_bytes(RTM_NEWLINK, 1, UP_FLAGS | 0x8, "lo", 0);
    let RouteMessage::Link(lo) = &link::parse_datagram(&lo).expect("lo")[0] else {
        panic!("lo")
    };
    assert!(lo.is_up());
    let lo_down = link_bytes(RTM_NEWLINK, 1, IFF_LOWER_UP | 0x8, "lo", 2);
    let RouteMessage::Link(lo_down) = &link::parse_datagram(&lo_down).expect("lo")[0] else {
        panic!("lo down")
    };
    assert!(!lo_down.is_up());
}

#[test]
fn refuses_truncated_messages_at_every_length() {
    let datagram = link_bytes(RTM_NEWLINK, 2, UP_FLAGS, "eth0", 6);
    for cut in 1..datagram.len() {
        match link::parse_datagram(&datagram[..cut]) {
            Err(LinkError::Malformed { what, offset, .. }) => {
                assert!(offset <= cut, "cut {cut}: offset {offset} ({what})")
            }
            other => panic!("cut at {cut} of {}: {other:?}", datagram.len()),
        }
    }
    // A header claiming fewer bytes than the ifinfomsg needs.
    let mut short = link::encode_message(RTM_NEWLINK, 0, 0, &[0u8; 8]);
    short[0] = 24;
    match link::parse_datagram(&short) {
        Err(LinkError::Malformed { what, offset, .. }) => {
            assert_eq!((what, offset), ("ifinfomsg", 16))
        }
        other => panic!("short ifinfomsg: {other:?}"),
    }
}

#[test]
fn refuses_oversized_and_bad_attributes_with_what_and_where() {
    let mut datagram = link_bytes(RTM_NEWLINK, 2, UP_FLAGS, "eth0", 6);
    // The first attribute (IFLA_MTU at byte 32) claims 200 bytes.
    datagram[32..34].copy_from_slice(&200u16.to_ne_bytes());
    match link::parse_datagram(&datagram) {
        Err(e @ LinkError::Malformed { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("link attribute at byte 32") && text.contains("nla_len 200"),
                "{text}"
            );
        }
        other => panic!("oversized nla_len: {other:?}"),
    }
    let long = link_bytes(RTM_NEWLINK, 2, 0, "a-name-longer-than-16", 2);
    assert!(matches!(
        link::parse_datagram(&long),
        Err(LinkError::Malformed {
            what: "IFLA_IFNAME",
            ..
        })
    ));
    let mut body = link::encode_ifinfomsg(2, 0, 0);
    body.extend(attr(16, &[6, 6]));
    let two_byte_state = link::encode_message(RTM_NEWLINK, 0, 0, &body);
    assert!(matches!(
        link::parse_datagram(&two_byte_state),
        Err(LinkError::Malformed {
            what: "IFLA_OPERSTATE",
            ..
        })
    ));
    let negative = link_bytes(RTM_NEWLINK, -3, 0, "x", 2);
    match link::parse_datagram(&negative) {
        Err(e) => assert!(e.to_string().contains("ifi_index -3"), "{e}"),
        Ok(m) => panic!("negative index accepted: {m:?}"),
    }
    let oversized = vec![0u8; link::DATAGRAM_BYTES_MAX + 1];
    assert!(matches!(
        link::parse_datagram(&oversized),
        Err(LinkError::TooLong { bytes }) if bytes == link::DATAGRAM_BYTES_MAX + 1
    ));
}

#[test]
fn garbage_bytes_give_errors_or_messages_never_a_panic() {
    // xorshift: deterministic garbage, and garbage inside a valid header.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let valid = link_bytes(RTM_NEWLINK, 2, UP_FLAGS, "eth0", 6);
    for round in 0..2000 {
        let len = (next() % 200) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 2 == 0 && bytes.len() >= 4 {
            bytes = valid.clone();
            let at = (next() as usize) % bytes.len();
            bytes[at] = next() as u8;
        }
        let _ = link::parse_datagram(&bytes);
    }
    assert!(link::parse_datagram(&[]).expect("empty").is_empty());
}

#[test]
fn tracker_reports_only_real_changes_per_interface() {
    let mut tracker = LinkTracker::new();
    // First sightings (the dump): recorded, not reported.
    assert_eq!(
        tracker.apply(&message(LinkAction::New, 2, UP_FLAGS, "eth0")),
        None
    );
    assert_eq!(
        tracker.apply(&message(LinkAction::New, 3, IFF_UP, "eth1")),
        None
    );
    // Same state again (an MTU or address change): nothing.
    assert_eq!(
        tracker.apply(&message(LinkAction::New, 2, UP_FLAGS, "eth0")),
        None
    );
    // Carrier lost: IFF_UP stays, RUNNING and LOWER_UP go.
    let down = tracker
        .apply(&message(LinkAction::New, 2, IFF_UP, "eth0"))
        .expect("a change");
    assert_eq!(
        (down.index, down.name.as_str(), down.up, down.removed),
        (2, "eth0", false, false)
    );
    assert_eq!(
        tracker.apply(&message(LinkAction::New, 2, IFF_UP, "eth0")),
        None
    );
    // Another interface is independent; a rename keeps the state and carries the new name.
    let up = tracker
        .apply(&message(LinkAction::New, 3, UP_FLAGS, "ens5"))
        .expect("eth1 renamed and up");
    assert_eq!((up.name.as_str(), up.up), ("ens5", true));
    assert_eq!(tracker.state(3).map(|s| s.name.as_str()), Some("ens5"));
    // Deleted while up: a change to down; deleted while down: nothing; unknown: nothing.
    let gone = tracker
        .apply(&message(LinkAction::Delete, 3, UP_FLAGS, "ens5"))
        .expect("deleted while up");
    assert!(gone.removed && !gone.up);
    assert_eq!(
        tracker.apply(&message(LinkAction::Delete, 2, 0, "eth0")),
        None
    );
    assert_eq!(tracker.apply(&message(LinkAction::Delete, 9, 0, "x")), None);
    assert_eq!(tracker.states().count(), 0);
}

#[test]
fn tracker_resync_reports_what_changed_while_notifications_were_lost() {
    let mut tracker = LinkTracker::new();
    for m in [
        message(LinkAction::New, 2, UP_FLAGS, "eth0"),
        message(LinkAction::New, 3, UP_FLAGS, "eth1"),
        message(LinkAction::New, 4, 0, "eth2"),
    ] {
        tracker.apply(&m);
    }
    let dump = [
        message(LinkAction::New, 2, IFF_UP, "eth0"),
        message(LinkAction::New, 4, 0, "eth2"),
        message(LinkAction::New, 5, UP_FLAGS, "eth3"),
    ];
    let changes = tracker.resync(&dump);
    let summary: Vec<_> = changes
        .iter()
        .map(|c| (c.name.as_str(), c.up, c.removed))
        .collect();
    assert_eq!(summary, [("eth0", false, false), ("eth1", false, true)]);
    assert_eq!(tracker.states().count(), 3);
    assert_eq!(tracker.resync(&dump), []);
}

#[test]
fn maps_netdevs_to_their_pci_function_on_a_fake_tree() {
    let tree = common::tree(&["netdevs.tree"]);
    let root = tree.path();
    let address = |s: &str| s.parse::<PciAddress>().expect("address");
    let map = |name: &str| link::pci_address_of(root, name);
    assert_eq!(map("eth0").expect("virtio"), Some(address("0000:00:03.0")));
    assert_eq!(map("ens4").expect("direct"), Some(address("0000:01:00.0")));
    assert_eq!(map("lo").expect("virtual"), None);
    assert_eq!(
        map("usb0").expect("usb"),
        None,
        "the xHCI controller is not the NIC"
    );
    assert_eq!(map("gone0").expect("missing"), None);
    match map("bad0") {
        Err(LinkError::MapDevice {
            interface,
            path,
            reason,
        }) => {
            assert_eq!(interface, "bad0");
            assert!(path.ends_with("sys/class/net/bad0/device"), "{path}");
            assert_eq!(reason, "not a symlink");
        }
        other => panic!("bad0: {other:?}"),
    }
    match map("odd0") {
        Err(e @ LinkError::MapDevice { .. }) => assert!(e.to_string().contains("\"bogus\""), "{e}"),
        other => panic!("odd0: {other:?}"),
    }
    for bad in ["", "../eth0", "a-name-longer-than-ifnamsiz"] {
        assert!(
            matches!(map(bad), Err(LinkError::BadName { .. })),
            "{bad:?}"
        );
    }
    let ports = link::rdma_ports_of(root, "eth0");
    assert_eq!(ports.len(), 1);
    assert_eq!(
        (
            ports[0].device.as_str(),
            ports[0].port,
            ports[0].state.as_str()
        ),
        ("rxe0", 1, "DOWN")
    );
    assert!(link::rdma_ports_of(root, "ens4").is_empty());
}

#[test]
fn encodes_set_link_and_refuses_bad_names() {
    let bytes = link::encode_set_up(7, "lo", true).expect("encode");
    assert_eq!(bytes.len(), 16 + 16 + 8);
    assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), link::RTM_SETLINK);
    assert_eq!(
        u32::from_ne_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
        7
    );
    assert_eq!(&bytes[36..39], b"lo\0");
    for bad in ["", "a\0b", "sixteen-chars-xx"] {
        assert!(matches!(
            link::encode_set_up(1, bad, false),
            Err(LinkError::BadName { .. })
        ));
    }
}

/// RTM_NEWLINK creating veth `name` with peer `peer` (`ip link add NAME type veth peer PEER`).
fn encode_veth(seq: u32, name: &str, peer: &str) -> Vec<u8> {
    const NLM_F_CREATE_EXCL: u16 = 0x400 | 0x200;
    let mut peer_info = link::encode_ifinfomsg(0, 0, 0);
    peer_info.extend(attr(3, format!("{peer}\0").as_bytes()));
    let data = attr(1, &peer_info); // VETH_INFO_PEER
    let mut info = attr(1, b"veth\0"); // IFLA_INFO_KIND
    info.extend(attr(2 | 0x8000, &data)); // IFLA_INFO_DATA, nested
    let mut body = link::encode_ifinfomsg(0, 0, 0);
    body.extend(attr(3, format!("{name}\0").as_bytes()));
    body.extend(attr(18 | 0x8000, &info)); // IFLA_LINKINFO, nested
    link::encode_message(
        RTM_NEWLINK,
        link::NLM_F_REQUEST | link::NLM_F_ACK | NLM_F_CREATE_EXCL,
        seq,
        &body,
    )
}

/// What the monitor and the host reported, per interface, in order.
#[derive(Default)]
struct Seen {
    changes: BTreeMap<String, Vec<bool>>,
    observations: Vec<HostObservation>,
}

/// Reads changes until `name` has reported `up` (with a deadline), keeping every change.
fn expect(monitor: &mut LinkMonitor, seen: &mut Seen, name: &str, up: bool) {
    let deadline = Instant::now() + Duration::from_millis(CHANGE_TIMEOUT_MS);
    while seen.changes.get(name).and_then(|c| c.last()) != Some(&up) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{name} never went up={up}; seen {:?}",
            seen.changes
        );
        if let Some(event) = monitor.recv_timeout(left).expect("receive link changes") {
            let states = seen.changes.entry(event.change.name.clone()).or_default();
            states.push(event.change.up);
        }
    }
}

/// Runs in a thread that entered a new network namespace: nothing outside it changes.
fn link_changes_in_a_private_namespace(root: &Path) -> Seen {
    let host = LinuxHost::new(root).expect("fake tree with a PCI bus");
    let observations = host.observations().expect("uevent and rtnetlink sockets");
    let mut monitor = LinkMonitor::open(root).expect("rtnetlink monitor");
    let lo = monitor.tracker().states().find(|s| s.name == "lo").cloned();
    assert_eq!(
        lo.map(|s| s.up),
        Some(false),
        "a new namespace's lo starts down"
    );
    let mut socket = RouteSocket::open(0).expect("request socket");
    let seq = socket.next_seq();
    socket
        .request("create veth", &encode_veth(seq, "lm0", "lm1"))
        .expect("the kernel creates a veth pair");
    let mut seen = Seen::default();
    // lm0 up alone has no carrier (its peer is down): no change until lm1 comes up too.
    link::set_up("lm0", true).expect("lm0 up");
    link::set_up("lm1", true).expect("lm1 up");
    expect(&mut monitor, &mut seen, "lm0", true);
    expect(&mut monitor, &mut seen, "lm1", true);
    // The peer going down takes lm0's carrier (what QEMU's set_link off does to a NIC).
    link::set_up("lm1", false).expect("lm1 down");
    expect(&mut monitor, &mut seen, "lm0", false);
    expect(&mut monitor, &mut seen, "lm1", false);
    link::set_up("lo", true).expect("lo up");
    expect(&mut monitor, &mut seen, "lo", true);
    link::set_up("lo", false).expect("lo down");
    expect(&mut monitor, &mut seen, "lo", false);
    let deadline = Instant::now() + Duration::from_millis(CHANGE_TIMEOUT_MS);
    while seen.observations.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match observations.recv_timeout(left) {
            Ok(observation) => seen.observations.push(observation),
            Err(e) => panic!("LinuxHost observations: {e}; got {:?}", seen.observations),
        }
    }
    seen
}

#[test]
fn real_link_changes_reach_the_monitor_and_the_host_observations() {
    let tree = common::tree(&["netdevs.tree"]);
    // lm0 stands for a NIC: its device is the fake tree's PCI function 0000:00:03.0.
    common::apply_line(
        tree.path(),
        "link sys/class/net/lm0 -> ../../devices/pci0000:00/0000:00:03.0/virtio0/net/lm0",
    );
    common::apply_line(
        tree.path(),
        "link sys/devices/pci0000:00/0000:00:03.0/virtio0/net/lm0/device -> ../../../virtio0",
    );
    let root = tree.path().to_path_buf();
    let seen = std::thread::spawn(move || {
        match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
            Ok(()) => Some(link_changes_in_a_private_namespace(&root)),
            Err(e) => {
                assert!(!nix::unistd::geteuid().is_root(), "root may unshare: {e}");
                assert_eq!(e, nix::Error::EPERM);
                None
            }
        }
    })
    .join()
    .expect("namespace thread");
    let Some(seen) = seen else { return };
    // Every change exactly once, in order: no repeats from the kernel's extra notifications.
    let expected = BTreeMap::from([
        ("lm0".to_string(), vec![true, false]),
        ("lm1".to_string(), vec![true, false]),
        ("lo".to_string(), vec![true, false]),
    ]);
    assert_eq!(seen.changes, expected);
    let address: PciAddress = "0000:00:03.0".parse().expect("address");
    assert_eq!(
        seen.observations,
        [
            HostObservation::LinkChanged { address, up: true },
            HostObservation::LinkChanged { address, up: false }
        ],
        "only lm0 has a PCI function; lm1 and lo are not reported"
    );
}
