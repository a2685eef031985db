//! The console's commands, as typed in line mode (`appliance console --line`) and as the full
//! screen's actions are named: each maps to one `api::Request`, the same the API and the CLI
//! send, so nothing here decides anything. Destructive ones ask for a confirmation first.

use crate::api::{Meta, Query, Request};
use crate::decide::command::{Selection, Verb};
use crate::decide::placement::Want;
use crate::model::{
    AlarmId, DeviceId, ManagementNetwork, PowerAction, Role, SystemName, TenantName,
};

/// One command of the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Status,
    Systems,
    Devices,
    Alarms,
    /// The latest `count` events of the journal.
    Events {
        count: usize,
    },
    CreateTenant {
        name: TenantName,
    },
    CreateSystem {
        name: SystemName,
        tenant: TenantName,
        role: Role,
    },
    /// Compose named devices, or devices the placement picks for constraints (`gpu:2:24`).
    Compose {
        system: SystemName,
        selection: Selection,
    },
    /// Decompose `device` of `system`, or all of its devices.
    Decompose {
        system: SystemName,
        device: Option<DeviceId>,
    },
    Failover {
        system: SystemName,
        device: DeviceId,
    },
    Service {
        device: DeviceId,
        change: ServiceChange,
        reason: String,
    },
    ClearAlarm {
        alarm: AlarmId,
    },
    /// The management port: as the kernel has it, the operator's setting, the API's URL.
    Network,
    SetNetwork {
        network: ManagementNetwork,
    },
    /// Shows `admin`'s first random password, if it is still the one kept on the data disk.
    ShowPassword,
    /// Gives `admin` a new random password, kept on the data disk (root only) and shown once.
    ResetPassword,
    /// Reads the whole journal back and says whether it is intact.
    Verify,
    /// The directory logins fall back to (read only at the console).
    Directory,
    Power {
        action: PowerAction,
    },
    /// Locks the console (the PIN is asked again).
    Lock,
    Quit,
}

/// What `service` does to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceChange {
    Out,
    In,
    /// Back in service, repaired or replaced: healthy again, its alarms cleared.
    Repaired,
}

/// The commands, one line each, for `help` and the full screen's key line.
pub const HELP: &[&str] = &[
    "status                          the appliance at a glance",
    "systems | devices | alarms      what is composed, the pool, active alarms",
    "events [N]                      the latest N events (default 10)",
    "tenant NAME                     a new tenant (a studio, a show)",
    "create SYSTEM TENANT ROLE       a new system (workstation, render_node, nas_gateway)",
    "compose SYSTEM DEVICE...        attach free devices (Tab picks the next free one)",
    "compose SYSTEM KIND:N[:MIN]...  or what the placement finds: gpu:2:24 nvme:1:2TB",
    "decompose SYSTEM [DEVICE]       release one device, or all (asks to confirm)",
    "failover SYSTEM DEVICE          replace a system's device by a spare (asks to confirm)",
    "service DEVICE out|in|repaired [REASON...]   out of service (asks to confirm) or back",
    "clear ALARM                     end an alarm by its number",
    "network                         the management port, its setting, the API's URL",
    "network ADDRESS/PREFIX GATEWAY  set the management port (gateway `none`; confirms)",
    "password show | reset           admin's first password | a new random one (confirms)",
    "verify                          read the whole journal back and check it",
    "directory                       the studio's directory logins fall back to",
    "reboot | poweroff               restart or stop the appliance (asks to confirm)",
    "lock | quit                     lock the console | leave line mode",
];

/// How many events `events` shows by default.
pub const EVENTS_DEFAULT: usize = 10;

impl Command {
    /// Parses one line; `Ok(None)` for a blank one. An error says what is wrong and how the
    /// command is written.
    pub fn parse(line: &str) -> Result<Option<Command>, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&verb, args)) = words.split_first() else {
            return Ok(None);
        };
        let usage = |form: &str| Err(format!("usage: {form}"));
        let command = match (verb.to_ascii_lowercase().as_str(), args) {
            ("help" | "?", _) => Command::Help,
            ("status", []) => Command::Status,
            ("systems", []) => Command::Systems,
            ("devices", []) => Command::Devices,
            ("alarms", []) => Command::Alarms,
            ("events", []) => Command::Events {
                count: EVENTS_DEFAULT,
            },
            ("events", [count]) => match count.parse::<usize>() {
                Ok(count) if count > 0 => Command::Events { count },
                _ => return Err(format!("events: {count:?} is not a count of events")),
            },
            ("tenant", [name]) => Command::CreateTenant {
                name: (*name).into(),
            },
            ("tenant", _) => return usage("tenant NAME"),
            ("create", [name, tenant, role]) => Command::CreateSystem {
                name: (*name).into(),
                tenant: (*tenant).into(),
                role: role.parse().map_err(|_| {
                    format!("create: no role {role:?} (workstation, render_node, nas_gateway)")
                })?,
            },
            ("create", _) => return usage("create SYSTEM TENANT ROLE"),
            ("compose", [system, picks @ ..]) if !picks.is_empty() => Command::Compose {
                system: (*system).into(),
                selection: selection(picks)?,
            },
            ("compose", _) => {
                return usage("compose SYSTEM DEVICE... | compose SYSTEM KIND:N[:MIN]...")
            }
            ("decompose", [system]) => Command::Decompose {
                system: (*system).into(),
                device: None,
            },
            ("decompose", [system, device]) => Command::Decompose {
                system: (*system).into(),
                device: Some((*device).into()),
            },
            ("decompose", _) => return usage("decompose SYSTEM [DEVICE]"),
            ("failover", [system, device]) => Command::Failover {
                system: (*system).into(),
                device: (*device).into(),
            },
            ("failover", _) => return usage("failover SYSTEM DEVICE"),
            ("service", [device, change, reason @ ..]) => Command::Service {
                device: (*device).into(),
                change: match *change {
                    "out" => ServiceChange::Out,
                    "in" => ServiceChange::In,
                    "repaired" => ServiceChange::Repaired,
                    other => return Err(format!("service: {other:?} is not out, in or repaired")),
                },
                reason: reason.join(" "),
            },
            ("service", _) => return usage("service DEVICE out|in|repaired [REASON...]"),
            ("clear", [alarm]) => match alarm.trim_start_matches('#').parse::<u64>() {
                Ok(n) => Command::ClearAlarm { alarm: AlarmId(n) },
                Err(_) => return Err(format!("clear: {alarm:?} is not an alarm's number")),
            },
            ("clear", _) => return usage("clear ALARM"),
            ("network", []) => Command::Network,
            ("network", [address, gateway]) => Command::SetNetwork {
                network: ManagementNetwork::parse(address, gateway)
                    .map_err(|e| format!("network: {e}"))?,
            },
            ("network", _) => return usage("network [ADDRESS/PREFIX GATEWAY|none]"),
            ("password", ["show"]) => Command::ShowPassword,
            ("password", ["reset"]) => Command::ResetPassword,
            ("password", _) => return usage("password show|reset"),
            ("verify", []) => Command::Verify,
            ("directory", []) => Command::Directory,
            ("reboot", []) => Command::Power {
                action: PowerAction::Reboot,
            },
            ("poweroff" | "shutdown", []) => Command::Power {
                action: PowerAction::PowerOff,
            },
            ("lock", []) => Command::Lock,
            ("quit" | "exit", []) => Command::Quit,
            (
                "status" | "systems" | "devices" | "alarms" | "lock" | "quit" | "exit" | "verify"
                | "directory" | "reboot" | "poweroff" | "shutdown",
                _,
            ) => return Err(format!("{verb} takes no arguments")),
            _ => return Err(format!("no command {verb:?}; `help` lists them")),
        };
        Ok(Some(command))
    }

    /// The question to confirm before a destructive command, if it is one.
    pub fn confirmation(&self) -> Option<String> {
        match self {
            Command::Decompose { system, device } => Some(match device {
                Some(device) => format!("Release {device} from {system}?"),
                None => format!("Release every device of {system}?"),
            }),
            Command::Failover { system, device } => {
                Some(format!("Replace {device} of {system} by a spare?"))
            }
            Command::Service {
                device,
                change: ServiceChange::Out,
                ..
            } => Some(format!(
                "Take {device} out of service (its system moves off it only by a failover)?"
            )),
            Command::SetNetwork { network } => Some(format!(
                "Set the management port to {network} (connections to the old address drop)?"
            )),
            Command::ResetPassword => {
                Some("Give admin a new random password (the old one stops working)?".into())
            }
            Command::Power {
                action: PowerAction::Reboot,
            } => Some("Reboot the appliance?".into()),
            Command::Power {
                action: PowerAction::PowerOff,
            } => Some("Power the appliance off (it stays off until someone powers it on)?".into()),
            _ => None,
        }
    }

    /// The request the command sends; None for those the console answers itself.
    pub fn request(&self) -> Option<Request> {
        let order = |verb| Some(Request::order(verb, Meta::default()));
        let query = |query| Some(Request::query(query));
        match self {
            Command::Help
            | Command::Lock
            | Command::Quit
            | Command::Events { .. }
            | Command::Network
            | Command::ShowPassword
            | Command::ResetPassword => None,
            Command::Verify => query(Query::VerifyJournal),
            Command::Directory => query(Query::Directory),
            Command::SetNetwork { network } => {
                order(Verb::SetManagementNetwork { network: *network })
            }
            Command::Power { action } => order(Verb::Power {
                action: *action,
                reason: "at the console".into(),
            }),
            Command::Status => query(Query::Status),
            Command::Systems => query(Query::Systems),
            Command::Devices => query(Query::Devices),
            Command::Alarms => query(Query::Alarms),
            Command::CreateTenant { name } => order(Verb::CreateTenant { name: name.clone() }),
            Command::CreateSystem { name, tenant, role } => order(Verb::CreateSystem {
                name: name.clone(),
                tenant: tenant.clone(),
                role: *role,
            }),
            Command::Compose { system, selection } => order(Verb::Compose {
                system: system.clone(),
                selection: selection.clone(),
                create: None,
                tenant: None,
                reservation: None,
            }),
            Command::Decompose { system, device } => order(Verb::Decompose {
                system: system.clone(),
                devices: device.clone().map(|d| vec![d]),
            }),
            Command::Failover { system, device } => order(Verb::Failover {
                system: system.clone(),
                device: device.clone(),
            }),
            Command::Service {
                device,
                change,
                reason,
            } => order(Verb::SetService {
                device: device.clone(),
                in_service: *change != ServiceChange::Out,
                reason: reason.clone(),
                repaired: *change == ServiceChange::Repaired,
            }),
            Command::ClearAlarm { alarm } => order(Verb::ClearAlarm { alarm: *alarm }),
        }
    }
}

/// Named devices, or constraints (a word with a colon: `gpu:2:24`); not both in one compose.
fn selection(picks: &[&str]) -> Result<Selection, String> {
    let wants = picks.iter().filter(|p| p.contains(':')).count();
    match wants {
        0 => Ok(Selection::Specific(
            picks.iter().map(|d| (*d).into()).collect(),
        )),
        n if n == picks.len() => picks
            .iter()
            .map(|p| Want::parse(p).map_err(|e| format!("compose: {e}")))
            .collect::<Result<_, _>>()
            .map(Selection::Constrained),
        _ => Err("compose: give device names or constraints (gpu:2), not both".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_to_the_one_vocabulary_and_bad_lines_say_why() {
        assert_eq!(Command::parse("   ").unwrap(), None);
        let compose = Command::parse("compose ws1 gpu-0 nvme-0").unwrap().unwrap();
        assert_eq!(
            compose.request().unwrap().action,
            crate::api::Action::Order(Verb::Compose {
                system: "ws1".into(),
                selection: Selection::Specific(vec!["gpu-0".into(), "nvme-0".into()]),
                create: None,
                tenant: None,
                reservation: None,
            })
        );
        assert_eq!(compose.confirmation(), None);
        let out = Command::parse("service gpu-0 out fan noise")
            .unwrap()
            .unwrap();
        assert_eq!(
            out,
            Command::Service {
                device: "gpu-0".into(),
                change: ServiceChange::Out,
                reason: "fan noise".into()
            }
        );
        assert!(out.confirmation().is_some());
        for destructive in ["decompose ws1", "decompose ws1 gpu-0", "failover ws1 gpu-0"] {
            let command = Command::parse(destructive).unwrap().unwrap();
            assert!(command.confirmation().is_some(), "{destructive}");
        }
        assert_eq!(
            Command::parse("clear #7").unwrap(),
            Some(Command::ClearAlarm { alarm: AlarmId(7) })
        );
        for (line, error) in [
            ("melt ws1", "no command \"melt\"; `help` lists them"),
            ("compose ws1", "usage: compose SYSTEM DEVICE..."),
            ("create ws1 studio painter", "create: no role \"painter\""),
            (
                "service gpu-0 sideways",
                "service: \"sideways\" is not out, in or repaired",
            ),
            ("events lots", "events: \"lots\" is not a count of events"),
            ("status now", "status takes no arguments"),
            ("clear x", "clear: \"x\" is not an alarm's number"),
        ] {
            let got = Command::parse(line).unwrap_err();
            assert!(got.starts_with(error), "{line}: {got}");
        }
    }

    #[test]
    fn the_machines_commands_and_constrained_composes_parse_and_confirm() {
        let constrained = Command::parse("compose ws1 gpu:2:24 nvme:1:2TB")
            .unwrap()
            .unwrap();
        let Command::Compose {
            selection: Selection::Constrained(wants),
            ..
        } = &constrained
        else {
            panic!("{constrained:?}")
        };
        assert_eq!(wants.len(), 2);
        assert_eq!(
            wants[0].capacity_bytes_min,
            24 << 30,
            "GiB, as the CLI reads it"
        );
        let network = Command::parse("network 10.0.2.20/24 10.0.2.2")
            .unwrap()
            .unwrap();
        assert_eq!(
            network.request().unwrap().action,
            crate::api::Action::Order(Verb::SetManagementNetwork {
                network: ManagementNetwork::parse("10.0.2.20/24", "10.0.2.2").unwrap()
            })
        );
        for (line, question) in [
            (
                "network 10.0.2.20/24 none",
                "Set the management port to 10.0.2.20/24 no gateway",
            ),
            ("password reset", "Give admin a new random password"),
            ("reboot", "Reboot the appliance?"),
            ("poweroff", "Power the appliance off"),
        ] {
            let command = Command::parse(line).unwrap().unwrap();
            let asked = command.confirmation().unwrap_or_default();
            assert!(asked.starts_with(question), "{line}: {asked:?}");
        }
        for safe in ["network", "password show", "verify"] {
            let command = Command::parse(safe).unwrap().unwrap();
            assert_eq!(command.confirmation(), None, "{safe}");
        }
        assert_eq!(
            Command::parse("verify").unwrap().unwrap().request(),
            Some(Request::query(Query::VerifyJournal))
        );
        for (line, error) in [
            (
                "compose ws1 gpu-0 gpu:1",
                "compose: give device names or constraints",
            ),
            (
                "compose ws1 gpu:x",
                "compose: \"gpu:x\": count \"x\" is not a number",
            ),
            ("network 10.0.2.20/24", "usage: network"),
            (
                "network 10.0.2.20/24 10.0.3.1",
                "network: gateway 10.0.3.1 is outside 10.0.2.0/24",
            ),
            ("password print", "usage: password show|reset"),
            ("reboot now", "reboot takes no arguments"),
        ] {
            let got = Command::parse(line).unwrap_err();
            assert!(got.starts_with(error), "{line}: {got}");
        }
    }
}
