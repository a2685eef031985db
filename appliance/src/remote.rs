//! `appliance ctl` over HTTPS: where the appliance is and whom to trust (`--url`, `--ca-cert`,
//! `--insecure`), the session `ctl login` keeps in the user's config directory, and the two
//! transports of a request (the API's `POST /redfish/v1/Oem/Appliance/Requests`, or the
//! control socket when run on the appliance itself).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use appliance::api::client::{Answer, Client, Trust};
use appliance::api::{Reply, Request};

/// How long one request may take (a compose waits for the hardware).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(150);
const SSE_PATH: &str = "/redfish/v1/EventService/SSE";

/// What `ctl login` keeps (mode 0600): the URL, whom it trusted, and the session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedSession {
    pub url: String,
    /// The pinned certificate (PEM), if `--ca-cert` was given.
    #[serde(default)]
    pub ca_cert_pem: Option<String>,
    #[serde(default)]
    pub insecure: bool,
    pub account: String,
    pub token: String,
    /// The session's URI (DELETE logs out).
    pub session: String,
}

impl SavedSession {
    pub fn trust(&self) -> Trust {
        match (&self.ca_cert_pem, self.insecure) {
            (Some(pem), _) => Trust::Pinned(pem.clone()),
            (None, true) => Trust::Insecure,
            (None, false) => Trust::PublicRoots,
        }
    }
}

/// The session file: `$XDG_CONFIG_HOME/appliance/session.json`, or `~/.config/...`.
pub fn session_file() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home =
                std::env::var_os("HOME").context("neither XDG_CONFIG_HOME nor HOME is set")?;
            PathBuf::from(home).join(".config")
        }
    };
    Ok(base.join("appliance").join("session.json"))
}

pub fn load_session() -> anyhow::Result<Option<SavedSession>> {
    let path = session_file()?;
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map(Some).with_context(|| {
            format!(
                "{} is not a saved session (remove it and log in again)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

fn save_session(session: &SavedSession) -> anyhow::Result<PathBuf> {
    let path = session_file()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&path);
    let text = serde_json::to_string_pretty(session)?;
    appliance::api::auth::write_private(&path, text.as_bytes())
        .with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// Whom to trust, from the command line.
pub fn trust_of(ca_cert: Option<&Path>, insecure: bool) -> anyhow::Result<Trust> {
    Ok(match (ca_cert, insecure) {
        (Some(path), _) => Trust::Pinned(
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?,
        ),
        (None, true) => Trust::Insecure,
        (None, false) => Trust::PublicRoots,
    })
}

/// A client for `url` (or the saved session's), authenticated by the saved session when it is
/// for the same URL, else by `APPLIANCE_USER` and `APPLIANCE_PASSWORD` (HTTP Basic).
pub fn connect(url: Option<&str>, trust: Option<Trust>) -> anyhow::Result<Client> {
    let saved = load_session()?;
    let saved = saved.filter(|s| url.is_none_or(|u| same_url(u, &s.url)));
    let Some(url) = url
        .map(str::to_string)
        .or_else(|| saved.as_ref().map(|s| s.url.clone()))
    else {
        bail!("no appliance named: give --url https://HOST:PORT (and log in with `appliance ctl --url URL login --user NAME`), or --data-dir DIR on the appliance itself");
    };
    let trust = trust
        .or_else(|| saved.as_ref().map(SavedSession::trust))
        .unwrap_or(Trust::PublicRoots);
    let client = Client::new(&url, &trust, REQUEST_TIMEOUT)?;
    if let Some(saved) = saved {
        return Ok(client.with_token(&saved.token));
    }
    match (std::env::var("APPLIANCE_USER"), std::env::var("APPLIANCE_PASSWORD")) {
        (Ok(user), Ok(password)) => Ok(client.with_basic(&user, &password)),
        _ => bail!("not logged in to {url}: run `appliance ctl --url {url} login --user NAME` (or set APPLIANCE_USER and APPLIANCE_PASSWORD)"),
    }
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Sends one request over HTTPS: the reply, or the appliance's error as `Message (MessageId)`.
pub fn call(client: &Client, request: &Request) -> anyhow::Result<Result<Reply, RemoteError>> {
    Ok(client
        .request(request)?
        .map_err(|answer| RemoteError::of(&answer)))
}

/// An error answer of the API.
#[derive(Debug, Clone)]
pub struct RemoteError {
    pub status: u16,
    pub message: String,
    pub message_id: String,
    /// The whole error body (for `--json`).
    pub body: Value,
}

impl RemoteError {
    pub fn of(answer: &Answer) -> RemoteError {
        let body = answer.json();
        let info = &body["error"]["@Message.ExtendedInfo"][0];
        let message = info["Message"]
            .as_str()
            .or(body["error"]["message"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {}", answer.status));
        let message_id = info["MessageId"]
            .as_str()
            .or(body["error"]["code"].as_str())
            .unwrap_or("")
            .to_string();
        RemoteError {
            status: answer.status,
            message,
            message_id,
            body,
        }
    }
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)?;
        match self.message_id.is_empty() {
            true => write!(f, " (HTTP {})", self.status),
            false => write!(f, " ({}, HTTP {})", self.message_id, self.status),
        }
    }
}

/// `ctl login`: opens a session and keeps it. The password comes from `password_file`, else
/// `APPLIANCE_PASSWORD`, else the terminal (not echoed).
pub fn login(
    url: &str,
    trust: &Trust,
    account: &str,
    password_file: Option<&Path>,
    code: Option<&str>,
) -> anyhow::Result<Result<PathBuf, RemoteError>> {
    let password = match (password_file, std::env::var("APPLIANCE_PASSWORD")) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read {}", path.display()))?;
            text.lines().next().unwrap_or("").to_string()
        }
        (None, Ok(password)) => password,
        (None, Err(_)) => read_password(&format!("password for {account} at {url}: "))?,
    };
    let mut client = Client::new(url, trust, REQUEST_TIMEOUT)?;
    let answer = client.login(account, &password, code).map_err(|e| {
        let text = e.to_string();
        match text.contains("invalid peer certificate") {
            true => anyhow::anyhow!("{text}\nthe appliance's certificate is not trusted: give --ca-cert FILE (its certificate: DATA_DIR/tls/cert.pem, or the one you installed) or, for a first look only, --insecure"),
            false => anyhow::Error::new(e),
        }
    })?;
    if answer.status != 201 {
        return Ok(Err(RemoteError::of(&answer)));
    }
    let (Some(token), Some(session)) = (client.token(), answer.header("location")) else {
        bail!("the appliance opened a session without X-Auth-Token or Location");
    };
    let saved = SavedSession {
        url: url.trim_end_matches('/').to_string(),
        ca_cert_pem: match trust {
            Trust::Pinned(pem) => Some(pem.clone()),
            _ => None,
        },
        insecure: *trust == Trust::Insecure,
        account: account.to_string(),
        token: token.to_string(),
        session: session.to_string(),
    };
    save_session(&saved).map(Ok)
}

/// `ctl logout`: deletes the saved session on the appliance and here.
pub fn logout() -> anyhow::Result<Result<(), RemoteError>> {
    let Some(saved) = load_session()? else {
        bail!(
            "not logged in ({} does not exist)",
            session_file()?.display()
        );
    };
    let client = Client::new(&saved.url, &saved.trust(), REQUEST_TIMEOUT)?.with_token(&saved.token);
    let path = saved
        .session
        .strip_prefix(client.base())
        .unwrap_or(&saved.session)
        .to_string();
    let answer = client.delete(&path)?;
    std::fs::remove_file(session_file()?)?;
    match answer.status {
        200 | 204 | 401 | 404 => Ok(Ok(())),
        _ => Ok(Err(RemoteError::of(&answer))),
    }
}

/// `ctl events`: follows the SSE stream, printing each event (one JSON object per line with
/// `json`, else `SEQUENCE TIME SEVERITY MESSAGE`), until the stream ends or the user stops it.
pub fn follow_events(
    client: &Client,
    after: Option<u64>,
    json: bool,
) -> anyhow::Result<Result<(), RemoteError>> {
    let last = after.map(|a| a.to_string());
    let headers: Vec<(&str, &str)> = last.iter().map(|a| ("Last-Event-ID", a.as_str())).collect();
    let (status, reader) = client.stream(SSE_PATH, &headers)?;
    let mut reader = match (status, reader) {
        (200, Ok(reader)) => reader,
        (_, Err(answer)) => return Ok(Err(RemoteError::of(&answer))),
        (status, Ok(_)) => bail!("the event stream answered {status}"),
    };
    let stdout = std::io::stdout();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(Ok(()));
        }
        let Some(data) = line.trim_end().strip_prefix("data:") else {
            continue;
        };
        let event: Value = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
        let mut out = stdout.lock();
        if json {
            writeln!(out, "{}", data.trim())?;
        } else {
            for record in event["Events"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "{:>8} {} {:<8} {}",
                    record["EventId"].as_str().unwrap_or(""),
                    record["EventTimestamp"].as_str().unwrap_or(""),
                    record["Severity"].as_str().unwrap_or(""),
                    record["Message"].as_str().unwrap_or(""),
                )?;
            }
        }
        out.flush()?;
    }
}

/// Reads a line from the terminal with echo off.
fn read_password(prompt: &str) -> anyhow::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context(
            "no terminal to ask the password on: give --password-file or APPLIANCE_PASSWORD",
        )?;
    let saved = tcgetattr(&tty).context("read the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&tty, SetArg::TCSANOW, &quiet).context("turn the terminal's echo off")?;
    let mut writer = &tty;
    let _ = writer.write_all(prompt.as_bytes());
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    let _ = tcsetattr(&tty, SetArg::TCSANOW, &saved);
    let _ = writer.write_all(b"\n");
    read.context("read the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
