//! A static IPv4 configuration through the classic `AF_INET` socket ioctls: an interface's
//! address and netmask (SIOCSIFADDR, SIOCSIFNETMASK), administratively up (SIOCGIFFLAGS then
//! SIOCSIFFLAGS), and a default route (SIOCADDRT, SIOCDELRT); read back with SIOCGIFADDR,
//! SIOCGIFNETMASK and `/proc/net/route`. This is what PID 1 and the service need for the
//! management network, which has no DHCP client and no `ip` tool.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use tracing::info_span;

/// An interface name is at most IFNAMSIZ bytes with its NUL.
pub const INTERFACE_NAME_BYTES_MAX: usize = libc::IFNAMSIZ - 1;

/// Errors of configuring an interface or a route; each names the ioctl, the interface and the
/// value that failed.
#[derive(Debug, thiserror::Error)]
pub enum NetconfError {
    #[error(
        "interface name {name:?} is empty, longer than {INTERFACE_NAME_BYTES_MAX} bytes or holds NUL"
    )]
    BadName { name: String },
    #[error("open an AF_INET datagram socket for interface ioctls")]
    Socket {
        #[source]
        source: nix::Error,
    },
    #[error("SIOCSIFADDR {address} on {interface}")]
    SetAddress {
        interface: String,
        address: Ipv4Addr,
        #[source]
        source: nix::Error,
    },
    #[error("SIOCSIFNETMASK {netmask} on {interface}")]
    SetNetmask {
        interface: String,
        netmask: Ipv4Addr,
        #[source]
        source: nix::Error,
    },
    #[error("SIOCGIFFLAGS on {interface}")]
    GetFlags {
        interface: String,
        #[source]
        source: nix::Error,
    },
    #[error("SIOCSIFFLAGS {flags:#06x} on {interface}")]
    SetFlags {
        interface: String,
        flags: u16,
        #[source]
        source: nix::Error,
    },
    #[error("SIOCADDRT default route via {gateway}")]
    AddDefaultRoute {
        gateway: Ipv4Addr,
        #[source]
        source: nix::Error,
    },
    #[error("SIOCDELRT default route via {gateway}")]
    DeleteDefaultRoute {
        gateway: Ipv4Addr,
        #[source]
        source: nix::Error,
    },
    #[error("{call} on {interface}")]
    GetAddress {
        call: &'static str,
        interface: String,
        #[source]
        source: nix::Error,
    },
}

impl NetconfError {
    /// The call that failed ("socket", "SIOCGIFFLAGS", ...) and its errno; `None` for a name
    /// refused before any call.
    pub fn call(&self) -> Option<(&'static str, nix::Error)> {
        match self {
            NetconfError::BadName { .. } => None,
            NetconfError::Socket { source } => Some(("socket", *source)),
            NetconfError::SetAddress { source, .. } => Some(("SIOCSIFADDR", *source)),
            NetconfError::SetNetmask { source, .. } => Some(("SIOCSIFNETMASK", *source)),
            NetconfError::GetFlags { source, .. } => Some(("SIOCGIFFLAGS", *source)),
            NetconfError::SetFlags { source, .. } => Some(("SIOCSIFFLAGS", *source)),
            NetconfError::AddDefaultRoute { source, .. } => Some(("SIOCADDRT", *source)),
            NetconfError::DeleteDefaultRoute { source, .. } => Some(("SIOCDELRT", *source)),
            NetconfError::GetAddress { call, source, .. } => Some((call, *source)),
        }
    }
}

/// The ioctls, typed. `bad` because these request numbers predate the `_IOW` encoding.
mod ioctl {
    nix::ioctl_write_ptr_bad!(set_address, libc::SIOCSIFADDR, libc::ifreq);
    nix::ioctl_write_ptr_bad!(set_netmask, libc::SIOCSIFNETMASK, libc::ifreq);
    nix::ioctl_readwrite_bad!(get_flags, libc::SIOCGIFFLAGS, libc::ifreq);
    nix::ioctl_write_ptr_bad!(set_flags, libc::SIOCSIFFLAGS, libc::ifreq);
    nix::ioctl_write_ptr_bad!(add_route, libc::SIOCADDRT, libc::rtentry);
    nix::ioctl_write_ptr_bad!(delete_route, libc::SIOCDELRT, libc::rtentry);
    nix::ioctl_readwrite_bad!(get_address, libc::SIOCGIFADDR, libc::ifreq);
    nix::ioctl_readwrite_bad!(get_netmask, libc::SIOCGIFNETMASK, libc::ifreq);
}

/// Gives `interface` the IPv4 `address` with `netmask` (which also adds the subnet's route).
pub fn set_address(
    interface: &str,
    address: Ipv4Addr,
    netmask: Ipv4Addr,
) -> Result<(), NetconfError> {
    let _span = info_span!("netconf_set_address", interface, %address, %netmask).entered();
    let mut request = ifreq(interface)?;
    let sock = inet_socket()?;
    request.ifr_ifru.ifru_addr = sockaddr_in(address);
    // SAFETY: a valid socket and a valid ifreq naming the interface with an AF_INET address,
    // which SIOCSIFADDR only reads during the call.
    unsafe { ioctl::set_address(sock.as_raw_fd(), &request) }.map_err(|source| {
        NetconfError::SetAddress {
            interface: interface.into(),
            address,
            source,
        }
    })?;
    let mut request = ifreq(interface)?;
    request.ifr_ifru.ifru_netmask = sockaddr_in(netmask);
    // SAFETY: as above, with the netmask, which SIOCSIFNETMASK only reads.
    unsafe { ioctl::set_netmask(sock.as_raw_fd(), &request) }.map_err(|source| {
        NetconfError::SetNetmask {
            interface: interface.into(),
            netmask,
            source,
        }
    })?;
    Ok(())
}

/// Sets `interface` administratively up (IFF_UP), keeping its other flags (`ip link set up`).
pub fn set_up(interface: &str) -> Result<(), NetconfError> {
    let _span = info_span!("netconf_set_up", interface).entered();
    let mut request = ifreq(interface)?;
    let sock = inet_socket()?;
    // SAFETY: a valid socket and a valid ifreq naming the interface; SIOCGIFFLAGS writes only
    // the flags member of that ifreq, which lives across the call.
    unsafe { ioctl::get_flags(sock.as_raw_fd(), &mut request) }.map_err(|source| {
        NetconfError::GetFlags {
            interface: interface.into(),
            source,
        }
    })?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { request.ifr_ifru.ifru_flags } | libc::IFF_UP as libc::c_short;
    request.ifr_ifru.ifru_flags = flags;
    // SAFETY: as above, with the flags to set, which SIOCSIFFLAGS only reads.
    unsafe { ioctl::set_flags(sock.as_raw_fd(), &request) }.map_err(|source| {
        NetconfError::SetFlags {
            interface: interface.into(),
            flags: flags as u16,
            source,
        }
    })?;
    Ok(())
}

/// Adds the default route via `gateway`; a default route that exists already (EEXIST) is fine.
pub fn add_default_route(gateway: Ipv4Addr) -> Result<(), NetconfError> {
    let _span = info_span!("netconf_add_default_route", %gateway).entered();
    let sock = inet_socket()?;
    let route = default_route(gateway);
    // SAFETY: a valid socket and a valid rtentry (no device name pointer), which SIOCADDRT only
    // reads during the call.
    match unsafe { ioctl::add_route(sock.as_raw_fd(), &route) } {
        Ok(_) | Err(Errno::EEXIST) => Ok(()),
        Err(source) => Err(NetconfError::AddDefaultRoute { gateway, source }),
    }
}

/// Deletes the default route via `gateway`; none such (ESRCH) is fine.
pub fn delete_default_route(gateway: Ipv4Addr) -> Result<(), NetconfError> {
    let _span = info_span!("netconf_delete_default_route", %gateway).entered();
    let sock = inet_socket()?;
    let route = default_route(gateway);
    // SAFETY: as for SIOCADDRT: a valid socket and rtentry, only read during the call.
    match unsafe { ioctl::delete_route(sock.as_raw_fd(), &route) } {
        Ok(_) | Err(Errno::ESRCH) => Ok(()),
        Err(source) => Err(NetconfError::DeleteDefaultRoute { gateway, source }),
    }
}

/// The IPv4 address and netmask of `interface`; None when it has no address (EADDRNOTAVAIL).
pub fn address(interface: &str) -> Result<Option<(Ipv4Addr, Ipv4Addr)>, NetconfError> {
    let sock = inet_socket()?;
    let failed = |call, source| NetconfError::GetAddress {
        call,
        interface: interface.into(),
        source,
    };
    let mut request = ifreq(interface)?;
    // SAFETY: a valid socket and ifreq naming the interface; SIOCGIFADDR writes only the
    // address member of that ifreq, which lives across the call.
    match unsafe { ioctl::get_address(sock.as_raw_fd(), &mut request) } {
        Ok(_) => {}
        Err(Errno::EADDRNOTAVAIL) => return Ok(None),
        Err(source) => return Err(failed("SIOCGIFADDR", source)),
    }
    // SAFETY: SIOCGIFADDR filled the address member with an AF_INET sockaddr.
    let address = ipv4_of(unsafe { &request.ifr_ifru.ifru_addr });
    let mut request = ifreq(interface)?;
    // SAFETY: as above, for the netmask member.
    unsafe { ioctl::get_netmask(sock.as_raw_fd(), &mut request) }
        .map_err(|source| failed("SIOCGIFNETMASK", source))?;
    // SAFETY: SIOCGIFNETMASK filled the netmask member with an AF_INET sockaddr.
    let netmask = ipv4_of(unsafe { &request.ifr_ifru.ifru_netmask });
    Ok(Some((address, netmask)))
}

/// The default route's gateway in a `/proc/net/route` table, if it has one (hex fields, the
/// address in the kernel's byte order: little-endian on the machines the appliance runs on).
pub fn default_gateway(proc_net_route: &str) -> Option<Ipv4Addr> {
    proc_net_route.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (destination, gateway, mask) = (fields.get(1)?, fields.get(2)?, fields.get(7)?);
        let hex = |text: &str| u32::from_str_radix(text, 16).ok();
        let gateway = hex(gateway)?;
        (hex(destination)? == 0 && hex(mask)? == 0 && gateway != 0)
            .then(|| Ipv4Addr::from(gateway.to_le_bytes()))
    })
}

/// The kernel's routing table, as `/proc/net/route` shows it.
pub const PROC_NET_ROUTE: &str = "/proc/net/route";

fn ipv4_of(addr: &libc::sockaddr) -> Ipv4Addr {
    let data = addr.sa_data.map(|b| b as u8);
    Ipv4Addr::new(data[2], data[3], data[4], data[5])
}

fn inet_socket() -> Result<OwnedFd, NetconfError> {
    socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|source| NetconfError::Socket { source })
}

/// An `ifreq` naming `interface`, all else zero.
fn ifreq(interface: &str) -> Result<libc::ifreq, NetconfError> {
    let bytes = interface.as_bytes();
    if bytes.is_empty() || bytes.len() > INTERFACE_NAME_BYTES_MAX || bytes.contains(&0) {
        return Err(NetconfError::BadName {
            name: interface.into(),
        });
    }
    // SAFETY: ifreq is plain old data (a name and a union of plain structs and integers);
    // all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(request)
}

/// An IPv4 address (port 0) in the generic `sockaddr` that ifreq and rtentry carry.
fn sockaddr_in(address: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(address.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes of plain data (transmute checks the
    // sizes), and sockaddr is the generic view of it that the kernel reads by sa_family.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// The `rtentry` of a default route (destination and genmask 0.0.0.0) via `gateway`.
fn default_route(gateway: Ipv4Addr) -> libc::rtentry {
    // SAFETY: rtentry is plain old data; all-zero is a valid value (its pointer, rt_dev, null:
    // no device named, the kernel picks it from the gateway).
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    route.rt_dst = sockaddr_in(Ipv4Addr::UNSPECIFIED);
    route.rt_genmask = sockaddr_in(Ipv4Addr::UNSPECIFIED);
    route.rt_gateway = sockaddr_in(gateway);
    route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    route
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The family and the four address bytes of a sockaddr that holds a sockaddr_in.
    fn family_and_address(addr: &libc::sockaddr) -> (i32, [u8; 4]) {
        let data = addr.sa_data.map(|b| b as u8);
        (
            i32::from(addr.sa_family),
            [data[2], data[3], data[4], data[5]],
        )
    }

    #[test]
    fn an_ifreq_names_the_interface_nul_terminated() {
        let request = ifreq("enp0s2").unwrap();
        let name: Vec<u8> = request.ifr_name.iter().map(|b| *b as u8).collect();
        assert_eq!(&name[..7], b"enp0s2\0");
        assert!(name[7..].iter().all(|b| *b == 0), "{name:?}");
        let longest = "a".repeat(INTERFACE_NAME_BYTES_MAX);
        let request = ifreq(&longest).unwrap();
        assert_eq!(
            request.ifr_name[INTERFACE_NAME_BYTES_MAX], 0,
            "room for the NUL"
        );
    }

    #[test]
    fn bad_interface_names_are_refused_before_any_call() {
        let too_long = "a".repeat(INTERFACE_NAME_BYTES_MAX + 1);
        for bad in ["", too_long.as_str(), "eth\0x"] {
            match ifreq(bad) {
                Err(e @ NetconfError::BadName { .. }) => assert_eq!(e.call(), None),
                other => panic!("{bad:?}: expected BadName, got {other:?}"),
            }
            assert!(
                matches!(set_up(bad), Err(NetconfError::BadName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_address_is_an_af_inet_sockaddr_in_network_order() {
        let addr = sockaddr_in(Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(family_and_address(&addr), (libc::AF_INET, [10, 0, 2, 15]));
        let data = addr.sa_data.map(|b| b as u8);
        assert_eq!(&data[..2], &[0, 0], "port 0");
        assert!(data[6..].iter().all(|b| *b == 0), "sin_zero: {data:?}");
    }

    #[test]
    fn the_default_route_is_everything_via_the_gateway() {
        let route = default_route(Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(
            family_and_address(&route.rt_gateway),
            (libc::AF_INET, [10, 0, 2, 2])
        );
        assert_eq!(family_and_address(&route.rt_dst), (libc::AF_INET, [0; 4]));
        assert_eq!(
            family_and_address(&route.rt_genmask),
            (libc::AF_INET, [0; 4])
        );
        assert_eq!(route.rt_flags, libc::RTF_UP | libc::RTF_GATEWAY);
        assert!(route.rt_dev.is_null(), "no device named");
        assert_eq!(route.rt_metric, 0);
    }

    #[test]
    fn the_default_gateway_is_read_from_the_route_table() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(default_gateway(table), Some(Ipv4Addr::new(10, 0, 2, 2)));
        let no_default = "Iface\tDestination\tGateway\n\
            eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(default_gateway(no_default), None);
        assert_eq!(default_gateway("garbage\nmore garbage\n"), None);
    }

    /// The whole cycle on the real kernel, in a network namespace of its own (a child process,
    /// so the test's own namespace is untouched): set an address, read it back, replace the
    /// default route, and see it in `/proc/net/route`.
    #[test]
    fn addresses_and_routes_round_trip_through_the_kernel_in_a_namespace() {
        // SAFETY: the child only makes syscalls and exits; it touches no lock the parent holds.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                let code = match in_namespace() {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("{e}");
                        1
                    }
                };
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).expect("waitpid");
                assert_eq!(
                    status,
                    nix::sys::wait::WaitStatus::Exited(child, 0),
                    "the namespace's checks (stderr says which failed)"
                );
            }
        }
    }

    fn in_namespace() -> Result<(), String> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("unshare(CLONE_NEWNET) (needs root): {e}"))?;
        let show = |e: NetconfError| crate::error_chain(&e);
        let (address, netmask) = (Ipv4Addr::new(10, 9, 0, 5), Ipv4Addr::new(255, 255, 255, 0));
        set_up("lo").map_err(show)?;
        set_address("lo", address, netmask).map_err(show)?;
        let got = super::address("lo").map_err(show)?;
        if got != Some((address, netmask)) {
            return Err(format!("lo reads back {got:?}"));
        }
        let routes = || std::fs::read_to_string(PROC_NET_ROUTE).map_err(|e| e.to_string());
        for gateway in [Ipv4Addr::new(10, 9, 0, 1), Ipv4Addr::new(10, 9, 0, 2)] {
            if let Some(old) = default_gateway(&routes()?) {
                delete_default_route(old).map_err(show)?;
            }
            add_default_route(gateway).map_err(show)?;
            let table = routes()?;
            if default_gateway(&table) != Some(gateway) {
                return Err(format!("after setting {gateway}, the table is:\n{table}"));
            }
        }
        delete_default_route(Ipv4Addr::new(10, 9, 0, 2)).map_err(show)?;
        delete_default_route(Ipv4Addr::new(10, 9, 0, 2)).map_err(show)?;
        if default_gateway(&routes()?).is_some() {
            return Err("a default route is left after deleting it".into());
        }
        Ok(())
    }

    /// An interface that does not exist: the kernel answers ENODEV, or EPERM to a caller without
    /// CAP_NET_ADMIN before it looks; either way the error names the ioctl, interface and value.
    #[test]
    fn a_missing_interface_fails_naming_the_ioctl_and_the_value() {
        match set_address(
            "nosuchif0",
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(255, 255, 255, 0),
        ) {
            Err(e @ NetconfError::SetAddress { .. }) => {
                let (call, errno) = e.call().unwrap();
                assert_eq!(call, "SIOCSIFADDR");
                assert!(matches!(errno, Errno::ENODEV | Errno::EPERM), "{errno}");
                assert_eq!(e.to_string(), "SIOCSIFADDR 192.0.2.1 on nosuchif0");
            }
            other => panic!("expected SetAddress, got {other:?}"),
        }
        match set_up("nosuchif0") {
            Err(e @ NetconfError::GetFlags { .. }) => {
                assert_eq!(e.call(), Some(("SIOCGIFFLAGS", Errno::ENODEV)));
                assert_eq!(e.to_string(), "SIOCGIFFLAGS on nosuchif0");
            }
            other => panic!("expected GetFlags ENODEV, got {other:?}"),
        }
    }
}
