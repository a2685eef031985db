//! Network link state from rtnetlink: a `NETLINK_ROUTE` socket bound to `RTMGRP_LINK`, the parser
//! of `RTM_NEWLINK` / `RTM_DELLINK` (ifinfomsg, `IFLA_IFNAME`, `IFLA_OPERSTATE`, `IFF_RUNNING`,
//! `IFF_LOWER_UP`), a tracker that keeps the last state per ifindex so only real changes come
//! out, the netdev-to-PCI mapping through `<root>/sys/class/net/<ifname>/device`, and the RDMA
//! ports (rxe, InfiniBand) whose netdev changed. No polling: the kernel pushes every change.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    bind, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use serde::{Deserialize, Serialize};
use tracing::{info_span, warn};

use crate::rdma::RdmaSysfs;
use crate::{netlink, sysfs, PciAddress};

// From include/uapi/linux/{netlink,rtnetlink,if_link,if}.h.
pub const RTMGRP_LINK: u32 = 1;
pub const RTM_NEWLINK: u16 = 16;
pub const RTM_DELLINK: u16 = 17;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_SETLINK: u16 = 19;
pub const IFLA_IFNAME: u16 = 3;
pub const IFLA_OPERSTATE: u16 = 16;
pub const IFF_UP: u32 = 0x1;
pub const IFF_RUNNING: u32 = 0x40;
pub const IFF_LOWER_UP: u32 = 0x1_0000;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLMSG_HDR_BYTES: usize = 16;
/// `struct ifinfomsg`: family, pad, type, index, flags, change.
pub const IFINFOMSG_BYTES: usize = 16;
/// IFNAMSIZ, the terminating NUL included.
pub const IFNAME_BYTES_MAX: usize = 16;
/// One datagram read at once. A link message is a few KiB (64 KiB with many SR-IOV VFs); a
/// larger one is reported as [`LinkError::TooLong`], never silently cut.
pub const DATAGRAM_BYTES_MAX: usize = 64 * 1024;
/// Interfaces tracked at once; past it, new interfaces are not tracked (and logged).
pub const INTERFACES_MAX: usize = 4096;
/// Datagrams read while waiting for the end of the initial dump.
pub const DUMP_DATAGRAMS_MAX: usize = 4096;
/// How long the initial dump (and a resync after an overflow) may take.
pub const DUMP_TIMEOUT_MS: u64 = 5_000;
/// Receive buffer, so a burst of link changes is not dropped.
const RECEIVE_BUFFER_BYTES: usize = 1 << 20;

/// Errors of the link monitor and its parser.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{operation} NETLINK_ROUTE socket")]
    Socket {
        operation: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("{operation} over NETLINK_ROUTE")]
    Netlink {
        operation: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("{operation}: kernel answered {errno}")]
    Refused {
        operation: &'static str,
        errno: nix::Error,
    },
    #[error("netlink datagram of {bytes} bytes exceeds {DATAGRAM_BYTES_MAX}")]
    TooLong { bytes: usize },
    #[error("parse {what} at byte {offset}: {reason}")]
    Malformed {
        what: &'static str,
        offset: usize,
        reason: String,
    },
    #[error("{operation}: no end within {timeout_ms} ms or {DUMP_DATAGRAMS_MAX} datagrams")]
    DumpTimeout {
        operation: &'static str,
        timeout_ms: u64,
    },
    #[error("interface name {name:?} is empty, longer than {} bytes or holds NUL", IFNAME_BYTES_MAX - 1)]
    BadName { name: String },
    #[error("map {interface} to its PCI device through {path}: {reason}")]
    MapDevice {
        interface: String,
        path: String,
        reason: String,
    },
}

/// `IFLA_OPERSTATE` (RFC 2863 operational state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperState {
    Unknown,
    NotPresent,
    Down,
    LowerLayerDown,
    Testing,
    Dormant,
    Up,
    Other(u8),
}

impl OperState {
    pub fn from_byte(value: u8) -> OperState {
        match value {
            0 => OperState::Unknown,
            1 => OperState::NotPresent,
            2 => OperState::Down,
            3 => OperState::LowerLayerDown,
            4 => OperState::Testing,
            5 => OperState::Dormant,
            6 => OperState::Up,
            other => OperState::Other(other),
        }
    }
}

/// Whether a link message announces or withdraws an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkAction {
    New,
    Delete,
}

/// One `RTM_NEWLINK` / `RTM_DELLINK`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkMessage {
    pub action: LinkAction,
    /// The netlink sequence number (0 for multicast notifications).
    pub seq: u32,
    pub index: u32,
    /// `ifi_flags` (IFF_UP, IFF_RUNNING, IFF_LOWER_UP...).
    pub flags: u32,
    pub name: Option<String>,
    pub operstate: Option<OperState>,
}

impl LinkMessage {
    /// Carrier and administrative state both up: IFF_RUNNING and IFF_LOWER_UP set, and the
    /// operational state (when given) UP or UNKNOWN (loopback and some drivers never set it).
    pub fn is_up(&self) -> bool {
        let flags = IFF_UP | IFF_RUNNING | IFF_LOWER_UP;
        self.flags & flags == flags
            && matches!(
                self.operstate,
                None | Some(OperState::Up | OperState::Unknown)
            )
    }
}

/// One netlink message of a `NETLINK_ROUTE` datagram, as far as the monitor cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMessage {
    Link(LinkMessage),
    /// End of a dump.
    Done {
        seq: u32,
    },
    /// NLMSG_ERROR: `errno` 0 is an acknowledgement.
    Error {
        seq: u32,
        errno: i32,
    },
    /// Any other type (route, address... never sent to RTMGRP_LINK, but tolerated).
    Other {
        kind: u16,
    },
}

fn malformed(what: &'static str, offset: usize, reason: String) -> LinkError {
    LinkError::Malformed {
        what,
        offset,
        reason,
    }
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Parses a whole datagram: every message must be complete and well-formed.
pub fn parse_datagram(bytes: &[u8]) -> Result<Vec<RouteMessage>, LinkError> {
    if bytes.len() > DATAGRAM_BYTES_MAX {
        return Err(LinkError::TooLong { bytes: bytes.len() });
    }
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.len() < NLMSG_HDR_BYTES {
            let reason = format!(
                "{} bytes left, a header needs {NLMSG_HDR_BYTES}",
                rest.len()
            );
            return Err(malformed("netlink header", offset, reason));
        }
        let length = u32_at(rest, 0) as usize;
        if length < NLMSG_HDR_BYTES || length > rest.len() {
            let reason = format!("nlmsg_len {length} with {} bytes left", rest.len());
            return Err(malformed("netlink header", offset, reason));
        }
        let (kind, seq) = (u16_at(rest, 4), u32_at(rest, 8));
        let payload = &rest[NLMSG_HDR_BYTES..length];
        out.push(route_message(kind, seq, payload, offset + NLMSG_HDR_BYTES)?);
        offset += length.next_multiple_of(4).min(rest.len());
    }
    Ok(out)
}

fn route_message(
    kind: u16,
    seq: u32,
    payload: &[u8],
    offset: usize,
) -> Result<RouteMessage, LinkError> {
    match kind {
        RTM_NEWLINK | RTM_DELLINK => {
            let action = if kind == RTM_NEWLINK {
                LinkAction::New
            } else {
                LinkAction::Delete
            };
            parse_link(action, seq, payload, offset).map(RouteMessage::Link)
        }
        NLMSG_DONE => Ok(RouteMessage::Done { seq }),
        NLMSG_ERROR => {
            let code = payload.get(..4).ok_or_else(|| {
                malformed("NLMSG_ERROR", offset, format!("{} bytes", payload.len()))
            })?;
            let errno = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
            Ok(RouteMessage::Error { seq, errno })
        }
        other => Ok(RouteMessage::Other { kind: other }),
    }
}

/// Parses an ifinfomsg and its attributes (`offset`: where the payload starts, for errors).
pub fn parse_link(
    action: LinkAction,
    seq: u32,
    payload: &[u8],
    offset: usize,
) -> Result<LinkMessage, LinkError> {
    if payload.len() < IFINFOMSG_BYTES {
        let reason = format!("{} bytes, ifinfomsg needs {IFINFOMSG_BYTES}", payload.len());
        return Err(malformed("ifinfomsg", offset, reason));
    }
    let index = i32::from_ne_bytes(payload[4..8].try_into().unwrap_or_default());
    let index = u32::try_from(index)
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| malformed("ifinfomsg", offset + 4, format!("ifi_index {index}")))?;
    let mut message = LinkMessage {
        action,
        seq,
        index,
        flags: u32_at(payload, 8),
        name: None,
        operstate: None,
    };
    let mut at = IFINFOMSG_BYTES;
    while payload.len() - at >= 4 {
        let length = u16_at(payload, at) as usize;
        if length < 4 || length > payload.len() - at {
            let reason = format!("nla_len {length} with {} bytes left", payload.len() - at);
            return Err(malformed("link attribute", offset + at, reason));
        }
        // Strip NLA_F_NESTED / NLA_F_NET_BYTEORDER.
        let kind = u16_at(payload, at + 2) & 0x3fff;
        let value = &payload[at + 4..at + length];
        link_attribute(&mut message, kind, value, offset + at)?;
        at += length.next_multiple_of(4).min(payload.len() - at);
    }
    Ok(message)
}

fn link_attribute(
    message: &mut LinkMessage,
    kind: u16,
    value: &[u8],
    offset: usize,
) -> Result<(), LinkError> {
    match kind {
        IFLA_IFNAME => message.name = Some(parse_ifname(value, offset)?),
        IFLA_OPERSTATE => {
            let [state] = value else {
                let reason = format!("{} bytes, expected 1", value.len());
                return Err(malformed("IFLA_OPERSTATE", offset, reason));
            };
            message.operstate = Some(OperState::from_byte(*state));
        }
        _ => {}
    }
    Ok(())
}

fn parse_ifname(value: &[u8], offset: usize) -> Result<String, LinkError> {
    let name = value.strip_suffix(&[0]).unwrap_or(value);
    let text = String::from_utf8_lossy(name);
    if name.is_empty() || value.len() > IFNAME_BYTES_MAX || name.contains(&0) {
        let reason = format!("{text:?} ({} bytes)", value.len());
        return Err(malformed("IFLA_IFNAME", offset, reason));
    }
    Ok(text.into_owned())
}

/// The last known state of one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    pub up: bool,
    pub flags: u32,
    pub operstate: Option<OperState>,
}

/// A change of an interface's up/down state, or its removal while up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkChange {
    pub index: u32,
    pub name: String,
    pub up: bool,
    /// The interface was deleted (RTM_DELLINK) while it was up.
    pub removed: bool,
    pub operstate: Option<OperState>,
}

/// Keeps the last state per ifindex; turns link messages into real changes only.
///
/// Policy: the first message about an interface records its state without a change (it comes
/// from the initial dump, or announces a new interface, which starts down); a later message
/// whose up/down differs is a change; a message repeating the state (a new address, MTU,
/// statistics) is not; a deletion of an interface that was up is a change to down.
#[derive(Debug, Clone, Default)]
pub struct LinkTracker {
    states: BTreeMap<u32, LinkState>,
}

impl LinkTracker {
    pub fn new() -> LinkTracker {
        LinkTracker::default()
    }

    /// Records a message; returns the change it makes, if any.
    pub fn apply(&mut self, message: &LinkMessage) -> Option<LinkChange> {
        let up = message.is_up();
        let change = |name: String, up, removed| LinkChange {
            index: message.index,
            name,
            up,
            removed,
            operstate: message.operstate,
        };
        if message.action == LinkAction::Delete {
            let last = self.states.remove(&message.index)?;
            let name = message.name.clone().unwrap_or(last.name);
            return last.up.then(|| change(name, false, true));
        }
        let Some(last) = self.states.get_mut(&message.index) else {
            self.insert(message, up);
            return None;
        };
        if let Some(name) = &message.name {
            last.name.clone_from(name);
        }
        let changed = last.up != up;
        (last.up, last.flags, last.operstate) = (up, message.flags, message.operstate);
        changed.then(|| change(last.name.clone(), up, false))
    }

    fn insert(&mut self, message: &LinkMessage, up: bool) {
        if self.states.len() >= INTERFACES_MAX {
            warn!(
                index = message.index,
                "{INTERFACES_MAX} interfaces tracked; not this one"
            );
            return;
        }
        let state = LinkState {
            index: message.index,
            name: message.name.clone().unwrap_or_default(),
            up,
            flags: message.flags,
            operstate: message.operstate,
        };
        self.states.insert(message.index, state);
    }

    /// Replaces every state with a fresh dump's; returns the changes against the old states
    /// (used after the socket overflowed and notifications were lost).
    pub fn resync(&mut self, dump: &[LinkMessage]) -> Vec<LinkChange> {
        let old = std::mem::take(&mut self.states);
        let mut changes = Vec::new();
        for message in dump.iter().filter(|m| m.action == LinkAction::New) {
            let up = message.is_up();
            match old.get(&message.index) {
                Some(last) if last.up != up => changes.push(LinkChange {
                    index: message.index,
                    name: message.name.clone().unwrap_or_else(|| last.name.clone()),
                    up,
                    removed: false,
                    operstate: message.operstate,
                }),
                _ => {}
            }
            self.insert(message, up);
        }
        for (index, last) in old {
            if last.up && !self.states.contains_key(&index) {
                changes.push(LinkChange {
                    index,
                    name: last.name,
                    up: false,
                    removed: true,
                    operstate: None,
                });
            }
        }
        changes
    }

    pub fn state(&self, index: u32) -> Option<&LinkState> {
        self.states.get(&index)
    }

    pub fn states(&self) -> impl Iterator<Item = &LinkState> {
        self.states.values()
    }
}

/// The state of an RDMA port read right after its netdev changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RdmaPortState {
    pub device: String,
    pub port: u32,
    /// e.g. "ACTIVE", "DOWN".
    pub state: String,
}

/// A link change with what the host knows about the interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkEvent {
    pub change: LinkChange,
    /// The PCI function behind the netdev (none for virtual interfaces such as lo or veth).
    pub address: Option<PciAddress>,
    /// RDMA ports (rxe, InfiniBand) whose netdev is this interface, read after the change.
    pub rdma_ports: Vec<RdmaPortState>,
}

/// Levels walked up from a netdev's `device` to its PCI function (virtio-net: one).
pub const DEVICE_DEPTH_MAX: usize = 4;

/// The PCI function behind `interface`: `<root>/sys/class/net/<interface>/device` resolved,
/// then up through virtio devices (virtio-net's `device` is `virtioN`, a child of the PCI
/// function) to a directory whose `subsystem` is `pci`. `Ok(None)` when there is no `device`
/// link (lo, veth, bridges) or the device is not on PCI (a USB NIC: its xHCI controller is a
/// PCI ancestor, but not the NIC).
pub fn pci_address_of(root: &Path, interface: &str) -> Result<Option<PciAddress>, LinkError> {
    check_name(interface)?;
    let link = sysfs::under(root, "sys/class/net")
        .join(interface)
        .join("device");
    let err = |reason: String| LinkError::MapDevice {
        interface: interface.to_string(),
        path: link.display().to_string(),
        reason,
    };
    match std::fs::symlink_metadata(&link) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e.to_string())),
        Ok(meta) if !meta.file_type().is_symlink() => return Err(err("not a symlink".into())),
        Ok(_) => {}
    }
    let mut dir = std::fs::canonicalize(&link).map_err(|e| err(format!("resolve: {e}")))?;
    for _ in 0..DEVICE_DEPTH_MAX {
        let subsystem = sysfs::link_name(&dir.join("subsystem")).map_err(|e| err(e.to_string()))?;
        match subsystem.as_deref() {
            Some("pci") => {
                let name = dir.file_name().unwrap_or_default().to_string_lossy();
                let address = name.parse().map_err(|e| err(format!("{e}")))?;
                return Ok(Some(address));
            }
            Some("virtio") => match dir.parent() {
                Some(parent) => dir = parent.to_path_buf(),
                None => break,
            },
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// RDMA ports whose netdev (`gid_attrs/ndevs/0`) is `interface`, with their state now.
pub fn rdma_ports_of(root: &Path, interface: &str) -> Vec<RdmaPortState> {
    let devices = match RdmaSysfs::new(root).devices() {
        Ok(devices) => devices,
        Err(e) => {
            warn!(error = %e, interface, "RDMA ports not read after a link change");
            return Vec::new();
        }
    };
    let mut ports = Vec::new();
    for device in devices {
        for port in device.ports {
            if port.netdev.as_deref() == Some(interface) {
                ports.push(RdmaPortState {
                    device: device.name.clone(),
                    port: port.number,
                    state: port.state,
                });
            }
        }
    }
    ports
}

fn check_name(name: &str) -> Result<(), LinkError> {
    if name.is_empty() || name.len() >= IFNAME_BYTES_MAX || name.contains(['\0', '/']) {
        return Err(LinkError::BadName {
            name: name.to_string(),
        });
    }
    Ok(())
}

fn push_attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// A netlink message: header, then `body` (an ifinfomsg and attributes).
pub fn encode_message(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(NLMSG_HDR_BYTES + body.len());
    out.extend_from_slice(&((NLMSG_HDR_BYTES + body.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(body);
    out
}

/// An ifinfomsg (AF_UNSPEC) with `index`, `flags` and `change`.
pub fn encode_ifinfomsg(index: u32, flags: u32, change: u32) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    out.extend_from_slice(&index.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&change.to_ne_bytes());
    out
}

/// `RTM_GETLINK` dump of every interface.
pub fn encode_get_dump(seq: u32) -> Vec<u8> {
    encode_message(
        RTM_GETLINK,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        &encode_ifinfomsg(0, 0, 0),
    )
}

/// `RTM_SETLINK` of `interface` (by name) to administratively up or down (`ip link set`).
pub fn encode_set_up(seq: u32, interface: &str, up: bool) -> Result<Vec<u8>, LinkError> {
    check_name(interface)?;
    let mut body = encode_ifinfomsg(0, if up { IFF_UP } else { 0 }, IFF_UP);
    let mut name = interface.as_bytes().to_vec();
    name.push(0);
    push_attr(&mut body, IFLA_IFNAME, &name);
    Ok(encode_message(
        RTM_SETLINK,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        &body,
    ))
}

/// A `NETLINK_ROUTE` socket, optionally bound to multicast groups.
#[derive(Debug)]
pub struct RouteSocket {
    fd: OwnedFd,
    seq: u32,
    buffer: Vec<u8>,
}

impl RouteSocket {
    /// Opens a non-blocking socket in the calling thread's network namespace.
    pub fn open(groups: u32) -> Result<RouteSocket, LinkError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkRoute,
        )
        .map_err(|source| LinkError::Socket {
            operation: "open",
            source,
        })?;
        // A small receive buffer is only a risk of overflow, which resyncs; go on if refused.
        let _ = setsockopt(&fd, sockopt::RcvBuf, &RECEIVE_BUFFER_BYTES);
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups)).map_err(|source| LinkError::Socket {
            operation: "bind",
            source,
        })?;
        Ok(RouteSocket {
            fd,
            seq: 0,
            buffer: vec![0; DATAGRAM_BYTES_MAX],
        })
    }

    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    pub fn send(&self, operation: &'static str, request: &[u8]) -> Result<(), LinkError> {
        send(self.fd.as_raw_fd(), request, MsgFlags::empty())
            .map(drop)
            .map_err(|source| LinkError::Netlink { operation, source })
    }

    /// Receives one datagram, waiting at most `timeout`; `Ok(None)` when none came.
    /// `Err(Netlink { source: ENOBUFS })` means notifications were lost.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Vec<RouteMessage>>, LinkError> {
        let deadline = Instant::now() + timeout;
        let failed = |operation| move |source| LinkError::Netlink { operation, source };
        loop {
            let received = netlink::recv_from_kernel(&self.fd, &mut self.buffer);
            if let Some(datagram) = received.map_err(failed("receive"))? {
                let bytes = self
                    .buffer
                    .get(..datagram.bytes)
                    .ok_or(LinkError::TooLong {
                        bytes: datagram.bytes,
                    })?;
                return parse_datagram(bytes).map(Some);
            }
            if !netlink::wait_readable(&self.fd, deadline).map_err(failed("poll"))? {
                return Ok(None);
            }
        }
    }

    /// Sends a request with NLM_F_ACK and waits for its acknowledgement; link notifications
    /// received meanwhile are dropped (use a separate socket for monitoring).
    pub fn request(&mut self, operation: &'static str, request: &[u8]) -> Result<(), LinkError> {
        let seq = request.get(8..12).map_or(0, |b| u32_at(b, 0));
        self.send(operation, request)?;
        let deadline = Instant::now() + Duration::from_millis(DUMP_TIMEOUT_MS);
        for _ in 0..DUMP_DATAGRAMS_MAX {
            let left = deadline.saturating_duration_since(Instant::now());
            for message in self.recv(left)?.unwrap_or_default() {
                match message {
                    RouteMessage::Error { seq: s, errno } if s == seq => {
                        return match errno {
                            0 => Ok(()),
                            e => Err(LinkError::Refused {
                                operation,
                                errno: nix::Error::from_raw(-e),
                            }),
                        };
                    }
                    _ => {}
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        let timeout_ms = DUMP_TIMEOUT_MS;
        Err(LinkError::DumpTimeout {
            operation,
            timeout_ms,
        })
    }

    /// Dumps every interface (`RTM_GETLINK`); notifications that arrive meanwhile are
    /// returned in order with the dump's messages.
    pub fn dump(&mut self) -> Result<Vec<LinkMessage>, LinkError> {
        let operation = "dump links (RTM_GETLINK)";
        let seq = self.next_seq();
        self.send(operation, &encode_get_dump(seq))?;
        let deadline = Instant::now() + Duration::from_millis(DUMP_TIMEOUT_MS);
        let mut links = Vec::new();
        for _ in 0..DUMP_DATAGRAMS_MAX {
            let left = deadline.saturating_duration_since(Instant::now());
            for message in self.recv(left)?.unwrap_or_default() {
                match message {
                    RouteMessage::Link(link) => links.push(link),
                    RouteMessage::Done { seq: s } if s == seq => return Ok(links),
                    RouteMessage::Error { seq: s, errno } if s == seq && errno != 0 => {
                        let errno = nix::Error::from_raw(-errno);
                        return Err(LinkError::Refused { operation, errno });
                    }
                    _ => {}
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        let timeout_ms = DUMP_TIMEOUT_MS;
        Err(LinkError::DumpTimeout {
            operation,
            timeout_ms,
        })
    }
}

/// Sets `interface` administratively up or down through rtnetlink, in the calling thread's
/// network namespace.
pub fn set_up(interface: &str, up: bool) -> Result<(), LinkError> {
    let _span = info_span!("link_set_up", interface, up).entered();
    let mut socket = RouteSocket::open(0)?;
    let seq = socket.next_seq();
    let request = encode_set_up(seq, interface, up)?;
    socket.request("set link (RTM_SETLINK)", &request)
}

/// Watches every interface's link in the calling thread's network namespace and reports each
/// real up/down change with its PCI function and RDMA ports.
#[derive(Debug)]
pub struct LinkMonitor {
    socket: RouteSocket,
    root: PathBuf,
    tracker: LinkTracker,
    pending: VecDeque<LinkChange>,
}

impl LinkMonitor {
    /// Opens the socket on RTMGRP_LINK, then seeds the tracker from a dump: states that hold
    /// at open time are not reported, only what changes after. `root` is "/" in production.
    pub fn open(root: &Path) -> Result<LinkMonitor, LinkError> {
        let _span = info_span!("link_monitor_open").entered();
        let mut socket = RouteSocket::open(RTMGRP_LINK)?;
        let mut tracker = LinkTracker::new();
        let mut pending = VecDeque::new();
        // Notifications that raced with the dump are applied in order after it.
        for message in socket.dump()? {
            pending.extend(tracker.apply(&message));
        }
        Ok(LinkMonitor {
            socket,
            root: root.to_path_buf(),
            tracker,
            pending,
        })
    }

    pub fn tracker(&self) -> &LinkTracker {
        &self.tracker
    }

    /// Waits up to `timeout` for the next real change; `Ok(None)` when none came. After a
    /// socket overflow (ENOBUFS) the state is re-read with a dump and the differences reported.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<LinkEvent>, LinkError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Ok(Some(self.event(change)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let messages = match self.socket.recv(left) {
                Ok(Some(messages)) => messages,
                Ok(None) => return Ok(None),
                Err(LinkError::Netlink {
                    source: nix::Error::ENOBUFS,
                    ..
                }) => {
                    warn!("rtnetlink overflowed; re-reading every link");
                    let dump = self.socket.dump()?;
                    self.pending.extend(self.tracker.resync(&dump));
                    continue;
                }
                Err(e) => return Err(e),
            };
            for message in messages {
                if let RouteMessage::Link(link) = message {
                    self.pending.extend(self.tracker.apply(&link));
                }
            }
        }
    }

    fn event(&self, change: LinkChange) -> LinkEvent {
        let address = pci_address_of(&self.root, &change.name).unwrap_or_else(|e| {
            warn!(error = %e, "netdev not mapped to a PCI function");
            None
        });
        let rdma_ports = if change.removed {
            Vec::new()
        } else {
            rdma_ports_of(&self.root, &change.name)
        };
        LinkEvent {
            change,
            address,
            rdma_ports,
        }
    }
}
