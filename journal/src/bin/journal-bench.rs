//! journal-bench: measures append, group commit, replay and open figures of the journal against
//! the raw fdatasync limit of the same disk, and writes them as one flat JSON object.
//!
//! `cargo run --release -p journal --bin journal-bench -- --json PATH [--dir DIR] [--seconds S]`
//! DIR (default `target/journal-bench`) must be on the disk to measure; the 1M-event journal is
//! left in DIR/journal-1m for `appliance journal verify`.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use journal::{Config, Event, Journal};
use serde::{Deserialize, Serialize};

/// Events in the replay and open measurements.
const REPLAY_EVENTS: u64 = 1_000_000;
/// Events after the snapshot in `open_1m_snapshot_ms`.
const SNAPSHOT_TAIL_EVENTS: u64 = 10_000;
/// Distinct keys of the bench state map.
const STATE_KEYS: u64 = 100_000;
const CONCURRENT_WRITERS: usize = 16;
/// Size of the preallocated file of the raw measurements.
const RAW_PREALLOCATED_MB: u64 = 64;

/// A device-observation-sized event.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum BenchEvent {
    Set { key: u32, value: u64, tag: [u8; 16] },
}

impl Event for BenchEvent {
    const SCHEMA_VERSION: u16 = 1;
    fn kind(&self) -> u16 {
        1
    }
    fn kind_name(kind: u16) -> Option<&'static str> {
        (kind == 1).then_some("Set")
    }
}

fn event(n: u64) -> BenchEvent {
    BenchEvent::Set {
        key: (n % STATE_KEYS) as u32,
        value: n,
        tag: *b"gpu-0000:41:00.0",
    }
}

/// The bench's state: a map folded from the events, snapshotted with rkyv.
#[derive(Debug, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct State {
    values: HashMap<u32, u64>,
    through: u64,
}

impl State {
    fn apply(&mut self, sequence: u64, event: &BenchEvent) {
        let BenchEvent::Set { key, value, .. } = event;
        self.values.insert(*key, *value);
        self.through = sequence;
    }
}

struct Args {
    json: PathBuf,
    dir: PathBuf,
    seconds: f64,
    /// Internal: run one open measurement in this (fresh) process and print it as JSON.
    phase: Option<String>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        json: PathBuf::new(),
        dir: PathBuf::from("target/journal-bench"),
        seconds: 3.0,
        phase: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--json" => args.json = PathBuf::from(value()?),
            "--dir" => args.dir = PathBuf::from(value()?),
            "--seconds" => args.seconds = value()?.parse().context("--seconds is a number")?,
            "--phase" => args.phase = Some(value()?),
            other => bail!("unknown argument {other}; usage: journal-bench --json PATH [--dir DIR] [--seconds S]"),
        }
    }
    if args.json.as_os_str().is_empty() && args.phase.is_none() {
        bail!("usage: journal-bench --json PATH [--dir DIR] [--seconds S]");
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if let Some(phase) = &args.phase {
        return run_phase(phase, &args.dir);
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let window = Duration::from_secs_f64(args.seconds);
    let mut out = serde_json::Map::new();
    let mut put = |key: &str, value: f64| {
        eprintln!("{key:>24} = {value:.1}");
        out.insert(
            key.to_string(),
            serde_json::json!((value * 10.0).round() / 10.0),
        );
    };
    put("raw_b1", raw(&args.dir.join("raw-b1"), 1, window)?);
    put("raw_b128", raw(&args.dir.join("raw-b128"), 128, window)?);
    put("append_b1", append(&args.dir.join("b1"), 1, window)?);
    put("append_b128", append(&args.dir.join("b128"), 128, window)?);
    let (concurrent, per_sync) = append_concurrent(&args.dir.join("concurrent"), window)?;
    put("append_concurrent", concurrent);
    put("append_concurrent_events_per_sync", per_sync);
    let big = args.dir.join("journal-1m");
    put("fill_1m_events_per_s", fill(&big, REPLAY_EVENTS)?);
    // Open measurements run in a fresh process each, as after a reboot (and so that the peak
    // RSS is theirs alone).
    let measured = in_child("open-1m", &big)?;
    for key in ["replay", "open_1m_ms", "rss_mb_1m"] {
        put(key, measured[key].as_f64().context("child figure")?);
    }
    write_snapshot(&big)?;
    let measured = in_child("open-snapshot", &big)?;
    for key in ["open_1m_snapshot_ms", "rss_mb_1m_snapshot"] {
        put(key, measured[key].as_f64().context("child figure")?);
    }
    put("disk_bytes_1m", dir_bytes(&big) as f64);
    let json = serde_json::to_string_pretty(&serde_json::Value::Object(out))?;
    std::fs::write(&args.json, json + "\n")
        .with_context(|| format!("write {}", args.json.display()))?;
    eprintln!(
        "wrote {}; the 1M-event journal is in {}",
        args.json.display(),
        big.display()
    );
    Ok(())
}

fn config() -> Config {
    Config {
        cache_capacity_bytes: 64 << 20,
        ..Config::default()
    }
}

/// The disk's limit: framed-record-sized writes to a plain file, each batch made durable with
/// fdatasync, at increasing offsets (an append-only log). The file is preallocated with written
/// zeros first, as sled preallocates its segments, so each fdatasync flushes data only and the
/// figure is the device's, not the file system's block allocation.
fn raw(path: &Path, batch: usize, window: Duration) -> Result<f64> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)?;
    let record = vec![0x5a_u8; 26 + bincode::serialized_size(&event(0))? as usize];
    let block: Vec<u8> = record
        .iter()
        .copied()
        .cycle()
        .take(record.len() * batch)
        .collect();
    let zeros = vec![0u8; 1 << 20];
    for mb in 0..RAW_PREALLOCATED_MB {
        file.write_all_at(&zeros, mb << 20)?;
    }
    file.sync_all()?;
    let (start, mut offset, mut events) = (Instant::now(), 0u64, 0u64);
    while start.elapsed() < window {
        if offset + block.len() as u64 > RAW_PREALLOCATED_MB << 20 {
            offset = 0;
        }
        file.write_all_at(&block, offset)?;
        file.sync_data()?;
        offset += block.len() as u64;
        events += batch as u64;
    }
    Ok(events as f64 / start.elapsed().as_secs_f64())
}

fn append(dir: &Path, batch: u64, window: Duration) -> Result<f64> {
    let (journal, _) = Journal::<BenchEvent>::open(dir, config())?;
    let (start, mut n) = (Instant::now(), 0u64);
    while start.elapsed() < window {
        journal.append((n..n + batch).map(event).collect())?;
        n += batch;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    journal.close()?;
    Ok(rate)
}

/// 16 writers, one event per call: throughput relies on group commit.
fn append_concurrent(dir: &Path, window: Duration) -> Result<(f64, f64)> {
    let (journal, _) = Journal::<BenchEvent>::open(dir, config())?;
    let journal = Arc::new(journal);
    let (stop, total) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let start = Instant::now();
    let threads: Vec<_> = (0..CONCURRENT_WRITERS)
        .map(|w| {
            let (journal, stop, total) =
                (Arc::clone(&journal), Arc::clone(&stop), Arc::clone(&total));
            std::thread::spawn(move || -> Result<()> {
                let mut n = w as u64;
                while !stop.load(Ordering::Relaxed) {
                    journal.append(vec![event(n)])?;
                    total.fetch_add(1, Ordering::Relaxed);
                    n += CONCURRENT_WRITERS as u64;
                }
                Ok(())
            })
        })
        .collect();
    while start.elapsed() < window {
        std::thread::park_timeout(window.saturating_sub(start.elapsed()));
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let events = total.load(Ordering::Relaxed) as f64;
    let per_sync = events / journal.durable_writes().max(1) as f64;
    Arc::try_unwrap(journal)
        .map_err(|_| anyhow::anyhow!("journal still shared"))?
        .close()?;
    Ok((events / elapsed, per_sync))
}

/// Writes `count` events in large batches; returns events per second.
fn fill(dir: &Path, count: u64) -> Result<f64> {
    let (journal, _) = Journal::<BenchEvent>::open(dir, config())?;
    let start = Instant::now();
    let mut n = 0;
    while n < count {
        let batch = 4096.min(count - n);
        journal.append((n..n + batch).map(event).collect())?;
        n += batch;
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    journal.close()?;
    Ok(rate)
}

/// Runs `--phase NAME --dir DIR` in a child process and parses the JSON it prints.
fn in_child(phase: &str, dir: &Path) -> Result<serde_json::Value> {
    let exe = std::env::current_exe()?;
    let output = std::process::Command::new(exe)
        .arg("--phase")
        .arg(phase)
        .arg("--dir")
        .arg(dir)
        .output()?;
    if !output.status.success() {
        bail!(
            "phase {phase} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).with_context(|| format!("phase {phase} output"))
}

fn run_phase(phase: &str, dir: &Path) -> Result<()> {
    let json = match phase {
        "open-1m" => {
            let (replay, open_ms, rss) = open_and_replay(dir)?;
            serde_json::json!({ "replay": replay, "open_1m_ms": open_ms, "rss_mb_1m": rss })
        }
        "open-snapshot" => {
            let ms = open_with_snapshot(dir)?;
            serde_json::json!({ "open_1m_snapshot_ms": ms, "rss_mb_1m_snapshot": peak_rss_mb()? })
        }
        other => bail!("unknown phase {other}"),
    };
    println!("{json}");
    Ok(())
}

/// Opens the 1M journal without a snapshot and rebuilds the state: (replay events/s, open +
/// rebuild ms, peak RSS MB during it).
fn open_and_replay(dir: &Path) -> Result<(f64, f64, f64)> {
    reset_peak_rss();
    let start = Instant::now();
    let (journal, report) = Journal::<BenchEvent>::open(dir, config())?;
    let replay_start = Instant::now();
    let mut state = State::default();
    for record in journal.replay(1) {
        let record = record?;
        state.apply(record.sequence, &record.event);
    }
    let replay_s = replay_start.elapsed().as_secs_f64();
    let open_ms = start.elapsed().as_secs_f64() * 1000.0;
    if state.through != REPLAY_EVENTS || report.last_sequence != REPLAY_EVENTS {
        bail!("replayed through {} of {REPLAY_EVENTS}", state.through);
    }
    let rss = peak_rss_mb()?;
    journal.close()?;
    Ok((REPLAY_EVENTS as f64 / replay_s, open_ms, rss))
}

/// Snapshots the state at 1M - 10k (not measured).
fn write_snapshot(dir: &Path) -> Result<()> {
    let at = REPLAY_EVENTS - SNAPSHOT_TAIL_EVENTS;
    let (journal, _) = Journal::<BenchEvent>::open(dir, config())?;
    let mut state = State::default();
    for record in journal.replay(1).take(at as usize) {
        let record = record?;
        state.apply(record.sequence, &record.event);
    }
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&state)?;
    journal.write_snapshot(at, &bytes)?;
    journal.close()?;
    Ok(())
}

/// Measures open + snapshot load + replay of the 10k-event tail.
fn open_with_snapshot(dir: &Path) -> Result<f64> {
    let start = Instant::now();
    let (journal, _) = Journal::<BenchEvent>::open(dir, config())?;
    let (snapshot, notes) = journal.load_snapshot();
    let snapshot = snapshot.with_context(|| format!("the snapshot was not loaded: {notes:?}"))?;
    let mut state = rkyv::from_bytes::<State, rkyv::rancor::Error>(&snapshot.bytes)?;
    for record in journal.replay(snapshot.sequence + 1) {
        let record = record?;
        state.apply(record.sequence, &record.event);
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if state.through != REPLAY_EVENTS {
        bail!("rebuilt through {} of {REPLAY_EVENTS}", state.through);
    }
    journal.close()?;
    Ok(ms)
}

/// Resets the kernel's peak-RSS counter (VmHWM) of this process.
fn reset_peak_rss() {
    if let Ok(mut f) = OpenOptions::new().write(true).open("/proc/self/clear_refs") {
        let _ = f.write_all(b"5");
    }
}

fn peak_rss_mb() -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM in /proc/self/status")?;
    Ok(kb / 1024.0)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
