//! Profiling aid: opens an existing journal (argv[1]) and replays it from 1, printing timings.
//! `cargo run --release -p journal --example open_replay -- DIR`; `CACHE_MB=N` sets sled's cache;
//! `FILL=N [BATCH=B]` instead appends N bench-like events in batches of B (default 4096).

use std::time::Instant;

use journal::{Config, Journal};

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum AnyEvent {
    Set { key: u32, value: u64, tag: [u8; 16] },
}

impl journal::Event for AnyEvent {
    const SCHEMA_VERSION: u16 = 1;
    fn kind(&self) -> u16 {
        1
    }
    fn kind_name(_: u16) -> Option<&'static str> {
        Some("Set")
    }
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: open_replay DIR"))?;
    if let Some(n) = std::env::var("FILL")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let (journal, _) = Journal::<AnyEvent>::open(dir.as_ref(), Config::default())?;
        let start = Instant::now();
        let mut i = 0;
        while i < n {
            let batch = std::env::var("BATCH")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(4096)
                .min(n - i);
            journal.append(
                (i..i + batch)
                    .map(|v| AnyEvent::Set {
                        key: (v % 100_000) as u32,
                        value: v,
                        tag: *b"gpu-0000:41:00.0",
                    })
                    .collect(),
            )?;
            i += batch;
        }
        println!("fill {n}: {:?}", start.elapsed());
        let start = Instant::now();
        journal.close()?;
        println!("close: {:?}", start.elapsed());
        return Ok(());
    }
    let start = Instant::now();
    let cache_mb: u64 = std::env::var("CACHE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let config = Config {
        cache_capacity_bytes: cache_mb << 20,
        ..Config::default()
    };
    let (journal, report) = Journal::<AnyEvent>::open(dir.as_ref(), config)?;
    println!(
        "open: {:?}, last {}, notes {:?}",
        start.elapsed(),
        report.last_sequence,
        report.notes
    );
    let start = Instant::now();
    let mut n = 0u64;
    for record in journal.replay(1) {
        record?;
        n += 1;
    }
    println!("replay {n}: {:?}", start.elapsed());
    Ok(())
}
