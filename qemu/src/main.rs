//! `qemu up | setup | bench`: boots the appliance image under QEMU with the emulated fabric.
//!
//! - `setup`: installs qemu-system-x86 when missing (root) and fetches the kernel package;
//! - `up [--topology FILE] [--headless]`: builds the image and boots it, console on the terminal
//!   (Ctrl-A X quits) or, headless, in target/bench/run/console.log;
//! - `bench --json PATH`: boots the image, measures, writes one flat JSON object;
//! - `fault KIND DEVICE`: injects a fault into the VM of a running `up`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use qemu::{Api, BenchTopology, ConsoleMode, ReadyLine, Vm, VmOptions};
use serde_json::json;

/// How long a boot may take to reach the ready line under TCG.
const BOOT_TIMEOUT_MS: u64 = 120_000;
/// How long a clean power-off may take.
const POWEROFF_TIMEOUT_MS: u64 = 60_000;
/// How long the drivers' in-guest self-test may take, boot included, under TCG.
const SELFTEST_TIMEOUT_MS: u64 = 900_000;
/// The figures of the drivers' self-test the bench reports (when the guest printed them).
const SELFTEST_FIGURES: [&str; 6] = [
    "smart_uring_us",
    "smart_ioctl_us",
    "pci_enumerate_us",
    "hotplug_visible_ms",
    "read_probe_us",
    "link_down_visible_ms",
];

#[derive(Parser, Debug)]
#[command(name = "qemu", about = "The appliance's QEMU bench")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Install qemu-system-x86 when missing and fetch the kernel package.
    Setup,
    /// Build the image and boot it with the emulated fabric.
    Up {
        /// Topology of the emulated fabric (default: appliance/topologies/sample.toml).
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Console to target/bench/run/console.log instead of the terminal.
        #[arg(long)]
        headless: bool,
        /// The data disk (created blank, sparse, 1 GiB when missing).
        #[arg(long)]
        data_disk: Option<PathBuf>,
        /// Extra kernel command line.
        #[arg(long, default_value = "")]
        cmdline: String,
    },
    /// Boot the image, measure, and write one flat JSON object.
    Bench {
        #[arg(long)]
        json: PathBuf,
        /// Measure only the failover figures (mttd_*, mttr_*): about three minutes, not twenty.
        #[arg(long)]
        failover_only: bool,
    },
    /// Inject a fault into the VM of a running `qemu -- up` (e.g. `fault smart nvme-0`).
    Fault {
        kind: qemu::faults::FaultKind,
        /// The pool device, as the topology names it (nvme-0, nic-1, hba-0, ...).
        device: String,
        /// The run directory of that `up` (default: target/bench/run).
        #[arg(long)]
        run_dir: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Cmd::Setup => setup(),
        Cmd::Up {
            topology,
            headless,
            data_disk,
            cmdline,
        } => up(topology, headless, data_disk, &cmdline),
        Cmd::Bench {
            json,
            failover_only,
        } => bench(&json, failover_only),
        Cmd::Fault {
            kind,
            device,
            run_dir,
        } => {
            let run_dir = run_dir.unwrap_or_else(|| bench_dir().join("run"));
            let socket = qemu::RunPaths::new(&run_dir).faults;
            let answer = qemu::faults::send(&socket, kind, &device)?;
            println!("{answer}");
            if answer.starts_with("error") {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

fn bench_dir() -> PathBuf {
    image::workspace_dir().join("target/bench")
}

fn setup() -> Result<()> {
    let qemu = qemu::host::ensure_qemu()?;
    println!("qemu: {}", qemu.display());
    let mdadm = qemu::host::ensure_tool("mdadm", "mdadm")?;
    println!("mdadm (shipped in the image): {}", mdadm.display());
    let tmux = qemu::host::ensure_tool("tmux", "tmux")?;
    println!("tmux (the console's tests drive it): {}", tmux.display());
    let slapd = qemu::host::ensure_tool("slapd", "slapd")?;
    println!(
        "slapd (the directory logins' tests run one): {}",
        slapd.display()
    );
    let options = image::BuildOptions::default();
    let deb = match image::kernel::ensure_deb(&options.kernel, &options.cache_dir, true) {
        Ok(deb) => deb,
        Err(first) => {
            // On a fresh machine apt-get knows no package until its lists are fetched.
            eprintln!(
                "fetching the kernel package failed ({first}); running apt-get update and retrying"
            );
            let status = std::process::Command::new("apt-get")
                .arg("update")
                .status()
                .context("run apt-get update")?;
            if !status.success() {
                bail!("apt-get update failed with {status}; the kernel package could not be fetched: {first}");
            }
            image::kernel::ensure_deb(&options.kernel, &options.cache_dir, true)
                .context("fetch the kernel package")?
        }
    };
    println!("kernel package: {}", deb.display());
    Ok(())
}

fn build_image() -> Result<image::Artifacts> {
    qemu::host::ensure_tool("mdadm", "mdadm")?;
    let started = Instant::now();
    let artifacts = image::build(&image::BuildOptions::default()).context("build the image")?;
    tracing::info!(ms = started.elapsed().as_millis() as u64, kernel = %artifacts.kernel_version, "image ready");
    Ok(artifacts)
}

fn up(
    topology: Option<PathBuf>,
    headless: bool,
    data_disk: Option<PathBuf>,
    cmdline: &str,
) -> Result<()> {
    qemu::host::ensure_qemu()?;
    let artifacts = build_image()?;
    let topology_path =
        topology.unwrap_or_else(|| image::workspace_dir().join("appliance/topologies/sample.toml"));
    let topology = BenchTopology::load(&topology_path)?;
    let run_dir = bench_dir().join("run");
    let mut options = VmOptions::new(&artifacts, &run_dir);
    options.topology = topology;
    // In this terminal, the appliance's full-screen console follows the boot; headless, the
    // console log keeps the service's lines only.
    options.extra_cmdline = match headless {
        true => cmdline.to_string(),
        false => format!("appliance.console=on {cmdline}"),
    };
    options.data_disk = data_disk.unwrap_or_else(|| bench_dir().join("data.img"));
    options.console = if headless {
        ConsoleMode::Captured
    } else {
        ConsoleMode::Terminal
    };
    let mut vm = Vm::launch(options)?;
    eprintln!(
        "appliance VM: pid {} accel {:?}; QMP {}; front panel (2x20): tail -f {}",
        vm.pid(),
        vm.accel(),
        vm.paths().qmp.display(),
        vm.paths().panel.display()
    );
    qemu::faults::listen(&vm.paths().faults, vm.fabric().clone())
        .with_context(|| format!("listen on {}", vm.paths().faults.display()))?;
    let next = what_to_type_next(&vm, headless);
    if headless {
        eprintln!("console log: {}", vm.paths().console_log.display());
        let ready = vm.console().wait_for(
            qemu::ready::READY_PREFIX,
            Duration::from_millis(BOOT_TIMEOUT_MS),
        )?;
        println!("{ready}");
        announce(&vm, &next);
    } else {
        // QEMU owns the terminal and the bench cannot read the console: the API answering a
        // login is the sign the appliance is up (it listens just before its ready line).
        let (url, credentials) = (vm.api_url(), vm.credentials().ok().cloned());
        std::thread::spawn(move || {
            let timeout = Duration::from_millis(BOOT_TIMEOUT_MS);
            let up = credentials.map(|c| qemu::Api::login(&url, &c, timeout));
            match up {
                Some(Err(e)) => eprintln!("\r\nthe appliance's API did not take a login: {e}\r"),
                _ => eprint!("\r\n{}\r\n", next.replace('\n', "\r\n")),
            }
        });
    }
    let status = vm.wait()?;
    eprintln!("QEMU exited: {status}");
    Ok(())
}

/// Prints what a person on the host types next.
fn announce(vm: &Vm, next: &str) {
    match vm.api(LOGIN_TIMEOUT) {
        Ok(_) => eprintln!("{next}"),
        Err(e) => eprintln!("the appliance's API did not take a login: {e}"),
    }
}

/// The API's host URL and how to log in to it, with the files the bench provisioned.
fn what_to_type_next(vm: &Vm, headless: bool) -> String {
    let url = vm.api_url();
    let credentials = match vm.credentials() {
        Ok(credentials) => credentials,
        Err(e) => {
            return format!("The appliance's API (Redfish over HTTPS) on this host: {url}\n{e}")
        }
    };
    let stop = match headless {
        true => "the power button: QMP system_powerdown on the QMP socket above",
        false => "Ctrl-A X in the console, or the power button (QMP system_powerdown)",
    };
    let cert = shown(&credentials.cert_file);
    let password = shown(&credentials.password_file);
    format!(
        "The appliance is up. Its API (Redfish over HTTPS) on this host: {url}
  log in:    cargo run -q --release -p appliance -- ctl --url {url} --ca-cert {cert} login --user admin --password-file {password}
  then:      cargo run -q --release -p appliance -- ctl status   (or systems, devices, compose --help)
  or curl:   curl --cacert {cert} -u \"admin:$(cat {password})\" {url}/redfish/v1/Systems
  a fault:   cargo run -q --release -p qemu -- fault smart nvme-0   (smart, remove, link-down, media-errors, pcie-error, port-down; on a composed device)
  stop:      {stop}"
    )
}

/// `path` relative to the current directory when it is under it.
fn shown(path: &Path) -> String {
    let here = std::env::current_dir().unwrap_or_default();
    path.strip_prefix(&here)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// One boot: launches, waits for the ready line, returns the VM, the line and the time to it.
fn boot(options: VmOptions) -> Result<(Vm, ReadyLine, u64)> {
    let vm = Vm::launch(options)?;
    let line = vm.console().wait_for(
        qemu::ready::READY_PREFIX,
        Duration::from_millis(BOOT_TIMEOUT_MS),
    )?;
    let ms = vm.started().elapsed().as_millis() as u64;
    let ready = ReadyLine::parse(&line).context("parse the ready line")?;
    Ok((vm, ready, ms))
}

fn power_off(mut vm: Vm) -> Result<()> {
    vm.qmp().system_powerdown()?;
    let status = vm.wait_exit(Duration::from_millis(POWEROFF_TIMEOUT_MS))?;
    if !status.success() {
        bail!("QEMU exited with {status} after the power button");
    }
    Ok(())
}

/// Compose rounds measured; the median is reported.
const COMPOSE_ROUNDS: usize = 10;

/// How long the bench waits for the appliance's API to take a login after QEMU starts.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Compose request (with `wait`: answered once the driver is bound and the NVMe identified) to
/// answer, through the forwarded HTTPS API; each round is decomposed again before the next.
fn measure_compose(vm: &Vm) -> Result<Vec<u64>> {
    let api = vm.api(LOGIN_TIMEOUT)?;
    if let Err(e) = api.call(&json!({"order": {"create_tenant": {"name": "bench"}}})) {
        tracing::info!("create tenant: {e}");
    }
    let mut samples = Vec::with_capacity(COMPOSE_ROUNDS);
    for round in 0..COMPOSE_ROUNDS {
        let compose = json!({"order": {"compose": {"system": "bench-1",
            "selection": {"specific": ["nvme-0"]},
            "create": {"tenant": "bench", "role": "workstation"}}}});
        let started = Instant::now();
        let answer = api
            .call(&compose)
            .with_context(|| format!("compose round {round}"))?;
        let ms = started.elapsed().as_millis() as u64;
        let outcome = &answer["accepted"]["operation"]["state"];
        if outcome.as_str() != Some("completed") {
            bail!("compose round {round} did not complete: {answer}");
        }
        samples.push(ms);
        let decompose = json!({"order": {"decompose": {"system": "bench-1"}}});
        api.call(&decompose)
            .with_context(|| format!("decompose round {round}"))?;
    }
    Ok(samples)
}

/// Events in the journal whose replay at boot is measured.
const REPLAY_EVENTS: u64 = 100_000;
/// Connections that write them at once, each with its own kept-alive HTTPS connection and one
/// request in flight. The core batches concurrent callers into one append, so the number of
/// connections is the batch size: under TCG an append's fsync dominates, and 48 connections
/// fill about three times faster than 16.
const FILL_CONNECTIONS: u64 = 48;
/// Attempts of one request of the fill before it fails (a request lost with its connection is
/// sent again on a new one).
const FILL_ATTEMPTS: u32 = 3;

/// The kernel command line of the boot whose replay is measured (see `appliance::pid1::cmdline`).
const REPLAY_CMDLINE: &str = "appliance.snapshots=off";

/// Appends about `events` events (one `create_tenant` each, over several connections at once)
/// and returns the journal head and the time it took.
fn fill_journal(vm: &Vm, events: u64) -> Result<(u64, u64)> {
    let api = vm.api(LOGIN_TIMEOUT)?;
    let started = Instant::now();
    let per_connection = events.div_ceil(FILL_CONNECTIONS);
    let workers: Vec<_> = (0..FILL_CONNECTIONS)
        .map(|c| {
            let api = api.fork();
            std::thread::spawn(move || fill_one(api?, c, per_connection))
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("a journal-filling thread panicked"))??;
    }
    let status = api.call(&json!({"query": "status"}))?;
    let head = status["status"]["journal_head"]
        .as_u64()
        .context("status has journal_head")?;
    let ms = started.elapsed().as_millis() as u64;
    tracing::info!(head, ms, "journal filled");
    Ok((head, ms))
}

fn fill_one(mut api: Api, connection: u64, count: u64) -> Result<()> {
    for i in 0..count {
        let request =
            json!({"order": {"create_tenant": {"name": format!("fill-{connection}-{i}")}}});
        let mut attempt = 1;
        loop {
            match api.call(&request) {
                Ok(answer) if answer.get("accepted").is_some() => break,
                Ok(answer) => bail!("create_tenant was not accepted: {answer}"),
                // The first attempt was journaled before its connection was lost.
                Err(qemu::ApiError::Refused { status: 409, .. }) if attempt > 1 => break,
                Err(e @ qemu::ApiError::Transport { .. }) if attempt < FILL_ATTEMPTS => {
                    tracing::info!(error = %e, attempt, "fill request lost; sending it again");
                    api = api.fork()?;
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Where the current boot's state came from: the status report's `start` (`replay_ms`,
/// `replay_read_ms` and `replay_apply_ms`: the reading and applying threads' busy times).
fn start_report(vm: &Vm) -> Result<serde_json::Value> {
    let status = vm.api(LOGIN_TIMEOUT)?.call(&json!({"query": "status"}))?;
    let start = &status["status"]["start"];
    if start["replay_ms"].as_u64().is_none() {
        bail!("no start.replay_ms in {status}");
    }
    Ok(start.clone())
}

/// Adds `<prefix>_ms`, `<prefix>_read_ms` and `<prefix>_apply_ms` from a start report.
fn insert_replay_figures(
    figures: &mut serde_json::Map<String, serde_json::Value>,
    prefix: &str,
    start: &serde_json::Value,
) {
    for (key, field) in [
        ("ms", "replay_ms"),
        ("read_ms", "replay_read_ms"),
        ("apply_ms", "replay_apply_ms"),
    ] {
        if let Some(value) = start[field].as_u64() {
            figures.insert(format!("{prefix}_{key}"), value.into());
        }
    }
}

/// Events of the synthetic journal whose replay is measured too.
const SYNTH_EVENTS: u64 = 100_000;

/// Runs a host tool to its end; a failure names the command and carries its stderr.
fn run_tool(command: &mut std::process::Command) -> Result<()> {
    let shown = format!("{command:?}");
    let out = command.output().with_context(|| format!("run {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(())
}

/// A second 100k-event replay, of the appliance's own kind of life: compose/decompose cycles
/// on 16 GPUs, written on the host by `appliance journal synth` onto a fresh ext4 data disk
/// (with the bench's provisioning beside it), booted once with snapshots off. Returns that
/// boot's start report.
fn measure_synth_replay(artifacts: &image::Artifacts, run_dir: &Path) -> Result<serde_json::Value> {
    if run_dir.exists() {
        std::fs::remove_dir_all(run_dir)
            .with_context(|| format!("remove {}", run_dir.display()))?;
    }
    let tree = run_dir.join("data");
    run_tool(
        std::process::Command::new(image::tools::build_host_appliance(
            &image::workspace_dir(),
            &image::workspace_dir().join("target"),
        )?)
        .args(["journal", "synth", "--data-dir"])
        .arg(&tree)
        .args(["--events", &SYNTH_EVENTS.to_string()]),
    )?;
    let disk = run_dir.join("data.img");
    qemu::provision::create(&disk, 1 << 30, &tree)?;
    let mut options = VmOptions::new(artifacts, run_dir);
    options.data_disk = disk;
    options.extra_cmdline = REPLAY_CMDLINE.to_string();
    let (vm, _, _) = boot(options)?;
    let start = start_report(&vm);
    power_off(vm)?;
    start
}

fn median(samples: &[u64]) -> u64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

fn console_tail(vm: &Vm) -> String {
    let lines = vm.console().lines();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// One boot with the drivers' self-test (fresh run directory and data disk); the NVMe is
/// hot-added on the last fabric port, where the bench attaches nothing in self-test mode.
/// Boots a pool of spare NVMe drives and measures the appliance's own failovers
/// (`qemu::failover`).
fn measure_failover(
    artifacts: &image::Artifacts,
    run_dir: &Path,
) -> Result<qemu::failover::Figures> {
    if run_dir.exists() {
        std::fs::remove_dir_all(run_dir)
            .with_context(|| format!("remove {}", run_dir.display()))?;
    }
    let mut options = VmOptions::new(artifacts, run_dir);
    options.topology =
        qemu::BenchTopology::parse(&qemu::failover::topology(), "the failover bench's pool")?;
    qemu::failover::prepare(&qemu::RunPaths::new(run_dir))?;
    let (vm, _, _) = boot(options)?;
    let measured = vm
        .api(LOGIN_TIMEOUT)
        .map_err(anyhow::Error::from)
        .and_then(|api| qemu::failover::measure(&vm, &api))
        .with_context(|| format!("console tail:\n{}", console_tail(&vm)));
    power_off(vm)?;
    measured
}

fn measure_driver_selftest(
    artifacts: &image::Artifacts,
    run_dir: &Path,
) -> Result<qemu::SelftestOutcome> {
    if run_dir.exists() {
        std::fs::remove_dir_all(run_dir)
            .with_context(|| format!("remove {}", run_dir.display()))?;
    }
    let deadline = Instant::now() + Duration::from_millis(SELFTEST_TIMEOUT_MS);
    let mut options = VmOptions::new(artifacts, run_dir);
    options.extra_cmdline = qemu::selftest::SELFTEST_CMDLINE.to_string();
    let port = options
        .topology
        .ports
        .iter()
        .map(|p| p.id)
        .max()
        .context("the bench topology has no fabric port")?;
    let vm = Vm::launch(options)?;
    let outcome = qemu::run_driver_selftest(&vm, &qemu::args::root_port_id(port), deadline)
        .with_context(|| {
            format!(
                "the drivers' self-test; console tail:\n{}",
                console_tail(&vm)
            )
        })?;
    // Dropping the VM kills QEMU: PID 1 of a self-test boot has nothing left to shut down.
    drop(vm);
    Ok(outcome)
}

/// Adds the self-test's figures (integers stay integers) and its pass/fail counts.
fn insert_selftest_figures(
    figures: &mut serde_json::Map<String, serde_json::Value>,
    missing: &mut Vec<(&'static str, &'static str)>,
    outcome: &qemu::SelftestOutcome,
) {
    figures.insert("driver_selftest_passed".into(), outcome.passed.into());
    figures.insert("driver_selftest_failed".into(), outcome.failed.into());
    for line in outcome
        .lines
        .iter()
        .filter(|l| l.starts_with("SELFTEST FAIL"))
    {
        eprintln!("driver self-test: {line}");
    }
    for name in SELFTEST_FIGURES {
        let Some(&value) = outcome.figures.get(name) else {
            missing.push((name, "the guest's self-test did not print this figure"));
            continue;
        };
        let json = if value.fract() == 0.0 && (0.0..9.0e15).contains(&value) {
            serde_json::Value::from(value as u64)
        } else {
            serde_json::Value::from(value)
        };
        figures.insert(name.into(), json);
    }
}

fn bench(json: &Path, failover_only: bool) -> Result<()> {
    qemu::host::ensure_qemu()?;
    let artifacts = build_image()?;
    let mut figures = serde_json::Map::new();
    let mut missing = Vec::new();
    if !failover_only {
        bench_boot_compose_replay(&artifacts, &mut figures, &mut missing)?;
    }
    match measure_failover(&artifacts, &bench_dir().join("failover-run")) {
        Ok(failover) => {
            for (name, samples) in [
                ("mttd_smart_ms", &failover.detect_smart),
                ("mttr_smart_ms", &failover.recover_smart),
                ("mttd_removal_ms", &failover.detect_removal),
                ("mttr_removal_ms", &failover.recover_removal),
                ("mttr_mirror_ms", &failover.recover_mirror),
                ("mirror_moved_ms", &failover.moved_mirror),
                ("mirror_rebuilt_ms", &failover.rebuilt_mirror),
                ("mttr_hba_ms", &failover.recover_hba),
            ] {
                figures.insert(name.into(), median(samples).into());
                let samples_name = name.replace("_ms", "_samples_ms");
                figures.insert(samples_name, samples.clone().into());
            }
        }
        Err(e) => {
            eprintln!("the failover measurement failed: {e:#}");
            missing.push((
                "mttd_smart_ms, mttr_smart_ms, mttd_removal_ms, mttr_removal_ms, mttr_mirror_ms, mttr_hba_ms",
                "the failover rounds did not complete (above)",
            ));
        }
    }
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(figures))?;
    std::fs::write(json, format!("{text}\n"))
        .with_context(|| format!("write {}", json.display()))?;
    println!("{text}");
    for (key, why) in missing {
        eprintln!("not measured: {key}: {why}");
    }
    Ok(())
}

/// The boot, compose, replay and self-test figures (everything but the failovers).
fn bench_boot_compose_replay(
    artifacts: &image::Artifacts,
    figures: &mut serde_json::Map<String, serde_json::Value>,
    missing: &mut Vec<(&'static str, &'static str)>,
) -> Result<()> {
    let run_dir = bench_dir().join("bench-run");
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("remove {}", run_dir.display()))?;
    }
    let options = VmOptions::new(artifacts, &run_dir);
    // The first boot formats the blank data disk; the measured boot is the second one.
    let (vm, _, first_ms) = boot(options.clone())?;
    figures.insert("first_boot_to_ready_ms".into(), first_ms.into());
    power_off(vm)?;
    let (vm, ready, ms) = boot(options.clone())?;
    figures.insert("boot_to_ready_ms".into(), ms.into());
    if let Some(guest_ms) = ready.boot_ms {
        figures.insert("guest_boot_ms".into(), guest_ms.into());
    }
    figures.insert(
        "accel".into(),
        format!("{:?}", vm.accel()).to_lowercase().into(),
    );
    match measure_compose(&vm) {
        Ok(samples) => {
            figures.insert("compose_visible_ms".into(), median(&samples).into());
            figures.insert("compose_visible_samples_ms".into(), samples.into());
        }
        Err(e) => {
            eprintln!(
                "compose measurement failed: {e:#}\nconsole tail:\n{}",
                console_tail(&vm)
            );
            missing.push((
                "compose_visible_ms",
                "the compose through the API failed (above)",
            ));
        }
    }
    let filled = fill_journal(&vm, REPLAY_EVENTS);
    power_off(vm)?;
    match filled {
        Ok((head, fill_ms)) => {
            figures.insert("replay_fill_ms".into(), fill_ms.into());
            // The measured boot replays the whole journal: the snapshots the core wrote while it
            // was filled would otherwise leave only their tail to replay.
            let mut replay_options = options;
            replay_options.extra_cmdline = REPLAY_CMDLINE.to_string();
            let (vm, ready, ms) = boot(replay_options)?;
            figures.insert("replay_boot_to_ready_ms".into(), ms.into());
            figures.insert("replay_journal_head".into(), head.into());
            if let Some(replayed) = ready.replayed {
                figures.insert("replay_events_replayed".into(), replayed.into());
                if replayed < head {
                    eprintln!("the measured boot replayed {replayed} events of a journal at {head}: was a snapshot used?");
                }
            }
            match start_report(&vm) {
                Ok(start) => insert_replay_figures(figures, "reboot_replay", &start),
                Err(e) => {
                    eprintln!("read replay_ms: {e:#}");
                    missing.push((
                        "reboot_replay_ms",
                        "the status report has no start.replay_ms",
                    ));
                }
            }
            power_off(vm)?;
        }
        Err(e) => {
            eprintln!("filling the journal failed: {e:#}");
            missing.push((
                "reboot_replay_ms",
                "could not write the 100k-event journal (above)",
            ));
        }
    }
    match measure_synth_replay(artifacts, &bench_dir().join("synth-run")) {
        Ok(start) => insert_replay_figures(figures, "reboot_replay_cycles", &start),
        Err(e) => {
            eprintln!("the synthetic journal's replay failed: {e:#}");
            missing.push((
                "reboot_replay_cycles_ms",
                "the boot of the synthetic 100k-event journal failed (above)",
            ));
        }
    }
    match measure_driver_selftest(artifacts, &bench_dir().join("selftest-run")) {
        Ok(outcome) => insert_selftest_figures(figures, missing, &outcome),
        Err(e) => {
            eprintln!("the drivers' self-test failed: {e:#}");
            missing.push((
                "smart_uring_us, smart_ioctl_us, pci_enumerate_us, hotplug_visible_ms",
                "the drivers' in-guest self-test did not complete (above)",
            ));
        }
    }
    Ok(())
}
