//! The appliance's own machine: its management port's IPv4 settings (the appliance has no DHCP
//! client; the operator sets them at the console, the CLI or the API, and they are journaled)
//! and the power orders (reboot, power off).

use std::net::Ipv4Addr;

use rkyv::{Archive, Deserialize as RkyvDeserialize, Serialize as RkyvSerialize};
use serde::{Deserialize, Serialize};

/// Shortest and longest prefix accepted: a management subnet with room for the appliance and
/// its gateway (/31 and /32 have none).
pub const PREFIX_MIN: u8 = 1;
pub const PREFIX_MAX: u8 = 30;

/// The management port's static IPv4 settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub struct ManagementNetwork {
    pub address: Ipv4Addr,
    /// The subnet's prefix length (24 for 255.255.255.0).
    pub prefix: u8,
    /// The default route's gateway; None = no default route (a flat management network).
    pub gateway: Option<Ipv4Addr>,
}

impl ManagementNetwork {
    /// Parses `ADDRESS/PREFIX` or `ADDRESS/NETMASK` and a gateway (`none` for no default
    /// route), then checks the whole (see [`ManagementNetwork::check`]).
    pub fn parse(address: &str, gateway: &str) -> Result<ManagementNetwork, String> {
        let (ip, mask) = address.split_once('/').ok_or_else(|| {
            format!("{address:?} names no subnet: write ADDRESS/PREFIX (10.0.2.15/24) or ADDRESS/NETMASK")
        })?;
        let address: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
        let prefix = match (mask.parse::<u8>(), mask.parse::<Ipv4Addr>()) {
            (Ok(prefix), _) => prefix,
            (_, Ok(netmask)) => prefix_of(netmask)
                .ok_or_else(|| format!("netmask {netmask} is not contiguous ones then zeros"))?,
            _ => return Err(format!("{mask:?} is neither a prefix length nor a netmask")),
        };
        let gateway = match gateway {
            "none" | "-" => None,
            text => Some(
                text.parse()
                    .map_err(|_| format!("gateway {text:?} is not an IPv4 address or `none`"))?,
            ),
        };
        let network = ManagementNetwork {
            address,
            prefix,
            gateway,
        };
        network.check()?;
        Ok(network)
    }

    /// Refuses settings that cannot work: a prefix outside 1..=30, an address that is not a
    /// host's (unspecified, loopback, multicast, broadcast, the subnet's own network or
    /// broadcast address), a gateway outside the subnet or equal to the address.
    pub fn check(&self) -> Result<(), String> {
        if !(PREFIX_MIN..=PREFIX_MAX).contains(&self.prefix) {
            return Err(format!(
                "prefix /{} is outside /{PREFIX_MIN} to /{PREFIX_MAX}",
                self.prefix
            ));
        }
        let host = |what: &str, ip: Ipv4Addr| -> Result<(), String> {
            if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
                return Err(format!("{what} {ip} is not a host's address"));
            }
            if ip == self.network_address() {
                return Err(format!(
                    "{what} {ip} is the network address of {}",
                    self.subnet()
                ));
            }
            if ip == self.broadcast() {
                return Err(format!(
                    "{what} {ip} is the broadcast address of {}",
                    self.subnet()
                ));
            }
            Ok(())
        };
        host("address", self.address)?;
        if let Some(gateway) = self.gateway {
            host("gateway", gateway)?;
            if !self.contains(gateway) {
                return Err(format!("gateway {gateway} is outside {}", self.subnet()));
            }
            if gateway == self.address {
                return Err(format!("gateway {gateway} is the address itself"));
            }
        }
        Ok(())
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask_bits(self.prefix))
    }

    pub fn network_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) & mask_bits(self.prefix))
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) | !mask_bits(self.prefix))
    }

    /// The subnet, as `10.0.2.0/24`.
    pub fn subnet(&self) -> String {
        format!("{}/{}", self.network_address(), self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask_bits(self.prefix) == u32::from(self.network_address())
    }
}

impl std::fmt::Display for ManagementNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)?;
        match self.gateway {
            Some(gateway) => write!(f, " gateway {gateway}"),
            None => write!(f, " no gateway"),
        }
    }
}

fn mask_bits(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

/// The prefix length of a contiguous netmask.
pub fn prefix_of(netmask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(netmask);
    let prefix = bits.leading_ones();
    (bits.checked_shl(prefix).unwrap_or(0) == 0).then_some(prefix as u8)
}

/// A power order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerAction {
    Reboot,
    PowerOff,
}

impl PowerAction {
    pub fn name(self) -> &'static str {
        match self {
            PowerAction::Reboot => "reboot",
            PowerAction::PowerOff => "power off",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_by_prefix_or_netmask() {
        let by_prefix = ManagementNetwork::parse("10.0.2.20/24", "10.0.2.2").unwrap();
        let by_mask = ManagementNetwork::parse("10.0.2.20/255.255.255.0", "10.0.2.2").unwrap();
        assert_eq!(by_prefix, by_mask);
        assert_eq!(by_prefix.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(by_prefix.subnet(), "10.0.2.0/24");
        assert_eq!(by_prefix.to_string(), "10.0.2.20/24 gateway 10.0.2.2");
        let flat = ManagementNetwork::parse("192.168.7.9/16", "none").unwrap();
        assert_eq!(flat.gateway, None);
        assert_eq!(flat.broadcast(), Ipv4Addr::new(192, 168, 255, 255));
    }

    #[test]
    fn settings_that_cannot_work_say_why() {
        for (address, gateway, error) in [
            ("10.0.2.20", "10.0.2.2", "names no subnet"),
            (
                "10.0.2.x/24",
                "10.0.2.2",
                "\"10.0.2.x\" is not an IPv4 address",
            ),
            (
                "10.0.2.20/33",
                "10.0.2.2",
                "prefix /33 is outside /1 to /30",
            ),
            ("10.0.2.20/31", "none", "prefix /31 is outside"),
            (
                "10.0.2.20/255.0.255.0",
                "none",
                "netmask 255.0.255.0 is not contiguous",
            ),
            ("10.0.2.20/wide", "none", "\"wide\" is neither"),
            (
                "10.0.2.0/24",
                "10.0.2.2",
                "address 10.0.2.0 is the network address of 10.0.2.0/24",
            ),
            (
                "10.0.2.255/24",
                "10.0.2.2",
                "address 10.0.2.255 is the broadcast address",
            ),
            (
                "127.0.0.5/8",
                "none",
                "address 127.0.0.5 is not a host's address",
            ),
            (
                "224.0.0.5/24",
                "none",
                "address 224.0.0.5 is not a host's address",
            ),
            (
                "10.0.2.20/24",
                "10.0.3.1",
                "gateway 10.0.3.1 is outside 10.0.2.0/24",
            ),
            (
                "10.0.2.20/24",
                "10.0.2.20",
                "gateway 10.0.2.20 is the address itself",
            ),
            (
                "10.0.2.20/24",
                "router",
                "gateway \"router\" is not an IPv4 address",
            ),
        ] {
            let got = ManagementNetwork::parse(address, gateway).unwrap_err();
            assert!(got.contains(error), "{address} {gateway}: {got}");
        }
    }

    #[test]
    fn netmasks_have_a_prefix_only_when_contiguous() {
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 252)), Some(30));
        assert_eq!(prefix_of(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 0, 255, 0)), None);
    }
}
