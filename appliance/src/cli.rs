//! The command line: `serve`, `ctl` (a client of the control interface, human or JSON output)
//! and `journal verify|dump|stats|salvage`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use appliance::api::control::{describe_device, describe_system, Client, Request, Response};
use appliance::decide::placement::Want;
use appliance::model::domain::{DeviceKind, MountSource, Role};
use appliance::model::event::{Event, MountSpec};
use appliance::serve::{self, FabricChoice, ServeOptions};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "appliance", about = "Composable-infrastructure appliance")]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Run the appliance service until Ctrl-C / SIGTERM.
    Serve(ServeArgs),
    /// Talk to a running appliance over its control interface.
    Ctl(CtlArgs),
    /// Inspect the journal in DIR (or DIR/journal when it exists).
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum FabricKind {
    Sim,
}

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
    #[arg(long, default_value = serve::DEFAULT_CONTROL_LISTEN)]
    listen: SocketAddr,
    /// Ignore the journal's snapshots at start and replay the whole journal.
    #[arg(long)]
    no_snapshots: bool,
}

#[derive(clap::Args)]
struct CtlArgs {
    #[arg(long, default_value = serve::DEFAULT_CONTROL_LISTEN)]
    addr: String,
    /// Print the raw JSON response.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Ctl,
}

#[derive(Subcommand)]
enum Ctl {
    /// Journal head, pool usage, latencies.
    Status,
    Devices,
    Ports,
    Systems,
    System {
        name: String,
    },
    /// A device by id or serial.
    Device {
        device: String,
    },
    Operation {
        op: u64,
    },
    CreateTenant {
        name: String,
    },
    CreateSystem {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        role: Role,
    },
    DeleteSystem {
        name: String,
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Compose devices into SYSTEM: --device ID (repeat) or --want KIND:COUNT[:MIN_GIB][:rdma] (repeat).
    Compose {
        system: String,
        #[arg(long = "device")]
        devices: Vec<String>,
        #[arg(long = "want", value_parser = parse_want)]
        wants: Vec<Want>,
        /// Create the system for this tenant if it does not exist (with --role).
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        role: Option<Role>,
        #[arg(long)]
        request_id: Option<String>,
        #[arg(long)]
        expected_version: Option<u64>,
        /// Answer once the intent is durable, without waiting for the outcome.
        #[arg(long)]
        no_wait: bool,
    },
    /// Decompose SYSTEM's devices (all, or --device ID ...).
    Decompose {
        system: String,
        #[arg(long = "device")]
        devices: Vec<String>,
        #[arg(long)]
        request_id: Option<String>,
        #[arg(long)]
        expected_version: Option<u64>,
        #[arg(long)]
        no_wait: bool,
    },
    /// Mount namespace NSID of a composed NVMe (--device) or an export (--export SERVER:PATH) at TARGET.
    Mount {
        system: String,
        target: String,
        #[arg(long)]
        device: Option<String>,
        #[arg(long, default_value_t = 1)]
        namespace: u32,
        #[arg(long)]
        export: Option<String>,
        #[arg(long, default_value = "xfs")]
        filesystem: String,
        #[arg(long, default_value = "defaults")]
        options: String,
    },
    Unmount {
        system: String,
        target: String,
    },
    /// Replace DEVICE of SYSTEM by a healthy free device of the same kind.
    Failover {
        system: String,
        device: String,
    },
    /// Take a device out of service (--out) or back in (--in).
    Service {
        device: String,
        #[arg(long, conflicts_with = "back_in")]
        out: bool,
        #[arg(long = "in")]
        back_in: bool,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Events of a device (id or serial) or a system.
    History {
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        system: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Systems as they were right after SEQUENCE (or at --time-ms).
    StateAt {
        #[arg(long)]
        sequence: Option<u64>,
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
    Synth {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        events: u64,
    },
}

fn parse_want(text: &str) -> Result<Want, String> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() < 2 || parts.len() > 4 {
        return Err(format!(
            "{text:?}: expected KIND:COUNT[:MIN_GIB_OR_TB][:rdma]"
        ));
    }
    let kind: DeviceKind = parts[0].parse()?;
    let count: u32 = parts[1]
        .parse()
        .map_err(|_| format!("{text:?}: count {:?} is not a number", parts[1]))?;
    let mut want = Want {
        kind,
        count,
        capacity_bytes_min: 0,
        rdma: false,
    };
    for part in &parts[2..] {
        if *part == "rdma" {
            want.rdma = true;
        } else {
            want.capacity_bytes_min = parse_size(part)
                .ok_or_else(|| format!("{text:?}: size {part:?} is not like 24GiB or 2TB"))?;
        }
    }
    Ok(want)
}

fn parse_size(text: &str) -> Option<u64> {
    let (number, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| text.split_at(i))
        .unwrap_or((text, ""));
    let n: u64 = number.parse().ok()?;
    let multiplier = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(multiplier)
}

/// Runs the command line; returns the exit code.
pub fn run() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        Top::Serve(args) => serve_cmd(args),
        Top::Ctl(args) => ctl(args),
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

fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn serve_cmd(args: ServeArgs) -> anyhow::Result<i32> {
    init_tracing();
    let FabricKind::Sim = args.fabric;
    let options = ServeOptions {
        data_dir: args.data_dir,
        fabric: FabricChoice::Sim {
            topology: args.topology,
            seed: args.seed,
        },
        control_listen: args.listen,
        snapshots: !args.no_snapshots,
    };
    let running = serve::start(options)?;
    println!(
        "appliance serving: {} control={}",
        running.report(),
        running.control_addr()
    );
    wait_for_signal()?;
    eprintln!("signal received: shutting down");
    running.shutdown()?;
    Ok(0)
}

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
    let request = ctl_request(args.command)?;
    let mut client = Client::connect(args.addr.as_str())?;
    let response = client.call(&request)?;
    if args.json {
        println!("{}", serde_json::to_string(&response)?);
    } else {
        print_human(&response);
    }
    Ok(if matches!(response, Response::Error(_)) {
        2
    } else {
        0
    })
}

fn ctl_request(command: Ctl) -> anyhow::Result<Request> {
    Ok(match command {
        Ctl::Status => Request::Status,
        Ctl::Devices => Request::ListDevices,
        Ctl::Ports => Request::ListPorts,
        Ctl::Systems => Request::ListSystems,
        Ctl::System { name } => Request::ShowSystem { name },
        Ctl::Device { device } => Request::ShowDevice { device },
        Ctl::Operation { op } => Request::ShowOperation { op },
        Ctl::CreateTenant { name } => Request::CreateTenant { name },
        Ctl::CreateSystem { name, tenant, role } => Request::CreateSystem { name, tenant, role },
        Ctl::DeleteSystem {
            name,
            expected_version,
        } => Request::DeleteSystem {
            name,
            expected_version,
        },
        Ctl::Compose {
            system,
            devices,
            wants,
            tenant,
            role,
            request_id,
            expected_version,
            no_wait,
        } => Request::Compose {
            system,
            devices,
            wants,
            tenant,
            role,
            request_id,
            expected_version,
            wait: !no_wait,
        },
        Ctl::Decompose {
            system,
            devices,
            request_id,
            expected_version,
            no_wait,
        } => {
            let devices = (!devices.is_empty()).then_some(devices);
            Request::Decompose {
                system,
                devices,
                request_id,
                expected_version,
                wait: !no_wait,
            }
        }
        Ctl::Mount {
            system,
            target,
            device,
            namespace,
            export,
            filesystem,
            options,
        } => {
            let source = match (device, export) {
                (Some(device), None) => MountSource::Namespace { device, namespace },
                (None, Some(export)) => {
                    let (server, path) = export
                        .split_once(':')
                        .context("--export must be SERVER:PATH")?;
                    MountSource::Export {
                        server: server.into(),
                        path: path.into(),
                    }
                }
                _ => bail!("give either --device or --export"),
            };
            let mount = MountSpec {
                source,
                target,
                filesystem,
                options,
            };
            Request::Mount {
                system,
                mount,
                request_id: None,
                expected_version: None,
                wait: true,
            }
        }
        Ctl::Unmount { system, target } => Request::Unmount {
            system,
            target,
            request_id: None,
            expected_version: None,
            wait: true,
        },
        Ctl::Failover { system, device } => Request::Failover {
            system,
            device,
            request_id: None,
            expected_version: None,
            wait: true,
        },
        Ctl::Service {
            device,
            out,
            back_in,
            reason,
        } => {
            if out == back_in {
                bail!("give exactly one of --out or --in");
            }
            Request::SetService {
                device,
                in_service: back_in,
                reason,
                expected_version: None,
            }
        }
        Ctl::History {
            device,
            system,
            limit,
        } => Request::History {
            device,
            system,
            limit,
        },
        Ctl::StateAt { sequence, time_ms } => Request::StateAt { sequence, time_ms },
    })
}

fn print_human(response: &Response) {
    match response {
        Response::Status(s) => {
            println!(
                "appliance {} at {}: journal head {}",
                s.identity.appliance_id, s.identity.site, s.journal_head
            );
            println!("start: {}", s.start);
            for (kind, u) in &s.pools {
                println!(
                    "  {kind:<5} total={} composed={} free={} unavailable={}",
                    u.total, u.composed, u.free, u.unavailable
                );
            }
            println!(
                "ports {}/{} free, {} systems, {} tenants, {} operations pending",
                s.ports_free, s.ports_total, s.systems, s.tenants, s.operations_pending
            );
            println!(
                "compose latency p50={}us p99={}us (n={}); append p99={}us",
                s.compose_latency.p50_us,
                s.compose_latency.p99_us,
                s.compose_latency.count,
                s.append_latency.p99_us
            );
        }
        Response::Devices(devices) => devices
            .iter()
            .for_each(|d| println!("{}", describe_device(d))),
        Response::Device(d) => println!("{}", describe_device(d)),
        Response::Ports(ports) => ports.iter().for_each(|p| {
            println!(
                "port {:<3} switch={} slot={} device={}",
                p.id,
                p.switch,
                p.slot,
                p.device.as_deref().unwrap_or("-")
            )
        }),
        Response::Systems(systems) => systems
            .iter()
            .for_each(|s| println!("{}", describe_system(s))),
        Response::System(s) => println!("{}", describe_system(s)),
        Response::Operation(op) => println!("{}", serde_json::to_string(op).unwrap_or_default()),
        Response::Accepted(a) => {
            let op = a.op.map(|o| format!(" op={o}")).unwrap_or_default();
            let outcome = a.operation.as_ref().map(|o| match &o.outcome {
                Some(outcome) => format!(" outcome={outcome:?}"),
                None => " outcome=pending".into(),
            });
            println!(
                "accepted at sequence {}{op}{}{}",
                a.sequence,
                outcome.unwrap_or_default(),
                if a.repeated {
                    " (repeated request)"
                } else {
                    ""
                }
            );
        }
        Response::History(entries) => entries.iter().for_each(|e| {
            println!(
                "{:>8} {} {}",
                e.sequence,
                e.timestamp_ms,
                serde_json::to_string(&e.event).unwrap_or_default()
            )
        }),
        Response::State(state) => {
            println!("state at sequence {}", state.head);
            state
                .systems
                .values()
                .for_each(|s| println!("{}", describe_system(s)));
        }
        Response::Error(e) => eprintln!("refused ({}): {}", e.code, e.message),
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
                    eprintln!(
                        "journal verify failed: {}",
                        appliance::api::control::error_chain(&e)
                    );
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
        JournalCommand::Synth { data_dir, events } => {
            let dir = data_dir.join("journal");
            let last = appliance::testing::synth::write_journal(
                &dir,
                appliance::testing::synth::whole_cycles(events),
            )?;
            println!("wrote {last} events into {}", dir.display());
            Ok(0)
        }
    }
}

fn dump(dir: &Path) -> anyhow::Result<i32> {
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
                eprintln!(
                    "journal dump stopped: {}",
                    appliance::api::control::error_chain(&e)
                );
                return Ok(1);
            }
        };
        let mut line = serde_json::json!({
            "sequence": record.sequence,
            "timestamp_ms": record.timestamp_ms,
            "kind": record.kind,
            "kind_name": Event::kind_name(record.kind),
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
