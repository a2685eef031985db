//! The appliance's own machine, as the service drives it: the management port (its static IPv4
//! settings, applied once journaled and at every start) and the power (reboot, power off).
//!
//! In the image (PID 1 mode) the machine is the appliance itself (`pid1::machine`): the
//! settings go to the management NIC through `drivers::netconf`, and a power order is a signal
//! to PID 1, which stops the service cleanly and then reboots or powers off. Outside it
//! (`appliance serve` on someone's host, [`HostMachine`]) the host's network is not the
//! service's to change, and "power off" stops the service.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::core::CoreHandle;
use crate::decide::command::{Command, Observation};
use crate::model::{ManagementNetwork, PowerAction};

/// The management port as the kernel has it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagementPort {
    pub interface: String,
    pub mac: String,
    /// The interface's IPv4 address and prefix, if it has one.
    pub address: Option<(Ipv4Addr, u8)>,
    /// The default route's gateway, if there is one.
    pub gateway: Option<Ipv4Addr>,
}

/// What the service may do to the machine it runs on.
pub trait Machine: Send + Sync + std::fmt::Debug {
    /// The management port as the kernel shows it; None where the service has none of its own.
    fn management(&self) -> Option<ManagementPort>;
    /// Gives the management port these settings; answers the interface's name, or why not.
    fn apply_network(&self, network: &ManagementNetwork) -> Result<String, String>;
    /// Whether `action` can be carried out here: asked before the order is journaled.
    fn can_power(&self, action: PowerAction) -> Result<(), String>;
    /// Starts `action`; called once the order is durable (the service stops soon after).
    fn power(&self, action: PowerAction);
}

/// `appliance serve` outside the image: it owns no network and no machine; "power off" stops
/// the service when `stop` says how (the command line's serve: a SIGTERM to itself, which it
/// answers with a clean stop), and is refused otherwise (a service inside a test's process).
#[derive(Default)]
pub struct HostMachine {
    stop: Option<Box<dyn Fn() + Send + Sync>>,
}

impl HostMachine {
    /// A host whose "power off" stops this process as SIGTERM would.
    pub fn stopped_by_sigterm() -> HostMachine {
        HostMachine {
            stop: Some(Box::new(|| {
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM);
            })),
        }
    }
}

impl std::fmt::Debug for HostMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostMachine")
            .field("stops", &self.stop.is_some())
            .finish()
    }
}

/// Why a service outside the image leaves the host's network alone.
pub const NOT_OUR_NETWORK: &str =
    "this service runs outside the appliance's image (appliance serve): the host's network is not its to change";

impl Machine for HostMachine {
    fn management(&self) -> Option<ManagementPort> {
        None
    }

    fn apply_network(&self, _network: &ManagementNetwork) -> Result<String, String> {
        Err(NOT_OUR_NETWORK.to_string())
    }

    fn can_power(&self, action: PowerAction) -> Result<(), String> {
        match action {
            PowerAction::PowerOff if self.stop.is_some() => Ok(()),
            PowerAction::PowerOff => {
                Err("this service runs inside another program: it cannot power off".to_string())
            }
            PowerAction::Reboot => Err(
                "this service runs outside the appliance's image (appliance serve): it cannot reboot the host; power off stops the service"
                    .to_string(),
            ),
        }
    }

    fn power(&self, action: PowerAction) {
        if let (PowerAction::PowerOff, Some(stop)) = (action, &self.stop) {
            stop();
        }
    }
}

/// Applies the journaled settings of the management port, if the operator set any, and
/// journals how that went (a `ManagementNetworkApplied` event).
pub fn apply_journaled(core: &CoreHandle, machine: &dyn Machine) {
    let Some(network) = core.state().management_network else {
        return;
    };
    let _span = tracing::info_span!("apply_management_network", %network).entered();
    let (interface, error) = match machine.apply_network(&network) {
        Ok(interface) => (interface, None),
        Err(error) => {
            tracing::warn!(%error, "the management port's settings were not applied");
            (String::new(), Some(error))
        }
    };
    let observation = Observation::ManagementApplied {
        interface,
        network,
        error,
    };
    if let Err(e) = core.submit(Command::Observe(observation)) {
        tracing::warn!(error = %e, "journal how the management port was set");
    }
}
