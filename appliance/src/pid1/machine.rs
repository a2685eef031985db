//! The appliance's own machine, for the service PID 1 runs: the management NIC (the one PID 1
//! configured at boot, `net::choose_management`) set through `drivers::netconf` and read back
//! from the kernel, and the power orders as signals to PID 1, which stops the service cleanly
//! and then reboots or powers off (`supervisor::REBOOT_SIGNAL`, `POWER_OFF_SIGNAL`).

use std::path::Path;

use drivers::{error_chain, netconf};
use nix::sys::signal::kill;
use nix::unistd::Pid;

use super::net;
use super::supervisor::{POWER_OFF_SIGNAL, REBOOT_SIGNAL};
use crate::model::network::prefix_of;
use crate::model::{ManagementNetwork, PowerAction};
use crate::runtime::machine::{Machine, ManagementPort};

const SYS_CLASS_NET: &str = "/sys/class/net";

#[derive(Debug, Default)]
pub struct ApplianceMachine;

impl ApplianceMachine {
    fn nic() -> Result<net::Interface, String> {
        net::choose_management(&net::list(Path::new(SYS_CLASS_NET)))
            .cloned()
            .ok_or_else(|| format!("no management NIC in {SYS_CLASS_NET}"))
    }
}

impl Machine for ApplianceMachine {
    fn management(&self) -> Option<ManagementPort> {
        let nic = Self::nic().ok()?;
        let address = match netconf::address(&nic.name) {
            Ok(found) => found.and_then(|(ip, mask)| Some((ip, prefix_of(mask)?))),
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "read the management port's address");
                None
            }
        };
        let routes = std::fs::read_to_string(netconf::PROC_NET_ROUTE).unwrap_or_default();
        Some(ManagementPort {
            interface: nic.name,
            mac: nic.mac,
            address,
            gateway: netconf::default_gateway(&routes),
        })
    }

    fn apply_network(&self, network: &ManagementNetwork) -> Result<String, String> {
        let nic = Self::nic()?;
        let _span = tracing::info_span!("set_management_network", interface = %nic.name, %network)
            .entered();
        let routes = std::fs::read_to_string(netconf::PROC_NET_ROUTE)
            .map_err(|e| format!("read {}: {e}", netconf::PROC_NET_ROUTE))?;
        let show = |e: netconf::NetconfError| error_chain(&e);
        if let Some(old) = netconf::default_gateway(&routes) {
            netconf::delete_default_route(old).map_err(show)?;
        }
        netconf::set_address(&nic.name, network.address, network.netmask()).map_err(show)?;
        netconf::set_up(&nic.name).map_err(show)?;
        if let Some(gateway) = network.gateway {
            netconf::add_default_route(gateway).map_err(show)?;
        }
        Ok(nic.name)
    }

    fn can_power(&self, _action: PowerAction) -> Result<(), String> {
        Ok(())
    }

    fn power(&self, action: PowerAction) {
        let signal = match action {
            PowerAction::Reboot => REBOOT_SIGNAL,
            PowerAction::PowerOff => POWER_OFF_SIGNAL,
        };
        if let Err(e) = kill(Pid::from_raw(1), signal) {
            tracing::error!(error = %e, action = action.name(), "signal PID 1");
        }
    }
}
