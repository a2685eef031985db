//! Crash test: the test binary re-runs itself as a child that appends from several threads and
//! prints each acknowledged batch; the parent SIGKILLs it at random moments, reopens the journal
//! and checks that every acknowledged event survived, in order, with the chain and the rebuilt
//! state intact. `JOURNAL_CRASH_CYCLES` sets the number of cycles (default 200).

mod common;

use common::child::Kill;
use rand::{Rng, SeedableRng};

fn main() {
    common::child::run_child_if_asked();
    let cycles: usize = std::env::var("JOURNAL_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("JOURNAL_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    println!("crash test: {cycles} cycles, JOURNAL_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let journal_dir = dir.path().join("journal");
    let (mut acked_total, mut killed_during_open) = (0u64, 0usize);
    for cycle in 0..cycles {
        // Mostly kill after some acknowledgements; sometimes right after open, sometimes during it.
        let kill = match rng.gen_range(0..10) {
            0 => Kill::AtSpawn,
            1 => Kill::AfterAcks(0),
            _ => Kill::AfterAcks(rng.gen_range(1..40)),
        };
        let child = common::child::spawn(&journal_dir, None);
        let outcome = common::child::run(child, kill);
        killed_during_open += usize::from(!outcome.other.iter().any(|l| l.starts_with("OPENED")));
        assert!(
            !outcome
                .other
                .iter()
                .any(|l| l.starts_with("OPEN_ERROR") || l.contains("_ERROR")),
            "cycle {cycle}: child reported {:?}",
            outcome.other
        );
        acked_total += common::child::check_survivors(&journal_dir, &outcome);
        if cycle % 25 == 24 {
            let summary = journal::inspect::verify(&journal_dir)
                .unwrap_or_else(|e| panic!("cycle {cycle}: verify: {e}"));
            println!("cycle {}: {summary}", cycle + 1);
        }
    }
    let summary =
        journal::inspect::verify(&journal_dir).unwrap_or_else(|e| panic!("final verify: {e}"));
    println!("crash test passed: {cycles} cycles, {acked_total} acknowledged events checked, {killed_during_open} kills before OPENED; {summary}");
}
