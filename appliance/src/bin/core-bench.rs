//! Core benchmark: durable compose + decompose cycles through the core on the simulated fabric
//! (16 concurrent clients) with two baselines measured in the same run on this disk (durable
//! appends per second one at a time, and durable events per second of 16 appenders waiting at
//! once, each giving the most cycles per second the journal could carry), one constrained
//! placement among 10,000 devices and 1,000 systems, rebuilding State from 1M domain events in
//! the journal, and `create_tenant` throughput when State already holds 100k tenants (a
//! command's cost must not grow with State). Writes one flat JSON object.
//!
//! `cargo run --release -p appliance --bin core-bench -- --json PATH [--seconds N] [--events N]
//! [--tenants N]`

// The allocator the appliance binary ships with (`main.rs`), so the figures are its own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use appliance::core::log::{EventLog, JournalLog, MemoryLog};
use appliance::core::{recover, Core, CoreConfig};
use appliance::decide::command::{Command, NewSystem, Selection, Verb};
use appliance::decide::placement::{place, Want};
use appliance::model::{DeviceKind, Event, Made, OperationId, PortId, Role, State};
use appliance::serve::{self, FabricChoice, ServeOptions};
use appliance::testing::synth;
use rand::{Rng, SeedableRng};

const CLIENTS: usize = 16;
const PLACEMENT_DEVICES: usize = 10_000;
const PLACEMENT_SYSTEMS: usize = 1_000;
const PLACEMENT_RUNS: usize = 2_000;
const REPLAY_BATCH_EVENTS: usize = 4096;
/// How long each create_tenant throughput run lasts at most.
const TENANT_RUN_MS: u64 = 5_000;
/// How long the durable-append baseline runs.
const APPENDS_RUN_MS: u64 = 3_000;
/// Durable points one compose + decompose cycle waits for, one after the other: compose intent,
/// compose outcome, decompose intent, decompose outcome (intent and outcome are never merged).
const DURABLE_STEPS_PER_CYCLE: usize = 4;

struct Args {
    json: PathBuf,
    seconds: u64,
    events: u64,
    tenants: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut parsed = Args {
        json: PathBuf::from("core-bench.json"),
        seconds: 10,
        events: 1_000_000,
        tenants: 100_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--json" => parsed.json = value.into(),
            "--seconds" => parsed.seconds = value.parse().context("--seconds")?,
            "--events" => parsed.events = value.parse().context("--events")?,
            "--tenants" => parsed.tenants = value.parse().context("--tenants")?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(parsed)
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let scratch = tempfile::Builder::new()
        .prefix("core-bench")
        .tempdir_in(std::env::temp_dir())?;
    // The disk's speed moves within minutes: the concurrent baseline brackets the cycles.
    let concurrent_before = concurrent_appends(&scratch.path().join("concurrent-before"))?;
    let (cycles_per_s, compose_p99_us) =
        compose_decompose(scratch.path(), Duration::from_secs(args.seconds))?;
    let concurrent_after = concurrent_appends(&scratch.path().join("concurrent-after"))?;
    let appends_per_s = durable_appends(&scratch.path().join("appends"))?;
    let bound_per_s = appends_per_s * CLIENTS as f64 / DURABLE_STEPS_PER_CYCLE as f64;
    let concurrent_per_s = (concurrent_before + concurrent_after) / 2.0;
    let journal_limit_per_s = concurrent_per_s / DURABLE_STEPS_PER_CYCLE as f64;
    eprintln!(
        "compose_decompose_per_s={cycles_per_s:.0} compose_p99_us={compose_p99_us} \
         durable_appends_per_s={appends_per_s:.0} compose_decompose_bound_per_s={bound_per_s:.0} \
         concurrent_durable_events_per_s={concurrent_per_s:.0} (before {concurrent_before:.0}, \
         after {concurrent_after:.0}) \
         compose_decompose_journal_limit_per_s={journal_limit_per_s:.0}"
    );
    let tenant_empty_per_s = create_tenants(&scratch.path().join("tenants-0"), 0)?;
    let tenant_full_per_s = create_tenants(&scratch.path().join("tenants-full"), args.tenants)?;
    eprintln!(
        "create_tenant_per_s_at_0={tenant_empty_per_s:.0} create_tenant_per_s_at_{}={tenant_full_per_s:.0}",
        args.tenants
    );
    let (placement_p50_us, placement_p99_us) = placement()?;
    eprintln!("placement_p50_us={placement_p50_us} placement_p99_us={placement_p99_us}");
    let (replay_ms, apply_ms) = replay(&scratch.path().join("replay"), args.events)?;
    eprintln!("replay_1m_ms={replay_ms} replay_1m_apply_only_ms={apply_ms}");
    let json = serde_json::json!({
        "compose_decompose_per_s": cycles_per_s.round(),
        "compose_p99_us": compose_p99_us,
        "durable_appends_per_s": appends_per_s.round(),
        "compose_decompose_bound_per_s": bound_per_s.round(),
        "concurrent_durable_events_per_s": concurrent_per_s.round(),
        "concurrent_durable_events_per_s_before": concurrent_before.round(),
        "concurrent_durable_events_per_s_after": concurrent_after.round(),
        "compose_decompose_journal_limit_per_s": journal_limit_per_s.round(),
        "clients": CLIENTS,
        "create_tenant_per_s_at_0": tenant_empty_per_s.round(),
        "create_tenant_per_s_at_100k": tenant_full_per_s.round(),
        "create_tenant_prefilled_tenants": args.tenants,
        "placement_p50_us": placement_p50_us,
        "placement_p99_us": placement_p99_us,
        "replay_1m_ms": replay_ms,
        "replay_1m_apply_only_ms": apply_ms,
        "replay_events": args.events,
    });
    std::fs::write(&args.json, format!("{json}\n"))
        .with_context(|| format!("write {}", args.json.display()))?;
    println!("{json}");
    Ok(())
}

/// A topology with one GPU and one port per client.
fn bench_topology(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut text = String::new();
    for i in 0..CLIENTS {
        text.push_str(&format!(
            "[[port]]\nid = {}\nswitch = \"sw0\"\nslot = {}\n\n",
            i + 1,
            i + 1
        ));
        text.push_str(&format!(
            "[[device]]\nid = \"gpu-{i}\"\nclass = 0x030000\nvendor_id = 0x10de\ndevice_id = 0x2230\nserial = \"G{i}\"\n\
             model = \"bench\"\nfirmware = \"1\"\ncapacity_bytes = {}\nswitch = \"sw0\"\n\n",
            48u64 << 30
        ));
    }
    let file = dir.join("bench-topology.toml");
    std::fs::write(&file, text)?;
    Ok(file)
}

/// Durable compose + decompose cycles (each waits for the reconciler's outcome).
fn compose_decompose(dir: &Path, duration: Duration) -> anyhow::Result<(f64, u64)> {
    let topology = bench_topology(dir)?;
    let options = ServeOptions {
        data_dir: dir.join("serve"),
        fabric: FabricChoice::Sim {
            topology: Some(topology),
            seed: 1,
        },
        api: None,
        identity: None,
        snapshots: true,
        machine: None,
    };
    let running = serve::start(options)?;
    let core = running.core().context("core running")?;
    core.submit(Command::appliance(Verb::CreateTenant {
        name: "bench".into(),
    }))?;
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    // Submits a command and waits for the outcome of the operation it started.
    let carry_out = |command: Command| -> anyhow::Result<()> {
        let name = command.name();
        let op = core
            .submit(command)?
            .op
            .with_context(|| format!("{name} started no operation"))?;
        core.wait_finished(op, Duration::from_secs(30))?;
        Ok(())
    };
    let cycles = on_clients_until(deadline, |i, _| {
        let system: appliance::model::SystemName = format!("bench-{i}").into();
        let compose = Verb::Compose {
            system: system.clone(),
            selection: Selection::Specific(vec![format!("gpu-{i}").into()]),
            create: Some(NewSystem {
                tenant: "bench".into(),
                role: Role::RenderNode,
            }),
            tenant: None,
            reservation: None,
        };
        carry_out(Command::appliance(compose))?;
        let decompose = Verb::Decompose {
            system,
            devices: None,
        };
        carry_out(Command::appliance(decompose))
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let metrics = core.metrics();
    eprintln!(
        "core: {} batches, {:.1} commands per batch, append p50={}us p99={}us, {} State copies, {} reused",
        metrics.batches,
        metrics.commands as f64 / metrics.batches.max(1) as f64,
        metrics.append.summary().p50_us,
        metrics.append.summary().p99_us,
        metrics.state_copies,
        metrics.states_reused
    );
    running.shutdown()?;
    Ok((cycles as f64 / elapsed, metrics.compose.summary().p99_us))
}

/// The baseline of `compose_decompose_per_s`, measured in the same run on the same disk: durable
/// appends per second of one event each, one after the other, straight to the journal. A cycle
/// waits for `DURABLE_STEPS_PER_CYCLE` durable points in turn, and one durable append can carry
/// every client's next step, so `CLIENTS / DURABLE_STEPS_PER_CYCLE` times this is the most
/// cycles per second the core could reach on this disk (`compose_decompose_bound_per_s`).
fn durable_appends(dir: &Path) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dir)?;
    let (log, _) = JournalLog::open(dir)?;
    let deadline = Instant::now() + Duration::from_millis(APPENDS_RUN_MS);
    let started = Instant::now();
    let mut appends = 0u64;
    while Instant::now() < deadline {
        log.append(vec![Event::TenantCreated {
            name: format!("append-{appends}").into(),
            made: Made::default(),
        }])?;
        appends += 1;
    }
    let per_s = appends as f64 / started.elapsed().as_secs_f64();
    log.close()?;
    Ok(per_s)
}

/// The second baseline of `compose_decompose_per_s`, same run, same disk: durable events per
/// second when `CLIENTS` threads each append one event and wait for it, again and again, straight
/// to the journal (the journal's group commit makes one sync of all that wait). That is how the
/// cycle's parties wait at each of its `DURABLE_STEPS_PER_CYCLE` durable points, so this divided
/// by them (`compose_decompose_journal_limit_per_s`) is what the journal alone allows the cycles
/// with nothing of the core in between; `main` measures it just before and just after the cycles
/// and takes the mean. It is below `compose_decompose_bound_per_s`, which assumes a sync of
/// `CLIENTS` waiters costs what a lone append does: waking them and taking their next appends
/// costs each sync as much again on this machine.
fn concurrent_appends(dir: &Path) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dir)?;
    let (log, _) = JournalLog::open(dir)?;
    let deadline = Instant::now() + Duration::from_millis(APPENDS_RUN_MS);
    let started = Instant::now();
    let events = on_clients_until(deadline, |client, n| {
        log.append(vec![Event::TenantCreated {
            name: format!("append-{client}-{n}").into(),
            made: Made::default(),
        }])?;
        Ok(())
    })?;
    let per_s = events as f64 / started.elapsed().as_secs_f64();
    log.close()?;
    Ok(per_s)
}

/// Durable `create_tenant` commands per second through the core (16 concurrent clients, each
/// waiting for its answer) on a journal that already holds `prefilled` tenants.
fn create_tenants(dir: &Path, prefilled: u64) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dir)?;
    let (log, _) = JournalLog::open(dir)?;
    let names = (0..prefilled).map(|i| Event::TenantCreated {
        name: format!("prefilled-{i}").into(),
        made: Made::default(),
    });
    let mut batch = Vec::with_capacity(REPLAY_BATCH_EVENTS);
    for event in names {
        batch.push(event);
        if batch.len() == REPLAY_BATCH_EVENTS {
            log.append(std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        log.append(batch)?;
    }
    let log: Arc<dyn EventLog> = Arc::new(log);
    let (core, _) = Core::start(log.clone(), CoreConfig::default())?;
    let deadline = Instant::now() + Duration::from_millis(TENANT_RUN_MS);
    let started = Instant::now();
    let handle = core.handle();
    let commands = on_clients_until(deadline, |client, n| {
        handle.submit(Command::appliance(Verb::CreateTenant {
            name: format!("bench-{client}-{n}").into(),
        }))?;
        Ok(())
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let metrics = core.handle().metrics();
    eprintln!(
        "create_tenant with {prefilled} tenants before: {commands} commands, {} batches, {} State copies, {} reused",
        metrics.batches, metrics.state_copies, metrics.states_reused
    );
    let tenants = core.handle().state().tenants.len() as u64;
    if tenants != prefilled + commands {
        bail!("State holds {tenants} tenants, expected {prefilled} + {commands}");
    }
    core.stop();
    log.close()?;
    Ok(commands as f64 / elapsed)
}

/// Runs `step(client, n)` over and over on `CLIENTS` threads at once until `deadline` (`n`
/// counts that client's steps so far); returns the steps all of them finished.
fn on_clients_until(
    deadline: Instant,
    step: impl Fn(usize, u64) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<u64> {
    std::thread::scope(|scope| {
        let step = &step;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                scope.spawn(move || -> anyhow::Result<u64> {
                    let mut done = 0;
                    while Instant::now() < deadline {
                        step(client, done)?;
                        done += 1;
                    }
                    Ok(done)
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().map_err(|_| anyhow::anyhow!("client panicked"))?)
            .sum()
    })
}

/// A State with 10,000 devices on 8 switches and 1,000 systems holding 3 devices each.
fn big_state() -> anyhow::Result<State> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut state = State::default();
    let mut seq = 0;
    let mut apply = |state: &mut State, event: Event| -> anyhow::Result<()> {
        seq += 1;
        Ok(state.apply(seq, &event)?)
    };
    for port in 0..(PLACEMENT_SYSTEMS * 3 + 2000) as u16 {
        apply(
            &mut state,
            Event::PortDiscovered {
                port: PortId(port),
                switch: format!("sw{}", port % 8).into(),
                slot: u32::from(port),
            },
        )?;
    }
    for i in 0..PLACEMENT_DEVICES {
        let (kind, capacity) = match i % 4 {
            0 => (
                DeviceKind::Gpu,
                [16u64, 24, 48, 80][rng.gen_range(0..4)] << 30,
            ),
            1 => (
                DeviceKind::Nvme,
                [1u64, 2, 4, 8][rng.gen_range(0..4)] * 1_000_000_000_000,
            ),
            2 => (DeviceKind::Nic, 0),
            _ => (DeviceKind::Hba, 0),
        };
        let rdma = kind == DeviceKind::Nic && rng.gen_bool(0.5);
        apply(
            &mut state,
            Event::DeviceDiscovered {
                facts: synth::device_facts(
                    format!("d{i}"),
                    kind,
                    capacity,
                    format!("sw{}", rng.gen_range(0..8)),
                    rdma,
                ),
            },
        )?;
    }
    apply(
        &mut state,
        Event::TenantCreated {
            name: "t".into(),
            made: Made::default(),
        },
    )?;
    let ports: Vec<PortId> = state.ports.keys().copied().collect();
    for s in 0..PLACEMENT_SYSTEMS {
        let name = format!("s{s}");
        apply(
            &mut state,
            Event::SystemCreated {
                name: name.clone().into(),
                tenant: "t".into(),
                role: Role::Workstation,
                made: Made::default(),
            },
        )?;
        let devices = (0..3)
            .map(|k| (format!("d{}", s * 3 + k).into(), ports[s * 3 + k]))
            .collect();
        let op = OperationId(s as u64);
        apply(
            &mut state,
            Event::ComposeRequested {
                op,
                system: name.into(),
                devices,
                made: Made::default(),
            },
        )?;
        apply(&mut state, Event::ComposeCompleted { op })?;
    }
    Ok(state)
}

/// p50 and p99 of one constrained placement.
fn placement() -> anyhow::Result<(u64, u64)> {
    let state = big_state()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut times = Vec::with_capacity(PLACEMENT_RUNS);
    for _ in 0..PLACEMENT_RUNS {
        let gpu_min = [0u64, 24, 48][rng.gen_range(0..3)] << 30;
        let wants = vec![
            Want::of(DeviceKind::Gpu, rng.gen_range(1..=4)).at_least(gpu_min),
            Want::of(DeviceKind::Nvme, 1).at_least(2_000_000_000_000),
            Want::of(DeviceKind::Nic, 1).rdma(),
        ];
        let started = Instant::now();
        let placed = place(&state, &wants)?;
        times.push(started.elapsed());
        std::hint::black_box(placed);
    }
    times.sort();
    let quantile_us = |q: usize| times[times.len() * q / 100].as_micros() as u64;
    Ok((quantile_us(50), quantile_us(99)))
}

/// Writes `events` domain events to a journal, then times rebuilding State from it.
fn replay(dir: &Path, events: u64) -> anyhow::Result<(u64, u64)> {
    synth::write_journal(dir, events)?;
    let started = Instant::now();
    let (log, _) = JournalLog::open(dir)?;
    let (state, report) = recover(&log)?;
    let replay_ms = started.elapsed().as_millis() as u64;
    if report.events_replayed != events {
        bail!("replayed {} events, wrote {events}", report.events_replayed);
    }
    std::hint::black_box(state);
    log.close()?;
    let memory = Arc::new(MemoryLog::with_clock(0));
    for chunk in synth::cycle_events(events)
        .collect::<Vec<_>>()
        .chunks(REPLAY_BATCH_EVENTS)
    {
        memory.append(chunk.to_vec())?;
    }
    let started = Instant::now();
    let (state, _) = recover(memory.as_ref())?;
    let apply_ms = started.elapsed().as_millis() as u64;
    std::hint::black_box(state);
    Ok((replay_ms, apply_ms))
}
