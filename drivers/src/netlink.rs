//! What the two kernel monitors on netlink sockets (uevents, rtnetlink links) share: receiving
//! one whole datagram from the kernel, and waiting for one with a deadline.

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, MsgFlags, NetlinkAddr};

/// A datagram received into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    /// The datagram's whole length: larger than the buffer when it was cut (MSG_TRUNC).
    pub bytes: usize,
    /// The sending port: 0 is the kernel, anything else user space.
    pub sender_pid: u32,
}

/// Receives the next datagram sent by the kernel without blocking; `Ok(None)` when none is
/// waiting (or a signal interrupted). Datagrams from user space (a port other than the kernel's
/// 0: udev, or anyone who can send to the group) are dropped. `MSG_TRUNC` makes the length
/// returned the datagram's own, so an oversized one is detected by the caller, never silently
/// cut.
pub fn recv_from_kernel(fd: &OwnedFd, buffer: &mut [u8]) -> nix::Result<Option<Datagram>> {
    loop {
        let mut iov = [IoSliceMut::new(buffer)];
        let flags = MsgFlags::MSG_TRUNC | MsgFlags::MSG_DONTWAIT;
        let received = match recvmsg::<NetlinkAddr>(fd.as_raw_fd(), &mut iov, None, flags) {
            Ok(message) => Datagram {
                bytes: message.bytes,
                // No address at all cannot come from the kernel.
                sender_pid: message.address.map_or(u32::MAX, |a| a.pid()),
            },
            Err(nix::Error::EAGAIN | nix::Error::EINTR) => return Ok(None),
            Err(e) => return Err(e),
        };
        if received.sender_pid == 0 {
            return Ok(Some(received));
        }
    }
}

/// Waits until `fd` is readable or `deadline` passes; false once it has passed.
pub fn wait_readable(fd: &OwnedFd, deadline: Instant) -> nix::Result<bool> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Ok(false);
    }
    // Rounded up, so a wait never ends just short of the deadline; at most a minute at a time.
    let millis =
        PollTimeout::try_from(left.as_millis().min(60_000) as i32 + 1).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, millis) {
        Ok(_) | Err(nix::Error::EINTR) => Ok(true),
        Err(e) => Err(e),
    }
}
