//! RDMA devices: `/sys/class/infiniband` enumeration (ports, state, rate, link layer, GIDs, the
//! netdev behind each port), soft-RoCE (rxe) links created and deleted through RDMA netlink
//! (`RDMA_NLDEV_CMD_NEWLINK` / `DELLINK`) without the `rdma` tool, and bringing a netdev up.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};
use serde::{Deserialize, Serialize};
use tracing::info_span;

use crate::netconf;
use crate::sysfs::{self, SysfsError};

// From include/uapi/linux/netlink.h and include/uapi/rdma/rdma_netlink.h.
pub const NETLINK_RDMA: i32 = 20;
pub const RDMA_NL_NLDEV: u16 = 5;
pub const RDMA_NLDEV_CMD_GET: u16 = 1;
pub const RDMA_NLDEV_CMD_NEWLINK: u16 = 3;
pub const RDMA_NLDEV_CMD_DELLINK: u16 = 4;
pub const RDMA_NLDEV_ATTR_DEV_INDEX: u16 = 1;
pub const RDMA_NLDEV_ATTR_DEV_NAME: u16 = 2;
pub const RDMA_NLDEV_ATTR_NDEV_NAME: u16 = 51;
pub const RDMA_NLDEV_ATTR_LINK_TYPE: u16 = 65;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 0x2;
const NLMSG_DONE: u16 = 0x3;
const NLMSG_HDR_BYTES: usize = 16;
/// Largest netlink reply read at once.
const REPLY_BYTES_MAX: usize = 32 * 1024;
/// Replies read before giving up on a dump that never says DONE.
const REPLY_MESSAGES_MAX: usize = 1024;
/// Device names are at most IB_DEVICE_NAME_MAX (64) bytes, netdev names IFNAMSIZ (16).
pub const RDMA_NAME_BYTES_MAX: usize = 63;

/// `RDMA_NL_GET_TYPE(client, op)`.
pub const fn nl_type(op: u16) -> u16 {
    (RDMA_NL_NLDEV << 10) + op
}

/// Errors of RDMA access.
#[derive(Debug, thiserror::Error)]
pub enum RdmaError {
    #[error("enumerate RDMA devices")]
    Enumerate(#[source] SysfsError),
    #[error("read port {port} of {device}")]
    ReadPort {
        device: String,
        port: u32,
        #[source]
        source: SysfsError,
    },
    #[error("name {name:?} is empty, longer than {RDMA_NAME_BYTES_MAX} bytes or holds NUL")]
    BadName { name: String },
    #[error("RDMA netlink {operation}")]
    Netlink {
        operation: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("RDMA netlink {operation}: kernel answered {errno}")]
    Refused {
        operation: &'static str,
        errno: nix::Error,
    },
    #[error("RDMA netlink {operation}: malformed reply: {reason}")]
    Malformed {
        operation: &'static str,
        reason: String,
    },
    #[error("RDMA device {name:?} not found by netlink")]
    UnknownDevice { name: String },
    #[error("bring {interface} up ({operation})")]
    LinkUp {
        interface: String,
        operation: &'static str,
        #[source]
        source: nix::Error,
    },
}

/// A port of an RDMA device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RdmaPort {
    pub number: u32,
    /// e.g. "ACTIVE" (from "4: ACTIVE").
    pub state: String,
    /// e.g. "LinkUp" (from "5: LinkUp").
    pub phys_state: String,
    /// e.g. "10 Gb/sec (1X QDR)".
    pub rate: String,
    /// "InfiniBand" or "Ethernet".
    pub link_layer: String,
    /// Non-zero GIDs.
    pub gids: Vec<String>,
    /// The netdev behind the port (RoCE), from gid_attrs/ndevs/0.
    pub netdev: Option<String>,
}

impl RdmaPort {
    pub fn is_active(&self) -> bool {
        self.state == "ACTIVE"
    }
}

/// An RDMA device and its ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RdmaDevice {
    pub name: String,
    pub node_guid: Option<String>,
    pub ports: Vec<RdmaPort>,
}

/// `/sys/class/infiniband` under a root.
#[derive(Debug, Clone)]
pub struct RdmaSysfs {
    root: PathBuf,
}

impl RdmaSysfs {
    pub fn new(root: &Path) -> RdmaSysfs {
        RdmaSysfs {
            root: root.to_path_buf(),
        }
    }

    /// Every RDMA device; none when the class directory does not exist (no RDMA module loaded).
    pub fn devices(&self) -> Result<Vec<RdmaDevice>, RdmaError> {
        let _span = info_span!("rdma_enumerate").entered();
        let dir = sysfs::under(&self.root, "sys/class/infiniband");
        let names = match sysfs::list(&dir) {
            Ok(names) => names,
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            Err(e) => return Err(RdmaError::Enumerate(e)),
        };
        let mut devices = Vec::new();
        for name in names {
            match self.device(&name) {
                Ok(device) => devices.push(device),
                Err(RdmaError::Enumerate(e)) if e.is_not_found() && !dir.join(&name).exists() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(devices)
    }

    /// One device.
    pub fn device(&self, name: &str) -> Result<RdmaDevice, RdmaError> {
        let dir = sysfs::under(&self.root, "sys/class/infiniband").join(name);
        let node_guid =
            sysfs::read_optional(&dir.join("node_guid")).map_err(RdmaError::Enumerate)?;
        let ports_dir = dir.join("ports");
        let mut ports = Vec::new();
        for port in sysfs::list(&ports_dir).map_err(RdmaError::Enumerate)? {
            let number = sysfs::parse_dec::<u32>(&ports_dir, &port, "a port number")
                .map_err(RdmaError::Enumerate)?;
            let read_err = |source| RdmaError::ReadPort {
                device: name.to_string(),
                port: number,
                source,
            };
            ports.push(read_port(&ports_dir.join(&port), number).map_err(read_err)?);
        }
        Ok(RdmaDevice {
            name: name.to_string(),
            node_guid,
            ports,
        })
    }
}

fn read_port(dir: &Path, number: u32) -> Result<RdmaPort, SysfsError> {
    let state_name = |file: &str| -> Result<String, SysfsError> {
        let path = dir.join(file);
        let value = sysfs::read(&path)?;
        // "4: ACTIVE": a number, a colon, the name.
        match value.split_once(':') {
            Some((code, name)) if code.trim().parse::<u8>().is_ok() => Ok(name.trim().to_string()),
            _ => Err(SysfsError::Parse {
                path: path.display().to_string(),
                value,
                expected: "N: NAME",
            }),
        }
    };
    let mut gids = Vec::new();
    if let Ok(entries) = sysfs::list(&dir.join("gids")) {
        for entry in entries {
            // Unpopulated GID entries read as all zeros, or fail with EINVAL on newer kernels.
            if let Ok(gid) = sysfs::read(&dir.join("gids").join(&entry)) {
                if gid.chars().any(|c| c != '0' && c != ':') {
                    gids.push(gid);
                }
            }
        }
    }
    let netdev = sysfs::read_optional(&dir.join("gid_attrs/ndevs/0")).unwrap_or(None);
    Ok(RdmaPort {
        number,
        state: state_name("state")?,
        phys_state: state_name("phys_state")?,
        rate: sysfs::read(&dir.join("rate"))?,
        link_layer: sysfs::read(&dir.join("link_layer"))?,
        gids,
        netdev,
    })
}

fn check_name(name: &str) -> Result<(), RdmaError> {
    if name.is_empty() || name.len() > RDMA_NAME_BYTES_MAX || name.contains('\0') {
        return Err(RdmaError::BadName {
            name: name.to_string(),
        });
    }
    Ok(())
}

fn push_attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn push_str_attr(out: &mut Vec<u8>, kind: u16, value: &str) {
    let mut payload = value.as_bytes().to_vec();
    payload.push(0);
    push_attr(out, kind, &payload);
}

fn message(kind: u16, flags: u16, seq: u32, attributes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(NLMSG_HDR_BYTES + attributes.len());
    out.extend_from_slice(&((NLMSG_HDR_BYTES + attributes.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(attributes);
    out
}

/// `rdma link add NAME type LINK_TYPE netdev NETDEV` as a netlink message.
pub fn encode_newlink(
    seq: u32,
    name: &str,
    link_type: &str,
    netdev: &str,
) -> Result<Vec<u8>, RdmaError> {
    for n in [name, link_type, netdev] {
        check_name(n)?;
    }
    let mut attributes = Vec::new();
    push_str_attr(&mut attributes, RDMA_NLDEV_ATTR_DEV_NAME, name);
    push_str_attr(&mut attributes, RDMA_NLDEV_ATTR_LINK_TYPE, link_type);
    push_str_attr(&mut attributes, RDMA_NLDEV_ATTR_NDEV_NAME, netdev);
    Ok(message(
        nl_type(RDMA_NLDEV_CMD_NEWLINK),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        &attributes,
    ))
}

/// `rdma link delete` of the device with kernel index `index`.
pub fn encode_dellink(seq: u32, index: u32) -> Vec<u8> {
    let mut attributes = Vec::new();
    push_attr(
        &mut attributes,
        RDMA_NLDEV_ATTR_DEV_INDEX,
        &index.to_ne_bytes(),
    );
    message(
        nl_type(RDMA_NLDEV_CMD_DELLINK),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        &attributes,
    )
}

/// A dump of every RDMA device (index and name).
pub fn encode_get_dump(seq: u32) -> Vec<u8> {
    message(
        nl_type(RDMA_NLDEV_CMD_GET),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        &[],
    )
}

/// One netlink message of a reply: its type and payload (after the 16-byte header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlMessage {
    pub kind: u16,
    pub payload: Vec<u8>,
}

/// Splits a datagram into netlink messages.
pub fn split_messages(operation: &'static str, bytes: &[u8]) -> Result<Vec<NlMessage>, RdmaError> {
    let malformed = |reason: String| RdmaError::Malformed { operation, reason };
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= NLMSG_HDR_BYTES {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDR_BYTES || len > rest.len() {
            return Err(malformed(format!(
                "message length {len} with {} bytes left",
                rest.len()
            )));
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        out.push(NlMessage {
            kind,
            payload: rest[NLMSG_HDR_BYTES..len].to_vec(),
        });
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    if !rest.is_empty() {
        return Err(malformed(format!("{} trailing bytes", rest.len())));
    }
    Ok(out)
}

/// Attributes of a payload as (type, value) pairs.
pub fn parse_attributes(
    operation: &'static str,
    mut bytes: &[u8],
) -> Result<Vec<(u16, Vec<u8>)>, RdmaError> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let len = u16::from_ne_bytes([bytes[0], bytes[1]]) as usize;
        if len < 4 || len > bytes.len() {
            let reason = format!("attribute length {len} with {} bytes left", bytes.len());
            return Err(RdmaError::Malformed { operation, reason });
        }
        // Strip NLA_F_NESTED / NLA_F_NET_BYTEORDER.
        let kind = u16::from_ne_bytes([bytes[2], bytes[3]]) & 0x3fff;
        out.push((kind, bytes[4..len].to_vec()));
        bytes = &bytes[len.next_multiple_of(4).min(bytes.len())..];
    }
    Ok(out)
}

/// An RDMA netlink socket.
#[derive(Debug)]
pub struct RdmaNetlink {
    fd: OwnedFd,
    seq: u32,
}

impl RdmaNetlink {
    pub fn open() -> Result<RdmaNetlink, RdmaError> {
        let err = |source| RdmaError::Netlink {
            operation: "open socket",
            source,
        };
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRDMA,
        )
        .map_err(err)?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(err)?;
        Ok(RdmaNetlink { fd, seq: 1 })
    }

    /// Creates an RDMA link (`link_type` "rxe" for soft-RoCE) named `name` on netdev `netdev`.
    pub fn new_link(&mut self, name: &str, link_type: &str, netdev: &str) -> Result<(), RdmaError> {
        let _span = info_span!("rdma_newlink", name, link_type, netdev).entered();
        let request = encode_newlink(self.next_seq(), name, link_type, netdev)?;
        self.request("NEWLINK", &request).map(|_| ())
    }

    /// Deletes the RDMA link named `name`.
    pub fn delete_link(&mut self, name: &str) -> Result<(), RdmaError> {
        let _span = info_span!("rdma_dellink", name).entered();
        let index = self.device_index(name)?;
        let request = encode_dellink(self.next_seq(), index);
        self.request("DELLINK", &request).map(|_| ())
    }

    /// The kernel's index of RDMA device `name` (from a GET dump).
    pub fn device_index(&mut self, name: &str) -> Result<u32, RdmaError> {
        let request = encode_get_dump(self.next_seq());
        for reply in self.request("GET", &request)? {
            let (mut index, mut found) = (None, None);
            for (kind, value) in parse_attributes("GET", &reply.payload)? {
                match kind {
                    RDMA_NLDEV_ATTR_DEV_INDEX if value.len() == 4 => {
                        index = Some(u32::from_ne_bytes([value[0], value[1], value[2], value[3]]))
                    }
                    RDMA_NLDEV_ATTR_DEV_NAME => {
                        found = Some(
                            String::from_utf8_lossy(&value)
                                .trim_end_matches('\0')
                                .to_string(),
                        )
                    }
                    _ => {}
                }
            }
            if let (Some(index), Some(found)) = (index, found) {
                if found == name {
                    return Ok(index);
                }
            }
        }
        Err(RdmaError::UnknownDevice {
            name: name.to_string(),
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends a request and collects the replies until the ACK (or DONE of a dump).
    fn request(
        &mut self,
        operation: &'static str,
        request: &[u8],
    ) -> Result<Vec<NlMessage>, RdmaError> {
        let err = |source| RdmaError::Netlink { operation, source };
        send(self.fd.as_raw_fd(), request, MsgFlags::empty()).map_err(err)?;
        let mut replies = Vec::new();
        let mut buffer = vec![0u8; REPLY_BYTES_MAX];
        for _ in 0..REPLY_MESSAGES_MAX {
            let n = recv(self.fd.as_raw_fd(), &mut buffer, MsgFlags::empty()).map_err(err)?;
            for message in split_messages(operation, &buffer[..n])? {
                match message.kind {
                    NLMSG_ERROR => {
                        return ack_result(operation, &message.payload).map(|()| replies)
                    }
                    NLMSG_DONE => return Ok(replies),
                    _ => replies.push(message),
                }
            }
        }
        Err(RdmaError::Malformed {
            operation,
            reason: format!("no end after {REPLY_MESSAGES_MAX} replies"),
        })
    }
}

/// An NLMSG_ERROR payload: 0 is an ACK, a negative errno a refusal.
fn ack_result(operation: &'static str, payload: &[u8]) -> Result<(), RdmaError> {
    let Some(code) = payload.get(..4) else {
        return Err(RdmaError::Malformed {
            operation,
            reason: "short NLMSG_ERROR".to_string(),
        });
    };
    match i32::from_ne_bytes([code[0], code[1], code[2], code[3]]) {
        0 => Ok(()),
        errno => Err(RdmaError::Refused {
            operation,
            errno: nix::Error::from_raw(-errno),
        }),
    }
}

/// Sets IFF_UP on a network interface (SIOCGIFFLAGS / SIOCSIFFLAGS): [`netconf::set_up`],
/// with its errors as this module's.
pub fn set_link_up(interface: &str) -> Result<(), RdmaError> {
    let _span = info_span!("netdev_up", interface).entered();
    netconf::set_up(interface).map_err(|e| match e.call() {
        Some((operation, source)) => RdmaError::LinkUp {
            interface: interface.to_string(),
            operation,
            source,
        },
        None => RdmaError::BadName {
            name: interface.to_string(),
        },
    })
}
