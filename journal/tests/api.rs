//! The journal's public API: sequences, batches, replay, concurrent appenders, the live tail,
//! snapshots, upcasting, and the committed fixture journal.

mod common;

use std::sync::Arc;

use common::{deposit, open, records, v1, State, TestEvent};
use journal::{Appended, Config, Error, Journal};

#[test]
fn journal_and_tail_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync::<Journal<TestEvent>>();
    assert_send::<journal::Tail<TestEvent>>();
}

#[test]
fn sequences_start_at_one_and_batches_are_contiguous() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, report) = open(dir.path());
    assert_eq!(
        (
            report.last_sequence,
            report.chain_head,
            journal.last_sequence(),
            journal.chain_head()
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(
        journal
            .append((1..=3).map(|c| deposit(1, c)).collect())
            .unwrap(),
        Appended { first: 1, last: 3 }
    );
    assert_eq!(
        journal.append(vec![deposit(1, 4), deposit(1, 5)]).unwrap(),
        Appended { first: 4, last: 5 }
    );
    assert_eq!(journal.last_sequence(), 5);
    let all = records(&journal, 1);
    assert_eq!(
        all.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(
        all.iter().map(|r| r.event.clone()).collect::<Vec<_>>(),
        (1..=5).map(|c| deposit(1, c)).collect::<Vec<_>>()
    );
    assert_eq!(journal.chain_head(), all[4].crc);
    assert!(all
        .iter()
        .all(|r| r.kind == 1 && r.version == 2 && r.timestamp_ms > 1_600_000_000_000));
    assert_eq!(records(&journal, 4), all[3..].to_vec());
    assert_eq!(records(&journal, 0), all);
    assert!(records(&journal, 6).is_empty());
}

#[test]
fn bad_batches_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        record_bytes_max: 128,
        ..common::config()
    };
    let (journal, _) = Journal::<TestEvent>::open(dir.path(), config).unwrap();
    assert!(matches!(journal.append(vec![]), Err(Error::EmptyBatch)));
    let big = TestEvent::Rename {
        account: 1,
        name: "x".repeat(200),
    };
    let e = journal.append(vec![deposit(1, 1), big]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::RecordTooLarge {
                kind: 2,
                bytes_max: 128,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(journal.last_sequence(), 0, "a refused batch writes nothing");
    journal.append(vec![deposit(1, 1)]).unwrap();
    assert_eq!(journal.last_sequence(), 1);
}

#[test]
fn reopen_finds_everything_and_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(dir.path());
    journal
        .append((1..=10).map(|c| deposit(1, c)).collect())
        .unwrap();
    let head = journal.chain_head();
    journal.close().unwrap();
    let (journal, report) = open(dir.path());
    assert_eq!((report.last_sequence, report.chain_head), (10, head));
    assert!(
        report.notes.is_empty(),
        "clean open has no notes: {:?}",
        report.notes
    );
    assert_eq!(
        journal.append(vec![deposit(1, 11)]).unwrap(),
        Appended {
            first: 11,
            last: 11
        }
    );
    assert_eq!(records(&journal, 1).len(), 11);
}

#[test]
fn concurrent_appenders_share_durable_writes_and_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(dir.path());
    let journal = Arc::new(journal);
    let (writers, appends) = (16u32, 40u64);
    let threads: Vec<_> = (1..=writers)
        .map(|writer| {
            let journal = Arc::clone(&journal);
            std::thread::spawn(move || {
                (1..=appends)
                    .map(|c| journal.append(vec![deposit(writer, c)]).unwrap().first)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut sequences: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    sequences.sort_unstable();
    assert_eq!(
        sequences,
        (1..=u64::from(writers) * appends).collect::<Vec<_>>(),
        "every append got its own sequence"
    );
    let state = common::fold_all(&journal);
    assert!(
        (1..=writers).all(|w| state.writers[&w] == (appends, appends)),
        "each writer's events in order: {:?}",
        state.writers
    );
    println!(
        "{} appends made durable in {} syncs",
        u64::from(writers) * appends,
        journal.durable_writes()
    );
}

#[test]
fn a_subscriber_sees_stored_then_live_records_and_ends_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(dir.path());
    journal
        .append((1..=3).map(|c| deposit(1, c)).collect())
        .unwrap();
    let mut tail = journal.subscribe(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let journal = Arc::new(journal);
    let writer = std::thread::spawn({
        let journal = Arc::clone(&journal);
        move || {
            for c in 4..=8 {
                journal.append(vec![deposit(1, c)]).unwrap();
            }
            drop(journal);
        }
    });
    let seen: Vec<u64> = runtime.block_on(async {
        let mut seen = Vec::new();
        while seen.len() < 7 {
            seen.push(
                tail.next()
                    .await
                    .expect("tail open")
                    .expect("tail record")
                    .sequence,
            );
        }
        seen
    });
    assert_eq!(seen, (2..=8).collect::<Vec<_>>());
    writer.join().unwrap();
    Arc::try_unwrap(journal)
        .expect("only owner")
        .close()
        .unwrap();
    assert!(
        runtime.block_on(tail.next()).is_none(),
        "the tail ends when the journal closes"
    );
}

#[test]
fn snapshots_round_trip_and_bad_ones_are_ignored_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(dir.path());
    journal
        .append((1..=20).map(|c| deposit(1, c)).collect())
        .unwrap();
    assert!(matches!(
        journal.write_snapshot(0, b"x"),
        Err(Error::SnapshotSequence { .. })
    ));
    assert!(matches!(
        journal.write_snapshot(21, b"x"),
        Err(Error::SnapshotSequence {
            last_sequence: 20,
            ..
        })
    ));
    let mut state = State::default();
    for record in records(&journal, 1).iter().take(12) {
        state.apply(record);
    }
    journal.write_snapshot(12, &state.to_bytes()).unwrap();
    let (snapshot, notes) = journal.load_snapshot();
    let snapshot = snapshot.expect("snapshot loads");
    assert_eq!(
        (snapshot.sequence, State::from_bytes(&snapshot.bytes)),
        (12, state)
    );
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(common::rebuild(&journal), common::fold_all(&journal));
    journal.close().unwrap();
    let path = dir.path().join("snapshots/snap-00000000000000000012.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&path, bytes).unwrap();
    let (journal, report) = open(dir.path());
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("snap-00000000000000000012.bin") && n.contains("crc mismatch")),
        "{:?}",
        report.notes
    );
    let (snapshot, notes) = journal.load_snapshot();
    assert!(
        snapshot.is_none() && notes.iter().any(|n| n.contains("replay from sequence 1")),
        "{notes:?}"
    );
    assert_eq!(common::rebuild(&journal), common::fold_all(&journal));
}

#[test]
fn the_snapshot_at_or_before_a_sequence_is_the_newest_one_not_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(dir.path());
    journal
        .append((1..=20).map(|c| deposit(1, c)).collect())
        .unwrap();
    journal.write_snapshot(12, b"at twelve").unwrap();
    journal.write_snapshot(18, b"at eighteen").unwrap();
    let at = |sequence| {
        let (snapshot, _) = journal.load_snapshot_at_or_before(sequence);
        snapshot.map(|s| (s.sequence, s.bytes))
    };
    assert_eq!(at(20), Some((18, b"at eighteen".to_vec())));
    assert_eq!(at(18), Some((18, b"at eighteen".to_vec())));
    assert_eq!(at(17), Some((12, b"at twelve".to_vec())));
    assert_eq!(at(11), None);
}

#[test]
fn old_events_are_upcast_on_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (old, _) = Journal::<v1::TestEvent>::open(dir.path(), common::config()).unwrap();
    old.append(vec![
        v1::TestEvent::Deposit {
            account: 3,
            amount: 70,
        },
        v1::TestEvent::Rename {
            account: 3,
            name: "render".into(),
        },
    ])
    .unwrap();
    old.close().unwrap();
    let (journal, _) = open(dir.path());
    journal.append(vec![deposit(1, 1)]).unwrap();
    let all = records(&journal, 1);
    assert_eq!(
        all.iter().map(|r| r.version).collect::<Vec<_>>(),
        vec![1, 1, 2]
    );
    assert_eq!(
        all[0].event,
        TestEvent::Deposit {
            account: 3,
            amount: 70,
            writer: 0,
            counter: 0
        }
    );
    assert_eq!(
        all[1].event,
        TestEvent::Rename {
            account: 3,
            name: "render".into()
        }
    );
    assert_eq!(all[2].event, deposit(1, 1));
}

/// The committed fixture: a journal written by this version (format 2, with records of schema
/// versions 1 and 2, in two stored values). Every later version must replay it. `JOURNAL_WRITE_FIXTURE=1` rewrites it.
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/journal-format2.txt"
);

fn fixture_events() -> (Vec<v1::TestEvent>, Vec<TestEvent>) {
    let old = vec![
        v1::TestEvent::Deposit {
            account: 1,
            amount: 500,
        },
        v1::TestEvent::Rename {
            account: 1,
            name: "london-gpu-pool".into(),
        },
    ];
    let new = vec![
        deposit(2, 1),
        TestEvent::Rename {
            account: 2,
            name: "los-angeles".into(),
        },
        deposit(2, 2),
    ];
    (old, new)
}

fn write_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = fixture_events();
    let (journal, _) = Journal::<v1::TestEvent>::open(dir.path(), common::config()).unwrap();
    journal.append(old).unwrap();
    journal.close().unwrap();
    let (journal, _) = open(dir.path());
    journal.append(new).unwrap();
    journal.close().unwrap();
    let mut text = String::from(
        "# journal format 2 stored values: <key hex> <value hex>; see journal/tests/api.rs\n",
    );
    for (key, value) in common::raw_records(dir.path()) {
        text.push_str(&format!("{} {}\n", hex(&key), hex(&value)));
    }
    std::fs::write(FIXTURE, text).unwrap();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("fixture hex"))
        .collect()
}

#[test]
fn the_committed_fixture_journal_replays() {
    if std::env::var_os("JOURNAL_WRITE_FIXTURE").is_some() {
        write_fixture();
    }
    let text = std::fs::read_to_string(FIXTURE)
        .expect("fixture present (JOURNAL_WRITE_FIXTURE=1 writes it)");
    let raw: Vec<(Vec<u8>, Vec<u8>)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            l.split_once(' ')
                .map(|(k, v)| (unhex(k), unhex(v)))
                .expect("fixture line")
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    common::import_raw(dir.path(), &raw);
    journal::inspect::verify(dir.path()).expect("fixture verifies");
    assert_eq!(raw.len(), 2, "one stored value per durable append");
    let (journal, report) = open(dir.path());
    assert_eq!(report.last_sequence, 5);
    let (old, new) = fixture_events();
    let expected: Vec<TestEvent> = old.into_iter().map(v1::upcast).chain(new).collect();
    assert_eq!(
        records(&journal, 1)
            .into_iter()
            .map(|r| r.event)
            .collect::<Vec<_>>(),
        expected
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        #[test]
        fn replay_from_any_sequence_returns_that_suffix(batches in proptest::collection::vec(1u64..20, 1..8), from in 0u64..120) {
            let dir = tempfile::tempdir().unwrap();
            let (journal, _) = open(dir.path());
            let mut counter = 1;
            for size in batches {
                let appended = journal.append((counter..counter + size).map(|c| deposit(1, c)).collect()).unwrap();
                prop_assert_eq!(appended, Appended { first: counter, last: counter + size - 1 });
                counter += size;
            }
            let all = records(&journal, 1);
            prop_assert_eq!(all.len() as u64, counter - 1);
            let suffix: Vec<_> = all.iter().filter(|r| r.sequence >= from).cloned().collect();
            prop_assert_eq!(records(&journal, from), suffix);
        }

        #[test]
        fn any_old_event_is_upcast(amounts in proptest::collection::vec((0u32..50, any::<u32>()), 1..20)) {
            let dir = tempfile::tempdir().unwrap();
            let old: Vec<_> = amounts.iter().map(|&(account, amount)| v1::TestEvent::Deposit { account, amount }).collect();
            let (journal, _) = Journal::<v1::TestEvent>::open(dir.path(), common::config()).unwrap();
            journal.append(old.clone()).unwrap();
            journal.close().unwrap();
            let (journal, _) = open(dir.path());
            let events: Vec<_> = records(&journal, 1).into_iter().map(|r| r.event).collect();
            prop_assert_eq!(events, old.into_iter().map(v1::upcast).collect::<Vec<_>>());
        }

        #[test]
        fn snapshot_bytes_round_trip(state in proptest::collection::vec(any::<u8>(), 0..5000), at in 1u64..10) {
            let dir = tempfile::tempdir().unwrap();
            let (journal, _) = open(dir.path());
            journal.append((1..=10).map(|c| deposit(1, c)).collect()).unwrap();
            journal.write_snapshot(at, &state).unwrap();
            let (snapshot, notes) = journal.load_snapshot();
            let snapshot = snapshot.unwrap();
            prop_assert!(notes.is_empty());
            prop_assert_eq!((snapshot.sequence, snapshot.bytes), (at, state));
        }
    }
}

#[test]
fn one_append_larger_than_a_stored_value_is_split_and_reads_back_whole_after_reopen() {
    // 400 renames of 200 bytes each: about 90 KiB in one group commit, so several stored values
    // written in one sled batch (a one-value group is a plain insert; both paths meet here).
    let dir = tempfile::tempdir().unwrap();
    let name = "n".repeat(200);
    let events: Vec<TestEvent> = (0..400)
        .map(|account| TestEvent::Rename {
            account,
            name: name.clone(),
        })
        .collect();
    {
        let (journal, _) = open(dir.path());
        assert_eq!(journal.append(vec![deposit(1, 1)]).unwrap().last, 1);
        assert_eq!(
            journal.append(events.clone()).unwrap(),
            Appended {
                first: 2,
                last: 401
            }
        );
        assert_eq!(journal.append(vec![deposit(1, 2)]).unwrap().last, 402);
        journal.close().unwrap();
    }
    let (journal, report) = open(dir.path());
    assert_eq!(report.last_sequence, 402);
    let all = records(&journal, 1);
    assert_eq!(all.len(), 402);
    assert_eq!(
        all[1..401]
            .iter()
            .map(|r| r.event.clone())
            .collect::<Vec<_>>(),
        events
    );
    assert_eq!(records(&journal, 200).len(), 203);
    assert_eq!(journal.chain_head(), all[401].crc);
}
