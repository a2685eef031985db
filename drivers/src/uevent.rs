//! Kernel uevents from a `NETLINK_KOBJECT_UEVENT` socket: the parser of the kernel's
//! NUL-separated messages, typed events for PCI, NVMe, InfiniBand and net devices, a blocking
//! receiver with a deadline, and an async stream on tokio.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;

use crate::{netlink, PciAddress};

/// The kernel's uevent buffer is 2048 bytes (UEVENT_BUFFER_SIZE) plus the "action@devpath"
/// header; a larger message is refused.
pub const MESSAGE_BYTES_MAX: usize = 8192;
/// Netlink multicast group of kernel uevents (udev's rebroadcasts use group 2).
const KERNEL_GROUP: u32 = 1;
/// Socket receive buffer, so a burst of hotplug events is not dropped.
const RECEIVE_BUFFER_BYTES: usize = 1 << 20;

/// Errors of the uevent listener and parser.
#[derive(Debug, thiserror::Error)]
pub enum UeventError {
    #[error("open NETLINK_KOBJECT_UEVENT socket")]
    Open(#[source] nix::Error),
    #[error("receive uevent")]
    Receive(#[source] nix::Error),
    #[error("uevent of {bytes} bytes exceeds {MESSAGE_BYTES_MAX}")]
    TooLong { bytes: usize },
    #[error("uevent {text:?} is malformed: {reason}")]
    Malformed { text: String, reason: &'static str },
    #[error("register uevent socket with tokio")]
    Register(#[source] std::io::Error),
}

/// A uevent's action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UeventAction {
    Add,
    Remove,
    Change,
    Move,
    Online,
    Offline,
    Bind,
    Unbind,
    Other(String),
}

impl UeventAction {
    fn parse(text: &str) -> UeventAction {
        match text {
            "add" => UeventAction::Add,
            "remove" => UeventAction::Remove,
            "change" => UeventAction::Change,
            "move" => UeventAction::Move,
            "online" => UeventAction::Online,
            "offline" => UeventAction::Offline,
            "bind" => UeventAction::Bind,
            "unbind" => UeventAction::Unbind,
            other => UeventAction::Other(other.to_string()),
        }
    }
}

/// A raw uevent: action, device path, subsystem and the other variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uevent {
    pub action: UeventAction,
    pub devpath: String,
    pub subsystem: String,
    pub seqnum: Option<u64>,
    pub vars: BTreeMap<String, String>,
}

/// The events the appliance cares about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceEvent {
    Pci {
        action: UeventAction,
        address: PciAddress,
        driver: Option<String>,
    },
    /// An NVMe controller char device (`nvme0`) or namespace block device (`nvme0n1`).
    Nvme {
        action: UeventAction,
        name: String,
    },
    Infiniband {
        action: UeventAction,
        name: String,
    },
    Net {
        action: UeventAction,
        interface: String,
    },
}

impl Uevent {
    /// The typed event, when this uevent is about a PCI, NVMe, InfiniBand or net device.
    pub fn device_event(&self) -> Option<DeviceEvent> {
        let action = self.action.clone();
        let last = || {
            self.devpath
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string()
        };
        match self.subsystem.as_str() {
            "pci" => {
                let address = self
                    .vars
                    .get("PCI_SLOT_NAME")
                    .cloned()
                    .unwrap_or_else(last)
                    .parse()
                    .ok()?;
                Some(DeviceEvent::Pci {
                    action,
                    address,
                    driver: self.vars.get("DRIVER").cloned(),
                })
            }
            "nvme" | "block"
                if self
                    .vars
                    .get("DEVNAME")
                    .is_some_and(|n| n.starts_with("nvme"))
                    || last().starts_with("nvme") =>
            {
                Some(DeviceEvent::Nvme {
                    action,
                    name: self.vars.get("DEVNAME").cloned().unwrap_or_else(last),
                })
            }
            "infiniband" => Some(DeviceEvent::Infiniband {
                action,
                name: last(),
            }),
            "net" => Some(DeviceEvent::Net {
                action,
                interface: self.vars.get("INTERFACE").cloned().unwrap_or_else(last),
            }),
            _ => None,
        }
    }
}

/// Parses one message. `Ok(None)` for udev's own rebroadcasts (they start with "libudev").
pub fn parse(bytes: &[u8]) -> Result<Option<Uevent>, UeventError> {
    if bytes.len() > MESSAGE_BYTES_MAX {
        return Err(UeventError::TooLong { bytes: bytes.len() });
    }
    if bytes.starts_with(b"libudev\0") {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(bytes);
    let malformed = |reason| UeventError::Malformed {
        text: text.chars().take(200).collect(),
        reason,
    };
    let mut fields = bytes.split(|b| *b == 0).filter(|f| !f.is_empty());
    let header = fields.next().ok_or_else(|| malformed("empty message"))?;
    let header = String::from_utf8_lossy(header);
    let (header_action, header_path) = header
        .split_once('@')
        .ok_or_else(|| malformed("no action@devpath header"))?;
    let mut vars = BTreeMap::new();
    for field in fields {
        let field = String::from_utf8_lossy(field);
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| malformed("a field without '='"))?;
        vars.insert(key.to_string(), value.to_string());
    }
    let action = vars
        .remove("ACTION")
        .unwrap_or_else(|| header_action.to_string());
    let devpath = vars
        .remove("DEVPATH")
        .unwrap_or_else(|| header_path.to_string());
    if action != header_action || devpath != header_path {
        return Err(malformed("header and ACTION/DEVPATH disagree"));
    }
    let subsystem = vars
        .remove("SUBSYSTEM")
        .ok_or_else(|| malformed("no SUBSYSTEM"))?;
    let seqnum = match vars.remove("SEQNUM") {
        Some(s) => Some(s.parse().map_err(|_| malformed("SEQNUM is not a number"))?),
        None => None,
    };
    Ok(Some(Uevent {
        action: UeventAction::parse(&action),
        devpath,
        subsystem,
        seqnum,
        vars,
    }))
}

/// A socket bound to the kernel's uevent group.
#[derive(Debug)]
pub struct UeventListener {
    fd: OwnedFd,
}

impl UeventListener {
    /// Opens a non-blocking socket on the kernel uevent multicast group.
    pub fn open() -> Result<UeventListener, UeventError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkKObjectUEvent,
        )
        .map_err(UeventError::Open)?;
        // A small receive buffer is only a risk of lost events; go on if the kernel refuses.
        let _ = setsockopt(&fd, sockopt::RcvBuf, &RECEIVE_BUFFER_BYTES);
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, KERNEL_GROUP)).map_err(UeventError::Open)?;
        Ok(UeventListener { fd })
    }

    /// Receives one pending kernel message without blocking: `Ok(None)` when none is waiting.
    /// Messages from user space (udev, or anyone else) are dropped.
    pub fn try_recv(&self) -> Result<Option<Uevent>, UeventError> {
        let mut buffer = vec![0u8; MESSAGE_BYTES_MAX];
        loop {
            let received = netlink::recv_from_kernel(&self.fd, &mut buffer);
            let Some(datagram) = received.map_err(UeventError::Receive)? else {
                return Ok(None);
            };
            let bytes = buffer.get(..datagram.bytes).ok_or(UeventError::TooLong {
                bytes: datagram.bytes,
            })?;
            if let Some(event) = parse(bytes)? {
                return Ok(Some(event));
            }
        }
    }

    /// Blocks until a uevent arrives or `timeout` passes (`Ok(None)`).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Uevent>, UeventError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.try_recv()? {
                return Ok(Some(event));
            }
            if !netlink::wait_readable(&self.fd, deadline).map_err(UeventError::Receive)? {
                return Ok(None);
            }
        }
    }

    /// Turns the listener into an async stream; call inside a tokio runtime with I/O enabled.
    pub fn into_stream(self) -> Result<UeventStream, UeventError> {
        Ok(UeventStream {
            inner: AsyncFd::new(self).map_err(UeventError::Register)?,
        })
    }
}

impl AsRawFd for UeventListener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// Kernel uevents as an async stream of typed events.
#[derive(Debug)]
pub struct UeventStream {
    inner: AsyncFd<UeventListener>,
}

impl UeventStream {
    /// The next uevent of any subsystem.
    pub async fn next_raw(&mut self) -> Result<Uevent, UeventError> {
        loop {
            let mut guard = self.inner.readable().await.map_err(UeventError::Register)?;
            match guard.get_inner().try_recv()? {
                Some(event) => return Ok(event),
                None => guard.clear_ready(),
            }
        }
    }

    /// The next uevent about a PCI, NVMe, InfiniBand or net device.
    pub async fn next(&mut self) -> Result<DeviceEvent, UeventError> {
        loop {
            if let Some(event) = self.next_raw().await?.device_event() {
                return Ok(event);
            }
        }
    }
}
