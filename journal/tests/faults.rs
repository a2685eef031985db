//! Fault injection with the `fail` crate at every write, flush, fsync and rename: each point
//! crashes a child process (abort at its n-th hit) at least once, with the crash test's checks;
//! and each point made to fail in-process gives a clear error, poisons the writer where the
//! state is unknown, and loses nothing acknowledged. Runs under a plain `cargo test` because the
//! crate dev-depends on itself with the `failpoints` feature.

mod common;

use common::{child, deposit};

/// Acknowledgements after which a child that has not hit its fail point is killed.
const ACKS_MAX: usize = 5_000;
const POINTS: [&str; 4] = [
    "journal::write",
    "journal::flush",
    "journal::fsync",
    "journal::rename",
];

fn main() {
    child::run_child_if_asked();
    crash_at_every_point();
    error_at_every_point();
    println!("faults test passed");
}

fn crash_at_every_point() {
    for point in POINTS {
        let dir = tempfile::tempdir().expect("temp dir");
        let journal_dir = dir.path().join("journal");
        let mut crashed = 0;
        for n in [1, 2, 3, 5, 8, 13, 21, 34] {
            let spec = format!("{point}:{n}");
            let outcome = child::run(
                child::spawn(&journal_dir, Some(&spec)),
                child::Kill::Backstop(ACKS_MAX),
            );
            assert!(
                outcome.hits.len() == 1 || outcome.acks.len() >= ACKS_MAX,
                "{spec}: the child died otherwise: {:?}",
                outcome.other
            );
            assert!(
                !outcome.other.iter().any(|l| l.contains("_ERROR")),
                "{spec}: child reported {:?}",
                outcome.other
            );
            crashed += outcome.hits.len();
            let acked = child::check_survivors(&journal_dir, &outcome);
            println!(
                "{spec}: crashed={} acked_events={acked}",
                !outcome.hits.is_empty()
            );
        }
        assert!(crashed > 0, "fail point {point} never crashed the child");
        journal::inspect::verify(&journal_dir)
            .unwrap_or_else(|e| panic!("verify after crashes at {point}: {e}"));
    }
}

fn error_at_every_point() {
    for point in POINTS {
        let dir = tempfile::tempdir().expect("temp dir");
        let (journal, _) = common::open(dir.path());
        let acked = journal
            .append((1..=10).map(|c| deposit(1, c)).collect())
            .expect("append before the fault");
        let state = common::fold_all(&journal).to_bytes();
        journal
            .write_snapshot(acked.last, &state)
            .expect("snapshot before the fault");
        fail::cfg(point, "return").expect("configure fail point");
        let append = journal.append(vec![deposit(1, 11)]);
        let snapshot = journal.write_snapshot(acked.last, &state);
        fail::remove(point);
        match point {
            "journal::rename" => {
                append.expect("append does not rename");
                let e = snapshot.expect_err("snapshot fails at rename");
                assert!(e.to_string().contains("rename"), "{e}");
            }
            _ => {
                let e = append.expect_err("append fails at the fault");
                println!("{point}: append error: {e}");
                let again = journal
                    .append(vec![deposit(1, 12)])
                    .expect_err("writer poisoned after a failed durable write");
                assert!(matches!(again, journal::Error::Poisoned { .. }), "{again}");
            }
        }
        drop(journal);
        let (journal, report) = common::open(dir.path());
        assert!(
            report.last_sequence >= acked.last,
            "{point}: acknowledged records survive (last {})",
            report.last_sequence
        );
        let records = common::records(&journal, 1);
        assert_eq!(
            records[..10]
                .iter()
                .map(|r| r.event.clone())
                .collect::<Vec<_>>(),
            (1..=10).map(|c| deposit(1, c)).collect::<Vec<_>>()
        );
        assert_eq!(
            common::rebuild(&journal),
            common::fold_all(&journal),
            "{point}: state after the fault"
        );
        journal.close().expect("close");
    }
}
