//! The management network: loopback up, then the management NIC (the bench's MAC, else the first
//! Ethernet interface) at a static address with a default route (there is no DHCP client).

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

/// The MAC the QEMU bench gives the management NIC.
pub const MANAGEMENT_MAC: &str = "52:54:00:12:34:56";
pub const MANAGEMENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
pub const MANAGEMENT_NETMASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 0);
pub const MANAGEMENT_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

/// An interface as `/sys/class/net` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
}

/// Picks the management NIC: the one with [`MANAGEMENT_MAC`], else the first by name that is not
/// loopback.
pub fn choose_management(interfaces: &[Interface]) -> Option<&Interface> {
    let candidates = || interfaces.iter().filter(|i| i.name != "lo");
    candidates()
        .find(|i| i.mac.eq_ignore_ascii_case(MANAGEMENT_MAC))
        .or_else(|| candidates().min_by(|a, b| a.name.cmp(&b.name)))
}

/// Lists interfaces under `sys_class_net`.
pub fn list(sys_class_net: &Path) -> Vec<Interface> {
    let Ok(entries) = fs::read_dir(sys_class_net) else {
        return Vec::new();
    };
    let mut interfaces: Vec<Interface> = entries
        .filter_map(|e| e.ok())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let mac = fs::read_to_string(e.path().join("address"))
                .unwrap_or_default()
                .trim()
                .to_string();
            Interface { name, mac }
        })
        .collect();
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    interfaces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, mac: &str) -> Interface {
        Interface {
            name: name.into(),
            mac: mac.into(),
        }
    }

    #[test]
    fn the_bench_mac_wins_else_the_first_non_loopback() {
        let all = [
            iface("lo", "00:00:00:00:00:00"),
            iface("eth0", "52:54:00:aa:00:01"),
            iface("eth1", MANAGEMENT_MAC),
        ];
        assert_eq!(choose_management(&all).unwrap().name, "eth1");
        let all = [
            iface("lo", "00:00:00:00:00:00"),
            iface("enp0s3", "52:54:00:aa:00:01"),
            iface("eth0", "x"),
        ];
        assert_eq!(choose_management(&all).unwrap().name, "enp0s3");
        assert_eq!(choose_management(&[iface("lo", "")]), None);
    }

    #[test]
    fn lists_interfaces_from_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        for (name, mac) in [
            ("eth0", "52:54:00:12:34:56\n"),
            ("lo", "00:00:00:00:00:00\n"),
        ] {
            fs::create_dir_all(dir.path().join(name)).unwrap();
            fs::write(dir.path().join(name).join("address"), mac).unwrap();
        }
        assert_eq!(
            list(dir.path()),
            vec![
                iface("eth0", MANAGEMENT_MAC),
                iface("lo", "00:00:00:00:00:00")
            ]
        );
    }
}
