//! The serve entry point used by `appliance serve` and by PID-1 mode: opens the journal
//! (snapshot + replay), starts the core, syncs the fabric's inventory, starts the reconciler and
//! the doors (the control socket in the data directory, root's only, and the HTTPS door with its
//! accounts), and returns once ready.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tracing::{info, warn};

use crate::api::control::{Server, CONSOLE_SOCKET_NAME, SOCKET_NAME};
use crate::api::redfish::{first_admin, RedfishConfig, RedfishServer};
use crate::core::log::{EventLog, JournalLog};
use crate::core::{Core, CoreConfig, CoreHandle, StartReport};
use crate::decide::command::{Command, Verb};
use crate::decide::reflex::Policy;
use crate::model::Secret;
use crate::model::{Door, Identity};
use crate::runtime::adapt::inventory_commands;
use crate::runtime::machine::{apply_journaled, HostMachine, Machine};
use crate::runtime::{Drivers, ReconcileLimits, Reconciler};
#[cfg(feature = "sim")]
use crate::testing::sim::SimFabric;
#[cfg(feature = "sim")]
use crate::testing::volumes::SimVolumes;
#[cfg(feature = "sim")]
use crate::topology::{self, Topology};

/// The sample topology, used by `--fabric sim` when no topology file is given.
pub const SAMPLE_TOPOLOGY: &str = include_str!("../topologies/sample.toml");

/// Where `appliance serve` listens for HTTPS by default (PID 1 listens on every address).
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:8443";

/// Which fabric the appliance drives.
pub enum FabricChoice {
    /// The in-process simulated fabric (deterministic from `seed`).
    #[cfg(feature = "sim")]
    Sim {
        topology: Option<PathBuf>,
        seed: u64,
    },
    /// Real hardware (or the QEMU bench's emulated switch).
    Real {
        fabric: Arc<dyn drivers::Fabric>,
        host: Arc<dyn drivers::Host>,
        volumes: Arc<dyn drivers::volume::Volumes>,
    },
}

impl std::fmt::Debug for FabricChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            #[cfg(feature = "sim")]
            FabricChoice::Sim { topology, seed } => f
                .debug_struct("Sim")
                .field("topology", topology)
                .field("seed", seed)
                .finish(),
            FabricChoice::Real { .. } => f.write_str("Real"),
        }
    }
}

/// What `start` needs.
#[derive(Debug)]
pub struct ServeOptions {
    pub data_dir: PathBuf,
    pub fabric: FabricChoice,
    /// The HTTPS door (Redfish, the CLI's requests, metrics), if served; the control socket
    /// (`DATA_DIR/control.sock`, mode 0600) always is.
    pub api: Option<ApiDoor>,
    /// The appliance's identity, when the fabric's description does not name it (PID 1 reads it
    /// from the kernel command line).
    pub identity: Option<Identity>,
    /// Start from the journal's newest snapshot (the default); false replays the whole journal
    /// (`appliance.snapshots=off` on the kernel command line, `--no-snapshots` for `serve`).
    pub snapshots: bool,
    /// The machine the service runs on, when it is the appliance's own (PID 1 mode): its
    /// management port and its power. None: a host that is not the service's
    /// ([`HostMachine`]: its network is left alone, power off stops the service).
    pub machine: Option<Arc<dyn Machine>>,
}

/// The failover policy's file in the data directory; without it, the defaults (fail over every
/// failed device, a link's grace `reflex::LINK_GRACE_DEFAULT`).
pub const POLICY_FILE: &str = "failover-policy.toml";

/// Reads `DATA_DIR/failover-policy.toml`, if there is one; a bad one stops the start (naming
/// the file, the line and what is wrong) rather than failing over by a policy nobody wrote.
fn failover_policy(data_dir: &Path) -> anyhow::Result<Policy> {
    let path = data_dir.join(POLICY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Policy::default()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let policy = Policy::parse(&text).with_context(|| format!("{}", path.display()))?;
    info!(rules = policy.rules.len(), path = %path.display(), "failover policy");
    Ok(policy)
}

/// The HTTPS door's configuration, and the first administrator's password.
#[derive(Debug)]
pub struct ApiDoor {
    pub config: RedfishConfig,
    /// The password of the first account (`admin`), used only while the appliance has no
    /// account; without one, a random password is made and kept in `DATA_DIR/admin-password`
    /// (root only); [`Running::generated_admin_password`] has it for the caller to show once.
    pub admin_password: Option<Secret>,
}

/// The running appliance service.
#[derive(Debug)]
pub struct Running {
    core: Option<Core>,
    reconciler: Option<Reconciler>,
    servers: Vec<Server>,
    api: Option<RedfishServer>,
    generated_admin_password: Option<Secret>,
    log: Arc<dyn EventLog>,
    report: StartReport,
    socket: PathBuf,
    #[cfg(feature = "sim")]
    sim: Option<Arc<SimFabric>>,
    #[cfg(feature = "sim")]
    sim_volumes: Option<Arc<SimVolumes>>,
}

impl std::fmt::Debug for dyn EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EventLog(head={})", self.last_sequence())
    }
}

/// Opens the journal in `data_dir/journal`, then starts everything (see [`start_with_log`]).
pub fn start(options: ServeOptions) -> anyhow::Result<Running> {
    let dir = options.data_dir.join("journal");
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("create the journal directory {}", dir.display()))?;
    let (log, report) =
        JournalLog::open(&dir).with_context(|| format!("open the journal in {}", dir.display()))?;
    info!(dir = %dir.display(), last_sequence = report.last_sequence, chain_head = report.chain_head, "journal opened");
    for note in &report.notes {
        warn!(%note, "journal");
    }
    let mut running = start_with_log(options, Arc::new(log))?;
    running.report.notes.splice(0..0, report.notes);
    Ok(running)
}

/// Starts the core on `log` (any [`EventLog`]), the fabric, the reconciler and the control server.
pub fn start_with_log(options: ServeOptions, log: Arc<dyn EventLog>) -> anyhow::Result<Running> {
    let started = Instant::now();
    let policy = failover_policy(&options.data_dir)?;
    let config = CoreConfig {
        use_snapshots: options.snapshots,
        ..CoreConfig::default()
    };
    let (core, report) =
        Core::start(log.clone(), config).context("recover state from the journal")?;
    info!(
        events_replayed = report.events_replayed,
        snapshot = ?report.snapshot_sequence,
        replay_ms = report.replay_ms,
        replay_read_ms = report.replay_read_ms,
        replay_apply_ms = report.replay_apply_ms,
        journal_head = report.journal_head,
        "state came from the journal"
    );
    let handle = core.handle();
    let parts = fabric(&options.fabric)?;
    if let Some(identity) = parts.identity.as_ref().or(options.identity.as_ref()) {
        record_identity(&handle, identity)?;
    }
    initial_sync(&handle, &parts.drivers, &parts.rdma);
    let reconciler =
        Reconciler::start(handle.clone(), parts.drivers, policy).context("start the reconciler")?;
    let machine = options
        .machine
        .clone()
        .unwrap_or_else(|| Arc::new(HostMachine::default()));
    if machine.management().is_some() {
        // The kernel starts with the boot's defaults: the journaled settings go on again.
        apply_journaled(&handle, machine.as_ref());
    }
    let keyring = crate::api::auth::Keyring::open_or_create(&options.data_dir)
        .context("open the appliance's key")?;
    let context = crate::api::Context::new(handle, log.clone(), report.clone())
        .with_keyring(Arc::new(keyring))
        .with_machine(machine)
        .with_api_listen(options.api.as_ref().map(|door| door.config.listen));
    let socket = options.data_dir.join(SOCKET_NAME);
    let servers = vec![
        Server::start(&socket, Door::Local, context.clone()).context("start the control socket")?,
        Server::start(
            &options.data_dir.join(CONSOLE_SOCKET_NAME),
            Door::Console,
            context.clone(),
        )
        .context("start the console's socket")?,
    ];
    let (api, generated_admin_password) = match options.api {
        Some(door) => {
            let (server, generated) = start_api(door, &options.data_dir, context)?;
            (Some(server), generated)
        }
        None => (None, None),
    };
    let api_addr = api.as_ref().map(RedfishServer::addr);
    info!(api = ?api_addr, socket = %socket.display(), ready_ms = started.elapsed().as_millis() as u64, "appliance ready");
    Ok(Running {
        core: Some(core),
        reconciler: Some(reconciler),
        servers,
        api,
        generated_admin_password,
        log,
        report,
        socket,
        #[cfg(feature = "sim")]
        sim: parts.sim,
        #[cfg(feature = "sim")]
        sim_volumes: parts.sim_volumes,
    })
}

/// Makes the first administrator when there is no account, then opens the HTTPS door. Returns
/// the door and the random password made for `admin`, if one was.
fn start_api(
    door: ApiDoor,
    data_dir: &Path,
    context: crate::api::Context,
) -> anyhow::Result<(RedfishServer, Option<Secret>)> {
    let password = door.admin_password.map(|secret| secret.0);
    let generated = first_admin(&context, data_dir, password)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("create the first administrator")?;
    if generated.is_some() {
        warn!(
            file = %data_dir.join(crate::api::redfish::ADMIN_PASSWORD_FILE).display(),
            "no administrator password was provided: the account \"admin\" got a random one, kept in this file (root only)"
        );
    }
    let server = RedfishServer::start(door.config, context).context("start the HTTPS door")?;
    Ok((server, generated.map(Secret)))
}

/// Journals the appliance's identity when it is not the one State holds.
fn record_identity(core: &CoreHandle, identity: &Identity) -> anyhow::Result<()> {
    if core.state().identity != *identity {
        let verb = Verb::SetIdentity {
            identity: identity.clone(),
        };
        core.submit(Command::appliance(verb))
            .context("record the appliance identity")?;
    }
    Ok(())
}

/// What a fabric choice gives the service.
struct FabricParts {
    drivers: Drivers,
    /// The appliance's identity, when the fabric's description names it (a topology file).
    identity: Option<Identity>,
    /// The RoCE-capable NICs (from the topology).
    rdma: BTreeSet<String>,
    #[cfg(feature = "sim")]
    sim: Option<Arc<SimFabric>>,
    #[cfg(feature = "sim")]
    sim_volumes: Option<Arc<SimVolumes>>,
}

fn fabric(choice: &FabricChoice) -> anyhow::Result<FabricParts> {
    let limits = ReconcileLimits::default();
    match choice {
        #[cfg(feature = "sim")]
        FabricChoice::Sim { topology, seed } => {
            let topology = load_topology(topology.as_deref())?;
            let rdma = topology.rdma_nics();
            let sim = Arc::new(SimFabric::new(&topology, *seed));
            let volumes = Arc::new(SimVolumes::default());
            let drivers = Drivers {
                fabric: sim.clone(),
                host: sim.clone(),
                volumes: volumes.clone(),
                limits: ReconcileLimits {
                    sync_interval_ms: 1000,
                    workers: 16,
                    ..limits
                },
            };
            Ok(FabricParts {
                drivers,
                identity: topology.identity.clone(),
                rdma,
                sim: Some(sim),
                sim_volumes: Some(volumes),
            })
        }
        FabricChoice::Real {
            fabric,
            host,
            volumes,
        } => Ok(FabricParts {
            drivers: Drivers {
                fabric: fabric.clone(),
                host: host.clone(),
                volumes: volumes.clone(),
                limits,
            },
            identity: None,
            rdma: BTreeSet::new(),
            #[cfg(feature = "sim")]
            sim: None,
            #[cfg(feature = "sim")]
            sim_volumes: None,
        }),
    }
}

#[cfg(feature = "sim")]
fn load_topology(file: Option<&Path>) -> anyhow::Result<Topology> {
    Ok(match file {
        Some(file) => topology::load(file)?,
        None => topology::parse(SAMPLE_TOPOLOGY, Path::new("<built-in sample.toml>"))?,
    })
}

/// Brings State's pool in line with the switch's inventory before serving.
fn initial_sync(core: &CoreHandle, drivers: &Drivers, rdma: &BTreeSet<String>) {
    let inventory = match drivers.fabric.inventory() {
        Ok(inventory) => inventory,
        Err(e) => {
            return warn!(error = %e, "fabric inventory unavailable at start; serving the journal's view")
        }
    };
    let state = core.state();
    let mut recorded = 0;
    for command in inventory_commands(&inventory, &state, rdma) {
        match core.submit(command) {
            Ok(accepted) => recorded += accepted.events,
            Err(e) => {
                warn!(error = %drivers::error_chain(&e), "inventory observation not recorded")
            }
        }
    }
    info!(
        devices = inventory.devices.len(),
        ports = inventory.ports.len(),
        events = recorded,
        "inventory synced"
    );
}

impl Running {
    /// Where the state came from: events replayed, snapshot, replay time, journal head.
    pub fn report(&self) -> &StartReport {
        &self.report
    }

    /// Where the HTTPS door listens (the bound port for port 0), when it is served.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api.as_ref().map(RedfishServer::addr)
    }

    /// The random password given to `admin` at this start (none was provided and there was no
    /// account yet), to be shown once.
    pub fn generated_admin_password(&self) -> Option<&Secret> {
        self.generated_admin_password.as_ref()
    }

    /// The HTTPS door's certificate (PEM), to pin it.
    pub fn api_cert_pem(&self) -> Option<&str> {
        self.api.as_ref().map(RedfishServer::cert_pem)
    }

    /// The control socket in the data directory.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// A door to the core for in-process callers.
    pub fn core(&self) -> Option<CoreHandle> {
        self.core.as_ref().map(Core::handle)
    }

    /// The simulated fabric, when serving with `--fabric sim` (for fault injection in tests).
    #[cfg(feature = "sim")]
    pub fn sim(&self) -> Option<Arc<SimFabric>> {
        self.sim.clone()
    }

    /// The simulated volumes, when serving with `--fabric sim` (md's faults for tests).
    #[cfg(feature = "sim")]
    pub fn sim_volumes(&self) -> Option<Arc<SimVolumes>> {
        self.sim_volumes.clone()
    }

    /// Stops taking commands, lets operations in flight record their outcome, and closes the
    /// journal durably.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop_all()
    }

    fn stop_all(&mut self) -> anyhow::Result<()> {
        if let Some(api) = self.api.take() {
            api.stop();
        }
        for server in self.servers.drain(..) {
            server.stop();
        }
        if let Some(reconciler) = self.reconciler.take() {
            reconciler.stop();
        }
        if let Some(core) = self.core.take() {
            core.stop();
            self.log.close().context("close the journal")?;
            info!("appliance stopped; journal closed");
        }
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Err(e) = self.stop_all() {
            warn!(error = %e, "shutdown on drop failed");
        }
    }
}
