//! The command line: `serve`, `ctl` (a door: its arguments parse into one `api::Request`, sent
//! over HTTPS or the control socket, its output is `api::render` or the reply's JSON) and
//! `journal verify|dump|stats|salvage|synth`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use appliance::api::control::{Client, SOCKET_NAME};
use appliance::api::{render, At, HistoryOf, Meta, Query, Request};
use appliance::decide::command::{NewSystem, Selection, Verb};
use appliance::decide::placement::Want;
use appliance::model::directory::{BindPassword, DirectorySettings, DirectoryUserChange};
use appliance::model::{
    DrainScope, ManagementNetwork, MountSource, MountSpec, PowerAction, Role, Secret,
};
#[cfg(feature = "sim")]
use appliance::serve::{self, ApiDoor, FabricChoice, ServeOptions};

use crate::remote;
#[cfg(feature = "sim")]
use clap::ValueEnum;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "appliance", about = "Composable-infrastructure appliance")]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Run the appliance service on a simulated fabric until Ctrl-C / SIGTERM (the image's
    /// PID 1 serves the real one).
    #[cfg(feature = "sim")]
    Serve(ServeArgs),
    /// Talk to a running appliance.
    Ctl(CtlArgs),
    /// The local console of the appliance serving DATA_DIR, through its console socket: the
    /// full screen on a terminal, line mode (one command per line; `help` lists them) with
    /// --line or outside one, or the front panel with --panel.
    Console(ConsoleArgs),
    /// Inspect the journal in DIR (or DIR/journal when it exists).
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
}

#[cfg(feature = "sim")]
#[derive(Clone, Copy, ValueEnum)]
enum FabricKind {
    /// The in-process simulated fabric of a topology file.
    Sim,
}

#[cfg(feature = "sim")]
#[derive(clap::Args)]
struct ServeArgs {
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long, value_enum, default_value = "sim")]
    fabric: FabricKind,
    /// Topology file for the simulated fabric (default: the built-in sample).
    #[arg(long)]
    topology: Option<PathBuf>,
    /// Seed of the simulated fabric's random faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the HTTPS API (Redfish) listens; the control socket DATA_DIR/control.sock (mode
    /// 0600) is always served.
    #[arg(long, default_value = serve::DEFAULT_API_LISTEN)]
    api: std::net::SocketAddr,
    /// At the first start, the password of the account `admin` (first line of FILE). Without
    /// it a random one is printed once and kept in DATA_DIR/admin-password (root only).
    #[arg(long)]
    admin_password_file: Option<PathBuf>,
    /// The API's certificate (PEM); without it a self-signed one is made in DATA_DIR/tls.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve /metrics without credentials.
    #[arg(long)]
    metrics_public: bool,
    /// A host event subscriptions may push to (repeat; default: loopback only).
    #[arg(long = "event-host")]
    event_hosts: Vec<String>,
    /// Ignore the journal's snapshots at start and replay the whole journal.
    #[arg(long)]
    no_snapshots: bool,
}

#[derive(clap::Args)]
struct ConsoleArgs {
    /// The data directory of the running service (its console.sock and console-pin).
    #[arg(long)]
    data_dir: PathBuf,
    /// Line mode: commands on stdin, answers on stdout (also when stdout is not a terminal or
    /// TERM=dumb); otherwise the full screen.
    #[arg(long)]
    line: bool,
    /// Instead of the console, drive the 2x20 front panel on this character device or file.
    #[arg(long, conflicts_with = "line")]
    panel: Option<PathBuf>,
    /// At the first start, the console's PIN from the first line of FILE.
    #[arg(long)]
    pin_file: Option<PathBuf>,
    /// Seconds without input after which the console locks.
    #[arg(long, default_value_t = 300)]
    idle_lock_s: u64,
    /// Seconds the console stays locked after five wrong PINs.
    #[arg(long, default_value_t = 300)]
    lockout_s: u64,
}

#[derive(clap::Args)]
struct CtlArgs {
    /// The appliance's API, e.g. https://10.0.0.5 (default: the one `ctl login` saved).
    #[arg(long, conflicts_with_all = ["socket", "data_dir"])]
    url: Option<String>,
    /// Trust exactly this certificate (PEM): the appliance's own, pinned.
    #[arg(long, conflicts_with = "insecure")]
    ca_cert: Option<PathBuf>,
    /// Accept any certificate (a first look at a fresh appliance only).
    #[arg(long)]
    insecure: bool,
    /// The control socket to talk to (root, on the appliance itself).
    #[arg(long, conflicts_with = "data_dir")]
    socket: Option<PathBuf>,
    /// Talk to the appliance serving this data directory (its control.sock), on the box.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print the reply as JSON.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Ctl,
}

#[derive(Subcommand)]
enum Ctl {
    /// Open a session (kept in ~/.config/appliance/session.json, mode 0600).
    Login {
        #[arg(long)]
        user: String,
        /// First line of FILE (default: APPLIANCE_PASSWORD, else asked on the terminal).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// The one-time code of an account with TOTP.
        #[arg(long)]
        code: Option<String>,
    },
    /// End the saved session.
    Logout,
    /// Follow the appliance's events as they are journaled (Ctrl-C stops).
    Events {
        /// Start after this journal sequence (a reconnecting reader misses nothing).
        #[arg(long)]
        after: Option<u64>,
    },
    /// Journal head, pool usage, latencies.
    Status,
    /// The pool's devices: kind, health, holder, port.
    Devices,
    /// A device by id or serial.
    Device { device: String },
    /// The fabric's ports and what is attached to them.
    Ports,
    /// Composed systems and their devices.
    Systems,
    /// One system: its devices, mounts and operations.
    System { name: String },
    /// Tenants and their systems.
    Tenants,
    /// An operation (compose, decompose, mount...) by number, with its outcome.
    Operation { op: u64 },
    /// Create a tenant (a studio, a show) that systems and accounts belong to.
    CreateTenant {
        name: String,
        #[command(flatten)]
        order: Meta,
    },
    /// Create an empty system of a tenant (compose --tenant --role also creates one).
    CreateSystem {
        name: String,
        #[arg(long)]
        tenant: String,
        /// workstation, render_node or nas_gateway.
        #[arg(long)]
        role: Role,
        #[command(flatten)]
        order: Meta,
    },
    /// Delete an empty system.
    DeleteSystem {
        name: String,
        #[command(flatten)]
        order: Meta,
    },
    /// Compose devices into SYSTEM: --device ID (repeat) or --want KIND:COUNT[:MIN][:rdma]
    /// (repeat; MIN is GPU memory or NVMe capacity, in GiB unless it has a unit: 24, 24GiB, 2TB).
    Compose {
        system: String,
        #[arg(long = "device")]
        devices: Vec<String>,
        #[arg(long = "want", value_parser = Want::parse)]
        wants: Vec<Want>,
        /// Create the system for this tenant if it does not exist (with --role).
        #[arg(long)]
        tenant: Option<String>,
        /// workstation, render_node or nas_gateway (with --tenant).
        #[arg(long)]
        role: Option<Role>,
        #[command(flatten)]
        order: Meta,
    },
    /// Decompose SYSTEM's devices (all, or --device ID ...).
    Decompose {
        system: String,
        #[arg(long = "device")]
        devices: Vec<String>,
        #[command(flatten)]
        order: Meta,
    },
    /// Mount namespace NSID of a composed NVMe (--device) or an export (--export SERVER:PATH) at
    /// TARGET; or, for a nas_gateway, a RAID1 mirror over composed NVMe drives (--mirror
    /// nvme-0,nvme-1), made and mounted on the appliance itself (a blank mirror gets a
    /// filesystem: use --filesystem ext4), or a filesystem by UUID behind a composed HBA (--hba
    /// hba-0 --uuid UUID; a standby HBA reaching the same disks takes over on a failure).
    Mount {
        system: String,
        target: String,
        #[arg(long)]
        device: Option<String>,
        #[arg(long, value_delimiter = ',')]
        mirror: Vec<String>,
        /// A nas_gateway's filesystem on the disks behind this composed HBA (with --uuid).
        #[arg(long, requires = "uuid")]
        hba: Option<String>,
        /// The filesystem's UUID (with --hba).
        #[arg(long, requires = "hba")]
        uuid: Option<String>,
        #[arg(long, default_value_t = 1)]
        namespace: u32,
        #[arg(long)]
        export: Option<String>,
        #[arg(long, default_value = "xfs")]
        filesystem: String,
        #[arg(long, default_value = "defaults")]
        options: String,
        #[command(flatten)]
        order: Meta,
    },
    /// Unmount TARGET of SYSTEM.
    Unmount {
        system: String,
        target: String,
        #[command(flatten)]
        order: Meta,
    },
    /// Replace DEVICE of SYSTEM by a healthy free device of the same kind.
    Failover {
        system: String,
        device: String,
        #[command(flatten)]
        order: Meta,
    },
    /// Take a device out of service (--out) or back in (--in).
    Service {
        device: String,
        #[arg(long, conflicts_with = "back_in")]
        out: bool,
        #[arg(long = "in")]
        back_in: bool,
        /// With --in: the device was repaired or replaced; its health is Ok again and its
        /// alarms are cleared (a failed device cannot be composed until then).
        #[arg(long, requires = "back_in")]
        repaired: bool,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        order: Meta,
    },
    /// Move every system off a device (--device) or off every device of a switch (--switch)
    /// before maintenance: they leave service and each held one is failed over to a spare
    /// (`devices` shows them draining until their systems are off them; `service --in` returns
    /// one).
    #[command(group(clap::ArgGroup::new("scope").required(true).args(["device", "switch"])))]
    Drain {
        /// The device to drain.
        #[arg(long)]
        device: Option<String>,
        /// The switch whose every device to drain.
        #[arg(long)]
        switch: Option<String>,
        /// Why (journaled with the drain).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        order: Meta,
    },
    /// Active alarms: what failed, the evidence, and the failover it started.
    Alarms,
    /// Read the whole journal back through the running service: every record's checksum,
    /// chain link and decoding, and the snapshots (`journal verify` does it on a stopped one).
    VerifyJournal,
    /// Set the management port's static IPv4 address (ADDRESS/PREFIX or ADDRESS/NETMASK) and
    /// default gateway (`none` for none); journaled, then applied (and again at every start).
    SetNetwork {
        address: String,
        gateway: String,
        #[command(flatten)]
        order: Meta,
    },
    /// The studio's directory that logins fall back to (its bind password left out).
    Directory,
    /// Point logins at the studio's directory, from a TOML file (see the README: kind, uri,
    /// ca_pem, bind_dn, bind_password, base, user_attribute, timeout_ms, [[mappings]]); the bind
    /// password is sealed with the appliance's key before it is journaled. --off: local
    /// accounts only.
    #[command(group(clap::ArgGroup::new("directory").required(true).args(["file", "off"])))]
    SetDirectory {
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long)]
        off: bool,
        #[command(flatten)]
        order: Meta,
    },
    /// Unlock a directory user the lockout locked, or clear its TOTP key (it lost the device).
    #[command(group(clap::ArgGroup::new("change").required(true).args(["unlock", "clear_totp"])))]
    DirectoryUser {
        /// The user's login name in the directory.
        name: String,
        /// End its lockout now (it also ends by itself after the lockout's duration).
        #[arg(long)]
        unlock: bool,
        /// Remove its TOTP key: it logs in with its password alone until it sets a new one.
        #[arg(long)]
        clear_totp: bool,
        #[command(flatten)]
        order: Meta,
    },
    /// Reboot the appliance: the service stops cleanly (journal durable), then the machine
    /// restarts; composed systems come back from the journal.
    Reboot {
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        order: Meta,
    },
    /// Power the appliance off, cleanly (under `appliance serve`: stop the service).
    PowerOff {
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        order: Meta,
    },
    /// Clear an active alarm (the device stays out of service: `service --in` returns it).
    ClearAlarm {
        alarm: u64,
        #[command(flatten)]
        order: Meta,
    },
    /// Events of a device (id or serial) or a system, oldest first.
    History {
        #[arg(long, conflicts_with = "system")]
        device: Option<String>,
        #[arg(long)]
        system: Option<String>,
        /// The newest N entries (default 1000).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Systems as they were right after SEQUENCE (or at --time, RFC 3339, or --time-ms).
    StateAt {
        #[arg(long, conflicts_with_all = ["time", "time_ms"])]
        sequence: Option<u64>,
        /// e.g. 2026-12-01T18:39:13Z
        #[arg(long, value_parser = parse_time, conflicts_with = "time_ms")]
        time: Option<u64>,
        #[arg(long)]
        time_ms: Option<u64>,
    },
}

#[derive(Subcommand)]
enum JournalCommand {
    /// Check every record and the chain; exit 0 with a summary, non-zero with what is wrong.
    Verify {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Print every event as a JSON line.
    Dump {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Event count, size on disk, last sequence, chain head.
    Stats {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Cut the journal after its last good record, keeping the rest aside.
    Salvage {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Write a synthetic journal into DIR/journal, which must be empty or absent: a pool of 16
    /// GPUs, a tenant, 16 systems, then compose/decompose cycles, at least EVENTS events in all
    /// (whole cycles). For benchmarks and for booting a large journal in the QEMU bench.
    #[cfg(feature = "sim")]
    Synth {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        events: u64,
    },
}

fn parse_time(text: &str) -> Result<u64, String> {
    appliance::api::time::parse_rfc3339(text)
        .ok_or_else(|| format!("{text:?} is not a time like 2026-12-01T18:39:13Z"))
}

/// Runs the command line; returns the exit code.
pub fn run() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        #[cfg(feature = "sim")]
        Top::Serve(args) => serve_cmd(args),
        Top::Ctl(args) => ctl(args),
        Top::Console(args) => console_cmd(args),
        Top::Journal { command } => journal_cmd(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn console_cmd(args: ConsoleArgs) -> anyhow::Result<i32> {
    use appliance::console::{self, line::LineMode, panel::SerialPanel, pin::PinStore, Service};
    use std::time::Duration;
    let mut service = Service::of(&args.data_dir);
    if let Some(path) = args.panel {
        let out = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .with_context(|| format!("open the panel {}", path.display()))?;
        let mut display = SerialPanel::new(out);
        console::run_panel(&mut service, &mut display, console::PANEL_PAGE, || true)?;
        return Ok(0);
    }
    let pins = PinStore::new(&args.data_dir).with_lockout(Duration::from_secs(args.lockout_s));
    if let Some(file) = &args.pin_file {
        pins.provision(file)?;
    }
    let idle = Duration::from_secs(args.idle_lock_s.max(1));
    let dumb = std::env::var("TERM").is_ok_and(|term| term == "dumb");
    if !args.line && !dumb && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        console::screen::run(service, pins, idle)?;
        return Ok(0);
    }
    let stdin = std::io::stdin();
    let session = LineMode {
        input: stdin.lock(),
        output: std::io::stdout(),
        service,
        pins,
        idle,
    };
    session.run()?;
    Ok(0)
}

#[cfg(feature = "sim")]
fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(feature = "sim")]
fn serve_cmd(args: ServeArgs) -> anyhow::Result<i32> {
    init_tracing();
    let FabricKind::Sim = args.fabric;
    let mut config = appliance::api::redfish::RedfishConfig::new(args.api, args.data_dir.clone());
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls = appliance::api::redfish::tls::TlsSource::Files { cert, key };
    }
    config.metrics_public = args.metrics_public;
    config.event_hosts = args.event_hosts;
    let admin_password = match &args.admin_password_file {
        Some(path) => Some(appliance::model::Secret(
            std::fs::read_to_string(path)
                .with_context(|| format!("read the admin password file {}", path.display()))?
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        )),
        None => None,
    };
    let options = ServeOptions {
        data_dir: args.data_dir,
        fabric: FabricChoice::Sim {
            topology: args.topology,
            seed: args.seed,
        },
        api: Some(ApiDoor {
            config,
            admin_password,
        }),
        identity: None,
        snapshots: !args.no_snapshots,
        machine: Some(std::sync::Arc::new(
            appliance::runtime::machine::HostMachine::stopped_by_sigterm(),
        )),
    };
    let running = serve::start(options)?;
    let api = running
        .api_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!(
        "appliance serving: {} socket={} api=https://{api}",
        running.report(),
        running.socket_path().display(),
    );
    if let Some(password) = running.generated_admin_password() {
        println!(
            "first start: the account admin has the password {} (also in {}, root only); it is not shown again",
            password.0,
            running.socket_path().with_file_name(appliance::api::redfish::ADMIN_PASSWORD_FILE).display()
        );
    }
    wait_for_signal()?;
    eprintln!("signal received: shutting down");
    running.shutdown()?;
    Ok(0)
}

#[cfg(feature = "sim")]
fn wait_for_signal() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("build the signal runtime")?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listen for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("listen for SIGINT"),
            _ = term.recv() => Ok(()),
        }
    })
}

fn ctl(args: CtlArgs) -> anyhow::Result<i32> {
    let trust = match (&args.ca_cert, args.insecure) {
        (None, false) => None,
        (ca_cert, insecure) => Some(remote::trust_of(ca_cert.as_deref(), insecure)?),
    };
    let socket = args
        .socket
        .clone()
        .or_else(|| args.data_dir.as_ref().map(|dir| dir.join(SOCKET_NAME)));
    match args.command {
        Ctl::Login {
            user,
            password_file,
            code,
        } => {
            let Some(url) = args.url.as_deref() else {
                bail!("login needs --url https://HOST:PORT");
            };
            let trust = trust.unwrap_or(appliance::api::client::Trust::PublicRoots);
            return remote_outcome(
                remote::login(
                    url,
                    &trust,
                    &user,
                    password_file.as_deref(),
                    code.as_deref(),
                )?
                .map(|file| {
                    println!(
                        "logged in to {url} as {user}; session kept in {}",
                        file.display()
                    )
                }),
                args.json,
            );
        }
        Ctl::Logout => {
            return remote_outcome(
                remote::logout()?.map(|()| println!("logged out")),
                args.json,
            )
        }
        Ctl::Events { after } => {
            let client = remote::connect(args.url.as_deref(), trust)?;
            return remote_outcome(remote::follow_events(&client, after, args.json)?, args.json);
        }
        _ => {}
    }
    let request = ctl_request(args.command)?;
    if let Some(socket) = socket {
        let answer = Client::connect_unix(&socket)?.call(&request)?;
        match (&answer, args.json) {
            (Ok(reply), true) => println!("{}", serde_json::to_string(reply)?),
            (Err(error), true) => println!("{}", serde_json::json!({ "error": error })),
            (Ok(reply), false) => print!("{}", render::reply(reply)),
            (Err(error), false) => eprint!("{}", render::error(error)),
        }
        return Ok(match &answer {
            Ok(reply) => exit_code(reply),
            Err(_) => 2,
        });
    }
    let client = remote::connect(args.url.as_deref(), trust)?;
    let answer = remote::call(&client, &request)?;
    let code = answer.as_ref().map_or(0, exit_code);
    let outcome = remote_outcome(
        answer.map(|reply| match args.json {
            true => println!("{}", serde_json::to_string(&reply).unwrap_or_default()),
            false => print!("{}", render::reply(&reply)),
        }),
        args.json,
    )?;
    Ok(outcome.max(code))
}

/// 1 for an answer that reports damage (a journal check that found problems), else 0.
fn exit_code(reply: &appliance::api::Reply) -> i32 {
    match reply {
        appliance::api::Reply::JournalCheck(check) if !check.problems.is_empty() => 1,
        _ => 0,
    }
}

/// Exit 0, or print the API's error (its message and MessageId; the body with --json) and
/// exit 2.
fn remote_outcome(outcome: Result<(), remote::RemoteError>, json: bool) -> anyhow::Result<i32> {
    match outcome {
        Ok(()) => Ok(0),
        Err(error) => {
            match json {
                true => println!("{}", error.body),
                false => eprintln!("error: {error}"),
            }
            Ok(2)
        }
    }
}

/// The door's parse: the command line into one request.
fn ctl_request(command: Ctl) -> anyhow::Result<Request> {
    let query = |q| Ok(Request::query(q));
    let order = |verb, meta: Meta| Ok(Request::order(verb, meta));
    match command {
        Ctl::Login { .. } | Ctl::Logout | Ctl::Events { .. } => {
            bail!("login, logout and events are not requests")
        }
        Ctl::Status => query(Query::Status),
        Ctl::Devices => query(Query::Devices),
        Ctl::Device { device } => query(Query::Device { device }),
        Ctl::Ports => query(Query::Ports),
        Ctl::Systems => query(Query::Systems),
        Ctl::System { name } => query(Query::System { name: name.into() }),
        Ctl::Tenants => query(Query::Tenants),
        Ctl::Operation { op } => query(Query::Operation { op: op.into() }),
        Ctl::Alarms => query(Query::Alarms),
        Ctl::VerifyJournal => query(Query::VerifyJournal),
        Ctl::Directory => query(Query::Directory),
        Ctl::SetDirectory {
            file,
            off: _,
            order: args,
        } => {
            let settings = match file {
                None => None,
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("read {}", path.display()))?;
                    // Checked by the service (`decide`), whose refusal names what is wrong.
                    let settings: DirectorySettings<String> =
                        toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
                    let password = BindPassword::Plain(Secret(settings.bind_password.clone()));
                    Some(settings.with_password(password))
                }
            };
            order(
                Verb::SetDirectory {
                    settings: settings.map(Box::new),
                },
                args,
            )
        }
        Ctl::DirectoryUser {
            name,
            unlock,
            clear_totp: _,
            order: args,
        } => {
            let change = match unlock {
                true => DirectoryUserChange::Locked { until_ms: None },
                false => DirectoryUserChange::Totp(None),
            };
            order(
                Verb::ChangeDirectoryUser {
                    name: name.as_str().into(),
                    change,
                },
                args,
            )
        }
        Ctl::SetNetwork {
            address,
            gateway,
            order: args,
        } => {
            let network = ManagementNetwork::parse(&address, &gateway)
                .map_err(|e| anyhow::anyhow!("set-network: {e}"))?;
            order(Verb::SetManagementNetwork { network }, args)
        }
        Ctl::Reboot {
            reason,
            order: args,
        } => order(
            Verb::Power {
                action: PowerAction::Reboot,
                reason,
            },
            args,
        ),
        Ctl::PowerOff {
            reason,
            order: args,
        } => order(
            Verb::Power {
                action: PowerAction::PowerOff,
                reason,
            },
            args,
        ),
        Ctl::ClearAlarm { alarm, order: args } => order(
            Verb::ClearAlarm {
                alarm: alarm.into(),
            },
            args,
        ),
        Ctl::CreateTenant { name, order: args } => {
            order(Verb::CreateTenant { name: name.into() }, args)
        }
        Ctl::CreateSystem {
            name,
            tenant,
            role,
            order: args,
        } => order(
            Verb::CreateSystem {
                name: name.into(),
                tenant: tenant.into(),
                role,
            },
            args,
        ),
        Ctl::DeleteSystem { name, order: args } => {
            order(Verb::DeleteSystem { name: name.into() }, args)
        }
        Ctl::Compose {
            system,
            devices,
            wants,
            tenant,
            role,
            order: args,
        } => {
            let selection = match (devices.is_empty(), wants.is_empty()) {
                (false, true) => Selection::Specific(devices.into_iter().map(Into::into).collect()),
                (true, false) => Selection::Constrained(wants),
                _ => bail!("give either --device (repeat) or --want (repeat)"),
            };
            let create = match (&tenant, role) {
                (Some(tenant), Some(role)) => Some(NewSystem {
                    tenant: tenant.into(),
                    role,
                }),
                (None, Some(_)) => bail!("--role creates the system: give --tenant too"),
                _ => None,
            };
            let verb = Verb::Compose {
                system: system.into(),
                selection,
                create,
                tenant: tenant.map(Into::into),
                reservation: None,
            };
            order(verb, args)
        }
        Ctl::Decompose {
            system,
            devices,
            order: args,
        } => {
            let devices =
                (!devices.is_empty()).then(|| devices.into_iter().map(Into::into).collect());
            order(
                Verb::Decompose {
                    system: system.into(),
                    devices,
                },
                args,
            )
        }
        Ctl::Mount {
            system,
            target,
            device,
            mirror,
            hba,
            uuid,
            namespace,
            export,
            filesystem,
            options,
            order: args,
        } => {
            let given = [
                device.is_some(),
                export.is_some(),
                !mirror.is_empty(),
                hba.is_some(),
            ];
            if given.iter().filter(|g| **g).count() != 1 {
                bail!("give one of --device, --export, --mirror or --hba");
            }
            let source = match (device, export) {
                (None, None) if hba.is_some() => MountSource::Disk {
                    hba: hba.unwrap_or_default().into(),
                    uuid: uuid.unwrap_or_default(),
                },
                (None, None) if !mirror.is_empty() => MountSource::Mirror {
                    devices: mirror.into_iter().map(Into::into).collect(),
                },
                (Some(device), None) => MountSource::Namespace {
                    device: device.into(),
                    namespace,
                },
                (None, Some(export)) => {
                    let (server, path) = export
                        .split_once(':')
                        .context("--export must be SERVER:PATH")?;
                    MountSource::Export {
                        server: server.into(),
                        path: path.into(),
                    }
                }
                _ => bail!("give one of --device, --export, --mirror or --hba"),
            };
            let mount = MountSpec {
                source,
                target,
                filesystem,
                options,
            };
            let system = system.into();
            order(Verb::Mount { system, mount }, args)
        }
        Ctl::Unmount {
            system,
            target,
            order: args,
        } => {
            let system = system.into();
            order(Verb::Unmount { system, target }, args)
        }
        Ctl::Failover {
            system,
            device,
            order: args,
        } => {
            let (system, device) = (system.into(), device.into());
            order(Verb::Failover { system, device }, args)
        }
        Ctl::Service {
            device,
            out,
            back_in,
            repaired,
            reason,
            order: args,
        } => {
            if out == back_in {
                bail!("give exactly one of --out or --in");
            }
            let verb = Verb::SetService {
                device: device.into(),
                in_service: back_in,
                reason,
                repaired,
            };
            order(verb, args)
        }
        Ctl::Drain {
            device,
            switch,
            reason,
            order: args,
        } => {
            let scope = match (device, switch) {
                (Some(device), None) => DrainScope::Device(device.into()),
                (None, Some(switch)) => DrainScope::Switch(switch.into()),
                _ => bail!("give --device or --switch"),
            };
            order(Verb::Drain { scope, reason }, args)
        }
        Ctl::History {
            device,
            system,
            limit,
        } => {
            let of = match (device, system) {
                (Some(device), None) => HistoryOf::Device(device),
                (None, Some(system)) => HistoryOf::System(system.into()),
                _ => bail!("give --device or --system"),
            };
            query(Query::History { of, limit })
        }
        Ctl::StateAt {
            sequence,
            time,
            time_ms,
        } => {
            let at = match (sequence, time.or(time_ms)) {
                (Some(sequence), None) => At::Sequence(sequence),
                (None, Some(time_ms)) => At::TimeMs(time_ms),
                _ => bail!("give --sequence, --time or --time-ms"),
            };
            query(Query::StateAt { at })
        }
    }
}

/// The journal directory: DIR/journal when it exists (as `serve` lays it out), else DIR.
fn journal_dir(data_dir: &Path) -> PathBuf {
    let nested = data_dir.join("journal");
    if nested.is_dir() {
        nested
    } else {
        data_dir.to_path_buf()
    }
}

fn journal_cmd(command: JournalCommand) -> anyhow::Result<i32> {
    match command {
        JournalCommand::Verify { data_dir } => {
            match journal::inspect::verify(&journal_dir(&data_dir)) {
                Ok(summary) => {
                    println!("{summary}");
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("journal verify failed: {}", drivers::error_chain(&e));
                    Ok(1)
                }
            }
        }
        JournalCommand::Stats { data_dir } => {
            println!("{}", journal::inspect::stats(&journal_dir(&data_dir))?);
            Ok(0)
        }
        JournalCommand::Salvage { data_dir } => {
            println!("{}", journal::inspect::salvage(&journal_dir(&data_dir))?);
            Ok(0)
        }
        JournalCommand::Dump { data_dir } => dump(&journal_dir(&data_dir)),
        #[cfg(feature = "sim")]
        JournalCommand::Synth { data_dir, events } => {
            use appliance::testing::synth;
            let dir = data_dir.join("journal");
            let last = synth::write_journal(&dir, synth::whole_cycles(events))?;
            println!("wrote {last} events into {}", dir.display());
            Ok(0)
        }
    }
}

fn dump(dir: &Path) -> anyhow::Result<i32> {
    use appliance::model::Event;
    use journal::Event as _;
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failures = 0u64;
    for record in journal::inspect::raw_records(dir) {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                out.flush()?;
                eprintln!("journal dump stopped: {}", drivers::error_chain(&e));
                return Ok(1);
            }
        };
        let mut line = serde_json::json!({
            "sequence": record.sequence,
            "timestamp_ms": record.timestamp_ms,
            "time": appliance::api::time::rfc3339(record.timestamp_ms),
            "kind": record.kind,
            "kind_name": <Event as journal::Event>::kind_name(record.kind),
            "version": record.version,
            "crc": format!("{:#010x}", record.crc),
        });
        match Event::decode(record.kind, record.version, &record.payload) {
            Ok(event) => line["event"] = serde_json::to_value(&event)?,
            Err(e) => {
                failures += 1;
                line["error"] = serde_json::Value::String(e.to_string());
            }
        }
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    if failures > 0 {
        eprintln!("{failures} records did not decode as appliance events");
        return Ok(1);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use appliance::decide::placement;

    const GIB: u64 = 1 << 30;

    #[test]
    fn a_bare_size_is_in_gib_as_the_readme_says() {
        // README: `--want gpu:2:24 --want nvme:1:2000  # GiB minimums`
        assert_eq!(
            Want::parse("gpu:2:24").unwrap().capacity_bytes_min,
            24 * GIB
        );
        assert_eq!(
            Want::parse("nvme:1:2000").unwrap().capacity_bytes_min,
            2000 * GIB
        );
        assert_eq!(placement::parse_size("2TB"), Some(2_000_000_000_000));
        assert_eq!(placement::parse_size("24GiB"), Some(24 * GIB));
        assert_eq!(placement::parse_size("512b"), Some(512));
        assert_eq!(placement::parse_size("24 GiB"), None);
        let want = Want::parse("nic:1:rdma").unwrap();
        assert!(want.rdma && want.capacity_bytes_min == 0);
        assert!(Want::parse("gpu:x").unwrap_err().contains("not a number"));
        assert!(Want::parse("gpu:1:lots").unwrap_err().contains("24 (GiB)"));
    }

    #[test]
    fn every_order_carries_the_same_options() {
        let cli = Cli::try_parse_from([
            "appliance",
            "ctl",
            "failover",
            "ws1",
            "gpu-1",
            "--request-id",
            "r7",
            "--expected-version",
            "12",
            "--no-wait",
        ])
        .expect("parses");
        let Top::Ctl(args) = cli.command else {
            panic!("not ctl")
        };
        let request = ctl_request(args.command).expect("a request");
        assert_eq!(
            request.meta,
            Meta {
                request_id: Some("r7".into()),
                expected_version: Some(12),
                wait: false,
            }
        );
        for verb in [
            vec!["mount", "ws1", "/mnt/a", "--device", "nvme-0"],
            vec!["unmount", "ws1", "/mnt/a"],
            vec!["service", "gpu-1", "--out"],
            vec!["create-tenant", "studio"],
            vec!["delete-system", "ws1"],
        ] {
            let mut argv = vec!["appliance", "ctl"];
            argv.extend(verb.iter().copied());
            argv.extend(["--request-id", "r1", "--expected-version", "3"]);
            let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            let Top::Ctl(args) = cli.command else {
                panic!("not ctl")
            };
            let meta = ctl_request(args.command).expect("a request").meta;
            assert_eq!(meta.request_id, Some("r1".into()), "{argv:?}");
            assert_eq!(meta.expected_version, Some(3), "{argv:?}");
        }
    }

    #[test]
    fn roles_are_typed_as_they_are_printed() {
        for role in Role::ALL {
            let cli = Cli::try_parse_from([
                "appliance",
                "ctl",
                "create-system",
                "s",
                "--tenant",
                "t",
                "--role",
                role.name(),
            ]);
            assert!(cli.is_ok(), "--role {role} is refused");
            assert_eq!(role.to_string(), role.name());
        }
    }
}
