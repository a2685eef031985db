//! The appliance at the rack: the local console and the front panel. Both run beside the
//! service, in a process of their own, and reach it through the console's socket
//! (`DATA_DIR/console.sock`, the control protocol, orders journaled as made at the console):
//! a console that dies takes nothing of the core with it.
//!
//! - `commands.rs`: the console's commands, each one `api::Request`, with their confirmations.
//! - `screen.rs`: the full screen (ratatui over crossterm): the status screen and the actions
//!   as keys; `line.rs`: line mode (`appliance console --line`), for dumb terminals and scripts,
//!   and what the console falls back to when its output is not a terminal or `TERM=dumb`.
//! - `pin.rs`: the console's PIN, hashed, with the lockout after five wrong ones.
//! - `panel.rs`: the 2x20 front panel, rendered without allocating; [`run_panel`] keeps it
//!   up to date from the journal's live tail.

pub mod commands;
pub mod line;
pub mod panel;
pub mod pin;
pub mod screen;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::control::{Client, ControlError, CONSOLE_SOCKET_NAME};
use crate::api::views::{AlarmView, HistoryEntryView, StatusView};
use crate::api::{ApiError, Query, Reply, Request};

/// Why the service did not answer as asked.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("the service's console socket: {0}")]
    Link(#[from] ControlError),
    #[error("refused ({}): {}", .0.code, .0.message)]
    Refused(ApiError),
    #[error("the service answered {0} where {1} was asked")]
    Unexpected(&'static str, &'static str),
}

/// The service, as the console reaches it: one connection to the console's socket, opened
/// again when it broke (the service restarted).
#[derive(Debug)]
pub struct Service {
    data_dir: PathBuf,
    socket: PathBuf,
    client: Option<Client>,
}

impl Service {
    /// The service of data directory `data_dir`; connects at the first call.
    pub fn of(data_dir: &Path) -> Service {
        Service {
            data_dir: data_dir.to_path_buf(),
            socket: data_dir.join(CONSOLE_SOCKET_NAME),
            client: None,
        }
    }

    /// Another connection to the same service.
    pub fn again(&self) -> Service {
        Service {
            data_dir: self.data_dir.clone(),
            socket: self.socket.clone(),
            client: None,
        }
    }

    /// Sends `request`, connecting (once more, if the connection broke) as needed.
    pub fn call(&mut self, request: &Request) -> Result<Result<Reply, ApiError>, ControlError> {
        for attempt in 0..2 {
            let client = match self.client.as_mut() {
                Some(client) => client,
                None => self.client.insert(Client::connect_unix(&self.socket)?),
            };
            match client.call(request) {
                Ok(answer) => return Ok(answer),
                Err(e) if attempt == 0 => {
                    tracing::info!(error = %e, "the console's connection broke; connecting again");
                    self.client = None;
                }
                Err(e) => return Err(e),
            }
        }
        Err(ControlError::Closed {
            addr: self.socket.display().to_string(),
        })
    }

    fn ask(&mut self, query: Query) -> Result<Reply, ServiceError> {
        self.call(&Request::query(query))?
            .map_err(ServiceError::Refused)
    }

    pub fn status(&mut self) -> Result<StatusView, ServiceError> {
        match self.ask(Query::Status)? {
            Reply::Status(status) => Ok(*status),
            _ => Err(ServiceError::Unexpected("another reply", "status")),
        }
    }

    pub fn alarms(&mut self) -> Result<Vec<AlarmView>, ServiceError> {
        match self.ask(Query::Alarms)? {
            Reply::Alarms(alarms) => Ok(alarms),
            _ => Err(ServiceError::Unexpected("another reply", "alarms")),
        }
    }

    /// The events after `after`, waiting up to `wait` for the first.
    pub fn events_after(
        &mut self,
        after: u64,
        wait: Duration,
    ) -> Result<Vec<HistoryEntryView>, ServiceError> {
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        let query = Query::Events {
            after,
            wait_ms,
            limit: None,
        };
        match self.ask(query)? {
            Reply::History(entries) => Ok(entries),
            _ => Err(ServiceError::Unexpected("another reply", "events")),
        }
    }

    /// The latest `count` events of the journal, oldest first.
    pub fn latest_events(&mut self, count: usize) -> Result<Vec<HistoryEntryView>, ServiceError> {
        let head = self.status()?.journal_head;
        let after = head.saturating_sub(u64::try_from(count).unwrap_or(u64::MAX));
        let mut entries = self.events_after(after, Duration::ZERO)?;
        entries.truncate(count);
        Ok(entries)
    }
}

impl Service {
    /// What `command` answers, as the text both the full screen and line mode show: the reply
    /// rendered for people, the refusal with its code, or why the service did not answer.
    /// Nothing for the commands the console answers itself (help, lock, quit).
    pub fn answer(&mut self, command: &commands::Command) -> String {
        match command {
            commands::Command::Events { count } => {
                return match self.latest_events(*count) {
                    Ok(entries) => crate::api::render::reply(&Reply::History(entries)),
                    Err(e) => format!("{e}\n"),
                }
            }
            commands::Command::Network => {
                return match self.status() {
                    Ok(status) => match crate::api::render::management(&status) {
                        text if text.is_empty() => "no management port of its own (the service runs outside the appliance's image)\n".into(),
                        text => text,
                    },
                    Err(e) => format!("{e}\n"),
                }
            }
            commands::Command::ShowPassword => return self.show_password(),
            commands::Command::ResetPassword => return self.reset_password(),
            _ => {}
        }
        let Some(request) = command.request() else {
            return String::new();
        };
        match self.call(&request) {
            Ok(Ok(reply)) => crate::api::render::reply(&reply),
            Ok(Err(refused)) => crate::api::render::error(&refused),
            Err(e) => format!("{e}\n"),
        }
    }
}

/// The account whose password the console shows and resets.
pub const ADMIN: &str = "admin";

impl Service {
    fn password_file(&self) -> PathBuf {
        self.data_dir.join(crate::api::redfish::ADMIN_PASSWORD_FILE)
    }

    /// `admin`'s random password, while it is the one kept on the data disk.
    fn show_password(&self) -> String {
        let path = self.password_file();
        match std::fs::read_to_string(&path) {
            Ok(password) => format!(
                "{ADMIN}'s password, as kept in {} (root only): {}\n",
                path.display(),
                password.trim()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!(
                "no password is kept for {ADMIN}: it was provisioned or changed; `password reset` makes a new one\n"
            ),
            Err(e) => format!("read {}: {e}\n", path.display()),
        }
    }

    /// A new random password for `admin`: journaled as a change of its account (its hash
    /// only), kept on the data disk like the first one (root only), and shown.
    fn reset_password(&mut self) -> String {
        let password = crate::api::auth::random_password();
        let verb = crate::decide::command::Verb::ChangeAccount {
            name: ADMIN.into(),
            change: crate::model::AccountChange::Password {
                password: crate::model::Password::Plain(crate::model::Secret(password.clone())),
                change_required: false,
            },
        };
        let request = Request::order(verb, crate::api::Meta::default());
        match self.call(&request) {
            Ok(Ok(_)) => {}
            Ok(Err(refused)) => return crate::api::render::error(&refused),
            Err(e) => return format!("{e}\n"),
        }
        let path = self.password_file();
        let _ = std::fs::remove_file(&path);
        let kept = match crate::api::auth::write_private(&path, format!("{password}\n").as_bytes())
        {
            Ok(()) => format!("kept in {} (root only)", path.display()),
            Err(e) => format!("NOT kept ({}: {e}): write it down now", path.display()),
        };
        format!("{ADMIN}'s new password: {password}\n{kept}; {ADMIN}'s open sessions were ended\n")
    }
}

/// The appliance at a glance, in a few lines: what the console shows while it is locked and
/// at the top of its status screen.
pub fn summary(status: &StatusView, alarms: &[AlarmView]) -> Vec<String> {
    let identity = &status.identity;
    let mut lines = vec![format!(
        "appliance {} at {}, journal head {}",
        identity.appliance_id, identity.site, status.journal_head
    )];
    lines.push(format!(
        "health {}, firmware {}, up {}",
        status.health,
        status.firmware,
        crate::api::render::uptime(status.uptime_s)
    ));
    let address = status
        .management
        .as_ref()
        .and_then(|port| Some((port, port.address?)))
        .map(|(port, (ip, prefix))| format!("management {} {ip}/{prefix}", port.interface));
    let api = status.api_url.as_ref().map(|url| format!("api {url}"));
    let reach: Vec<String> = address.into_iter().chain(api).collect();
    if !reach.is_empty() {
        lines.push(reach.join(", "));
    }
    let pools: Vec<String> = status
        .pools
        .iter()
        .filter(|(_, usage)| usage.total > 0)
        .map(|(kind, usage)| {
            format!(
                "{kind} {}/{} composed, {} free",
                usage.composed, usage.total, usage.free
            )
        })
        .collect();
    lines.push(match pools.is_empty() {
        true => "no devices in the pool".to_string(),
        false => pools.join("; "),
    });
    lines.push(format!(
        "{} systems, {} operations pending, alarms: {} critical, {} warning",
        status.systems, status.operations_pending, status.alarms_critical, status.alarms_warning
    ));
    for alarm in alarms {
        lines.push(format!(
            "alarm {} {} {}: {}",
            alarm.id.0,
            alarm.severity.name(),
            alarm.device,
            alarm.message
        ));
    }
    lines
}

/// How long the panel shows a page before the next, when nothing changes.
pub const PANEL_PAGE: Duration = Duration::from_secs(3);

/// Keeps `display` up to date until the service cannot be reached and `stop` says so: the
/// facts are read again on every journal event (the journal's live tail, waited on), and the
/// pages cycle every `page`. A service that does not answer is shown on the panel and asked
/// again.
pub fn run_panel(
    service: &mut Service,
    display: &mut dyn panel::PanelDisplay,
    page: Duration,
    mut keep_going: impl FnMut() -> bool,
) -> std::io::Result<()> {
    let mut frame = 0usize;
    let mut head = None;
    let mut facts = panel::PanelFacts::default();
    while keep_going() {
        let changed = match head {
            None => true,
            Some(after) => match service.events_after(after, page) {
                Ok(entries) => !entries.is_empty(),
                Err(e) => {
                    tracing::warn!(error = %e, "the panel's events");
                    head = None;
                    std::thread::sleep(page);
                    continue;
                }
            },
        };
        if changed {
            match (service.status(), service.alarms()) {
                (Ok(status), Ok(alarms)) => {
                    head = Some(status.journal_head);
                    facts = panel::PanelFacts::of(&status, &alarms);
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "the panel's facts");
                    let mut lines = [panel::Line::new(), panel::Line::new()];
                    let _ = lines[0].push_str("SERVICE DOWN");
                    let _ = lines[1].push_str("retrying");
                    display.show(&lines)?;
                    std::thread::sleep(page);
                    continue;
                }
            }
        } else {
            frame = frame.wrapping_add(1);
        }
        display.show(&panel::render(&facts, frame))?;
    }
    Ok(())
}
