//! API benchmark: the appliance served on loopback (simulated fabric, real journal in a temp
//! dir, HTTPS door), loaded by 64 keep-alive HTTPS connections (one thread and one ureq agent
//! each, in this process, on the same two cores as the service):
//! - `get_system_rps`, `get_p50_ms_at_64`, `get_p99_ms_at_64`: authenticated GET of one
//!   composed System, 64 connections at once;
//! - `tls_baseline_rps`, `baseline_p99_ms_at_64`: the same connections and TLS stack on
//!   `/redfish/v1/Oem/Appliance/Ping`, a handler that answers a fixed small JSON body after the
//!   same authentication check (the door's cost without building a resource);
//! - `get_p50_ms`, `get_p99_ms`, `baseline_p99_ms`: the same GETs on one connection, the
//!   latency of a request that does not queue behind 63 others (at 64 connections the
//!   latency is at least 64 / rps by Little's law: `queueing_floor_ms_at_64`);
//! - `compose_p50_ms`, `compose_p99_ms`, `decompose_p99_ms`: POST of a specific composition,
//!   answered once the compose is durable and done, then its DELETE, one after the other;
//!   each crosses four durable appends (intent and outcome of each).
//!
//! `cargo run --release -p appliance --bin api-bench -- --json PATH [--seconds N]
//! [--connections N] [--composes N]`

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use appliance::api::client::{Client, Trust};
use appliance::api::redfish::RedfishConfig;
use appliance::model::Secret;
use appliance::serve::{self, ApiDoor, FabricChoice, ServeOptions};
use clap::Parser;
use serde_json::json;

const PASSWORD: &str = "Bench-Passw0rd-api";

#[derive(Parser)]
#[command(name = "api-bench", about = "Benchmark of the HTTPS Redfish door")]
struct Args {
    /// Where to write the figures (one flat JSON object).
    #[arg(long)]
    json: PathBuf,
    /// Seconds of each throughput run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Compose + decompose rounds.
    #[arg(long, default_value_t = 200)]
    composes: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir().context("temp dir")?;
    let config = RedfishConfig::new("127.0.0.1:0".parse()?, dir.path().into());
    let running = serve::start(ServeOptions {
        data_dir: dir.path().into(),
        fabric: FabricChoice::Sim {
            topology: None,
            seed: 1,
        },
        api: Some(ApiDoor {
            config,
            admin_password: Some(Secret(PASSWORD.into())),
        }),
        identity: None,
        snapshots: true,
        machine: None,
    })?;
    let url = format!("https://{}", running.api_addr().context("API address")?);
    let trust = Trust::Pinned(running.api_cert_pem().context("certificate")?.to_string());
    let mut admin = Client::new(&url, &trust, Duration::from_secs(30))?;
    let login = admin.login("admin", PASSWORD, None)?;
    if login.status != 201 {
        bail!("login: {} {}", login.status, login.json());
    }
    let token = admin.token().context("a token")?.to_string();
    let compose = |name: &str, device: &str| {
        json!({"Name": name, "Links": {"ResourceBlocks": [
            {"@odata.id": format!("/redfish/v1/CompositionService/ResourceBlocks/{device}")}]}})
    };
    let answer = admin.post("/redfish/v1/Systems", &compose("bench-get", "gpu-0"))?;
    if answer.status != 201 {
        bail!("compose: {} {}", answer.status, answer.json());
    }

    let run = Duration::from_secs(args.seconds);
    let load = |path: &'static str| load(&url, &trust, &token, path, args.connections, run);
    // Baseline, the GET, then the baseline again: the machine's speed can drift in between.
    let baseline_1 = load("/redfish/v1/Oem/Appliance/Ping")?;
    let get = load("/redfish/v1/Systems/bench-get")?;
    let baseline_2 = load("/redfish/v1/Oem/Appliance/Ping")?;
    let baseline_rps = (baseline_1.rps + baseline_2.rps) / 2.0;
    let one = |path: &'static str| self::load(&url, &trust, &token, path, 1, run);
    let get_one = one("/redfish/v1/Systems/bench-get")?;
    let baseline_one = one("/redfish/v1/Oem/Appliance/Ping")?;

    let mut composes = Vec::with_capacity(args.composes);
    let mut decomposes = Vec::with_capacity(args.composes);
    for round in 0..args.composes {
        let started = Instant::now();
        let answer = admin.post("/redfish/v1/Systems", &compose("bench-c", "gpu-1"))?;
        composes.push(started.elapsed());
        if answer.status != 201 {
            bail!("compose round {round}: {} {}", answer.status, answer.json());
        }
        let started = Instant::now();
        let answer = admin.delete("/redfish/v1/Systems/bench-c")?;
        decomposes.push(started.elapsed());
        if answer.status != 200 && answer.status != 204 {
            bail!(
                "decompose round {round}: {} {}",
                answer.status,
                answer.json()
            );
        }
    }
    let figures = json!({
        "connections": args.connections,
        "seconds": args.seconds,
        "get_system_rps": get.rps.round(),
        "get_p50_ms_at_64": ms(get.p50),
        "get_p99_ms_at_64": ms(get.p99),
        "queueing_floor_ms_at_64": ms(Duration::from_secs_f64(args.connections as f64 / get.rps)),
        "tls_baseline_rps": baseline_rps.round(),
        "tls_baseline_rps_before": baseline_1.rps.round(),
        "tls_baseline_rps_after": baseline_2.rps.round(),
        "baseline_p99_ms_at_64": ms(baseline_1.p99.max(baseline_2.p99)),
        "get_over_baseline": (get.rps / baseline_rps * 100.0).round() / 100.0,
        "get_p50_ms": ms(get_one.p50),
        "get_p99_ms": ms(get_one.p99),
        "get_rps_one_connection": get_one.rps.round(),
        "baseline_p99_ms": ms(baseline_one.p99),
        "compose_rounds": args.composes,
        "compose_p50_ms": ms(quantile(&mut composes, 0.5)),
        "compose_p99_ms": ms(quantile(&mut composes, 0.99)),
        "decompose_p99_ms": ms(quantile(&mut decomposes, 0.99)),
    });
    let text = serde_json::to_string_pretty(&figures)?;
    std::fs::write(&args.json, format!("{text}\n"))
        .with_context(|| format!("write {}", args.json.display()))?;
    println!("{text}");
    running.shutdown()?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort_unstable();
    let at = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len().max(1)) - 1;
    samples.get(at).copied().unwrap_or_default()
}

struct Load {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

/// `connections` threads GET `path` for `run`, each on its own keep-alive connection.
fn load(
    url: &str,
    trust: &Trust,
    token: &str,
    path: &'static str,
    connections: usize,
    run: Duration,
) -> anyhow::Result<Load> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let client =
                Client::new(url, trust, Duration::from_secs(30)).map(|c| c.with_token(token));
            let stop = stop.clone();
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                let client = client?;
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    let answer = client.get(path)?;
                    samples.push(at.elapsed());
                    if answer.status != 200 {
                        bail!("GET {path}: {}", answer.status);
                    }
                }
                Ok(samples)
            })
        })
        .collect();
    std::thread::sleep(run);
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for worker in workers {
        let done = worker
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        samples.extend(done);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rps = samples.len() as f64 / elapsed;
    Ok(Load {
        rps,
        p50: quantile(&mut samples, 0.5),
        p99: quantile(&mut samples, 0.99),
    })
}
