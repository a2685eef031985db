//! Deterministic simulation: hundreds of seeded runs of random commands, injected fabric faults
//! and crashes (also between an intent and its outcome), every invariant checked after every
//! step. Every run takes the fixed seeds 0..SEEDS_DEFAULT and a fresh range of FRESH_SEEDS seeds
//! from a random start (printed first, so a failure reproduces). A failing seed reproduces alone
//! with `APPLIANCE_SIM_SEED=<seed> cargo test -p appliance --release --test simulation`;
//! `APPLIANCE_SIM_SEEDS=<n>` runs n fixed seeds, `APPLIANCE_SIM_FRESH=<start>` picks the fresh
//! range's start.

use appliance::testing::sim::FaultRates;
use appliance::testing::simulation::Harness;

const SEEDS_DEFAULT: u64 = 300;
/// Seeds of the fresh range each run adds.
const FRESH_SEEDS: u64 = 100;
const STEPS_PER_SEED: u64 = 250;
/// Replay-equality is O(log length); check it every this many steps (and at the end).
const REPLAY_CHECK_EVERY_STEPS: u64 = 25;

fn run_seed(seed: u64) -> Result<Harness, String> {
    let rates = FaultRates {
        refuse_ppm: 30_000,
        vanish_ppm: 10_000,
        bind_timeout_ppm: 20_000,
    };
    let mut harness = Harness::new(seed).with_faults(rates);
    for step in 1..=STEPS_PER_SEED {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| harness.step()));
        if let Err(panic) = outcome {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            return Err(format!(
                "seed {seed} step {step}: panic: {}\n{}",
                text.unwrap_or_default(),
                harness.trace()
            ));
        }
        harness
            .check(step % REPLAY_CHECK_EVERY_STEPS == 0)
            .map_err(|e| format!("seed {seed} step {step}: {e}\n{}", harness.trace()))?;
    }
    harness
        .settle()
        .map_err(|e| format!("seed {seed} after settling: {e}\n{}", harness.trace()))?;
    harness
        .check(true)
        .map_err(|e| format!("seed {seed} at the end: {e}\n{}", harness.trace()))?;
    Ok(harness)
}

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("APPLIANCE_SIM_SEED") {
        return vec![seed.trim().parse().expect("APPLIANCE_SIM_SEED is a number")];
    }
    let count = std::env::var("APPLIANCE_SIM_SEEDS")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(SEEDS_DEFAULT);
    let fresh = std::env::var("APPLIANCE_SIM_FRESH")
        .ok()
        .map(|n| n.trim().parse().expect("APPLIANCE_SIM_FRESH is a number"))
        .unwrap_or_else(|| rand::random::<u64>() >> 1);
    eprintln!(
        "simulation seeds: 0..{count} and {fresh}..{} (APPLIANCE_SIM_FRESH={fresh} repeats this run)",
        fresh + FRESH_SEEDS
    );
    (0..count).chain(fresh..fresh + FRESH_SEEDS).collect()
}

#[test]
fn seeded_runs_keep_every_invariant() {
    let mut failures = Vec::new();
    let mut totals = appliance::testing::simulation::RunStats::default();
    for seed in seeds() {
        match run_seed(seed) {
            Ok(h) => {
                totals.commands_accepted += h.stats.commands_accepted;
                totals.commands_refused += h.stats.commands_refused;
                totals.operations_completed += h.stats.operations_completed;
                totals.operations_failed += h.stats.operations_failed;
                totals.crashes += h.stats.crashes;
                totals.crashes_mid_operation += h.stats.crashes_mid_operation;
                totals.faults += h.stats.faults;
                totals.reflex_failovers += h.stats.reflex_failovers;
                totals.mirror_failovers += h.stats.mirror_failovers;
                totals.drain_failovers += h.stats.drain_failovers;
            }
            Err(e) => failures.push(e),
        }
    }
    eprintln!("simulation totals: {totals:?}");
    assert!(
        failures.is_empty(),
        "{} seeds failed; first:\n{}",
        failures.len(),
        failures[0]
    );
    // The runs must actually exercise what they claim to.
    assert!(
        totals.operations_completed > 0 && totals.operations_failed > 0,
        "{totals:?}"
    );
    assert!(
        totals.crashes_mid_operation > 0 && totals.commands_refused > 0,
        "{totals:?}"
    );
    assert!(
        totals.reflex_failovers > 0 && totals.mirror_failovers > 0,
        "the reflex never fired (or never for a gateway's mirror): {totals:?}"
    );
    assert!(
        totals.drain_failovers > 0,
        "no drain ever moved a system: {totals:?}"
    );
}

#[test]
fn same_seed_same_run() {
    let a = run_seed(42).expect("seed 42 passes");
    let b = run_seed(42).expect("seed 42 passes");
    assert_eq!(a.state, b.state, "a run is a function of its seed");
    assert_eq!(a.log.events(), b.log.events());
}
