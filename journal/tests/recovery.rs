//! Recovery rules (one scenario per row of `journal::recovery::RULES`), corruption of every
//! kind, damaged sled files, and the operator tools (verify, stats, raw records, salvage).

mod common;

use std::path::Path;

use common::{deposit, filled, open, tamper, TestEvent};
use journal::recovery::{Action, RULES};
use journal::{inspect, Error, Journal};

fn open_result(dir: &Path) -> Result<(Journal<TestEvent>, journal::OpenReport), Error> {
    Journal::<TestEvent>::open(dir, common::config())
}

/// Open, then replay everything (as the appliance does at boot): the number of records.
fn open_and_replay(dir: &Path) -> Result<usize, Error> {
    let (journal, _) = open_result(dir)?;
    let records = journal.replay(1).collect::<Result<Vec<_>, _>>()?;
    Ok(records.len())
}

/// Sets up the situation of a rule, opens, and returns what open did.
fn scenario(rule: u8, dir: &Path) -> Action {
    match rule {
        1 => rule_1_create(dir),
        2 => rule_2_not_a_journal(dir),
        3 => rule_3_newer_format(dir),
        4 => rule_4_store_file_missing(dir),
        5 => rule_5_clean(dir),
        6 => torn_tail(dir),
        7 => rule_7_corrupt_after_checkpoint(dir),
        8 => rule_8_newer_schema(dir),
        9 => rule_9_lost_acknowledged(dir),
        10 => rule_10_bad_snapshot(dir),
        11 => rule_11_corrupt_before_checkpoint(dir),
        other => panic!("recovery rule {other} has no test scenario: add one"),
    }
}

fn rule_1_create(dir: &Path) -> Action {
    let (journal, report) = open(&dir.join("new/journal"));
    assert_eq!((report.last_sequence, journal.last_sequence()), (0, 0));
    assert!(dir.join("new/journal/JOURNAL").is_file());
    Action::Create
}

fn rule_2_not_a_journal(dir: &Path) -> Action {
    std::fs::write(dir.join("photos.tar"), b"not a journal").unwrap();
    refused(
        open_result(dir),
        |e| matches!(e, Error::NotAJournal { found, .. } if found.contains("photos.tar")),
    )
}

fn rule_3_newer_format(dir: &Path) -> Action {
    std::fs::write(dir.join("JOURNAL"), "journal format 99\n").unwrap();
    refused(open_result(dir), |e| {
        matches!(
            e,
            Error::FormatNewer {
                found: 99,
                supported: 2,
                ..
            }
        )
    })
}

fn rule_4_store_file_missing(dir: &Path) -> Action {
    filled(dir, 10, 3);
    std::fs::remove_file(dir.join("store/db")).unwrap();
    refused(open_result(dir), |e| {
        matches!(
            e,
            Error::StoreFileMissing {
                checkpoint_sequence: 10,
                ..
            }
        )
    })
}

fn rule_5_clean(dir: &Path) -> Action {
    filled(dir, 10, 3);
    let (journal, report) = open(dir);
    assert_eq!(common::records(&journal, 1).len(), 10);
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    Action::Open
}

fn rule_7_corrupt_after_checkpoint(dir: &Path) -> Action {
    filled(dir, 10, 3);
    let (journal, _) = open(dir);
    journal
        .append((11..=20).map(|c| deposit(1, c)).collect())
        .unwrap();
    drop(journal); // no close: the checkpoint stays at 10, as after a crash
    flip_stored_byte(dir, 15, 30);
    refused(open_result(dir), |e| {
        matches!(
            e,
            Error::Corrupt {
                sequence: 15,
                good_through: 14,
                ..
            }
        )
    })
}

fn rule_8_newer_schema(dir: &Path) -> Action {
    let (future, _) = Journal::<common::v3::Future>::open(dir, common::config()).unwrap();
    future
        .append(vec![common::v3::Future { anything: 1 }])
        .unwrap();
    drop(future); // no close: the newer record is found by the scan
    refused(open_result(dir), |e| {
        matches!(
            e,
            Error::NewerSchema {
                sequence: 1,
                version: 3,
                supported: 2,
                ..
            }
        )
    });
    let (future, _) = Journal::<common::v3::Future>::open(dir, common::config()).unwrap();
    future.close().unwrap(); // the checkpoint now records version 3
    refused(open_result(dir), |e| {
        matches!(
            e,
            Error::SchemaNewer {
                version: 3,
                supported: 2,
                ..
            }
        )
    })
}

fn rule_9_lost_acknowledged(dir: &Path) -> Action {
    filled(dir, 10, 3);
    // Batches of 3: values at keys 1, 4, 7 and 10; the last two are lost.
    tamper(dir, |tree| {
        tree.remove(7u64.to_be_bytes()).unwrap();
        tree.remove(10u64.to_be_bytes()).unwrap();
    });
    refused(open_result(dir), |e| {
        matches!(
            e,
            Error::LostAcknowledged {
                checkpoint_sequence: 10,
                ..
            }
        )
    })
}

fn rule_10_bad_snapshot(dir: &Path) -> Action {
    filled(dir, 10, 3);
    let (journal, _) = open(dir);
    journal
        .write_snapshot(10, &common::fold_all(&journal).to_bytes())
        .unwrap();
    journal.close().unwrap();
    std::fs::write(
        dir.join("snapshots/snap-00000000000000000010.bin"),
        b"JSNP garbage",
    )
    .unwrap();
    let (journal, report) = open(dir);
    assert!(
        report.notes.iter().any(|n| n.contains("ignored")),
        "{:?}",
        report.notes
    );
    assert_eq!(common::rebuild(&journal), common::fold_all(&journal));
    Action::IgnoreSnapshot
}

fn rule_11_corrupt_before_checkpoint(dir: &Path) -> Action {
    filled(dir, 10, 3);
    flip_stored_byte(dir, 5, 30);
    let (journal, _) = open(dir);
    let replayed: Vec<_> = journal.replay(1).collect();
    assert_eq!(replayed.len(), 5, "four good records, then the error");
    assert!(
        matches!(
            &replayed[4],
            Err(Error::Corrupt {
                sequence: 5,
                good_through: 4,
                ..
            })
        ),
        "{:?}",
        replayed[4]
    );
    Action::RefuseOnReplay
}

fn refused(
    result: Result<(Journal<TestEvent>, journal::OpenReport), Error>,
    expected: impl Fn(&Error) -> bool,
) -> Action {
    match result {
        Ok(_) => panic!("open succeeded but should have refused"),
        Err(e) => {
            assert!(expected(&e), "unexpected error: {e}");
            Action::Refuse
        }
    }
}

/// Stored values after the checkpoint whose bytes are torn (truncated, garbage): cut and kept
/// aside.
fn torn_tail(dir: &Path) -> Action {
    filled(dir, 10, 3);
    let raw = common::raw_records(dir);
    let ten = raw[3].1.clone();
    tamper(dir, |tree| {
        tree.insert(11u64.to_be_bytes(), &ten[..ten.len() - 7])
            .unwrap();
        tree.insert(12u64.to_be_bytes(), b"\xb7\x01 torn".as_slice())
            .unwrap();
    });
    let (journal, report) = open(dir);
    assert_eq!(report.last_sequence, 10);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("torn tail cut at sequence 11") && n.contains("2 stored value(s)")),
        "{:?}",
        report.notes
    );
    let aside: Vec<_> = std::fs::read_dir(dir.join("aside"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(aside.len(), 1, "one side file");
    let bytes = std::fs::read(aside[0].path()).unwrap();
    assert!(
        bytes.windows(5).any(|w| w == b" torn"),
        "the torn bytes are kept"
    );
    assert_eq!(
        journal.append(vec![deposit(1, 11)]).unwrap().first,
        11,
        "appends continue after the cut"
    );
    Action::CutTail
}

/// A torn last value whose first records are intact: they stay, the rest is cut.
#[test]
fn a_torn_value_keeps_its_intact_records() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), 4, 4);
    let (journal, _) = open(dir.path());
    journal
        .append((5..=10).map(|c| deposit(1, c)).collect())
        .unwrap();
    drop(journal); // no close: the checkpoint stays at 4, as after a crash
    tamper(dir.path(), |tree| {
        let (key, range) = common::locate_record(tree, 8);
        let value = tree.get(&key).unwrap().unwrap().to_vec();
        tree.insert(key, &value[..range.start + 5]).unwrap();
    });
    let (journal, report) = open(dir.path());
    assert_eq!(report.last_sequence, 7, "{:?}", report.notes);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("torn tail cut at sequence 8")),
        "{:?}",
        report.notes
    );
    assert_eq!(common::records(&journal, 1).len(), 7);
    assert_eq!(journal.append(vec![deposit(1, 8)]).unwrap().first, 8);
    assert_eq!(common::fold_all(&journal).writers[&1], (8, 8));
}

/// Flips one byte of the stored record `sequence`, at `offset` inside the record (from its end
/// if it is too short).
fn flip_stored_byte(dir: &Path, sequence: u64, offset: usize) {
    common::tamper_record(dir, sequence, |record| {
        let at = offset.min(record.len() - 1);
        record[at] ^= 0x01;
    });
}

#[test]
fn every_recovery_rule_behaves_as_its_table_row_says() {
    for rule in RULES {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            scenario(rule.id, dir.path()),
            rule.action,
            "rule {} ({})",
            rule.id,
            rule.finds
        );
    }
}

#[test]
fn corruption_messages_name_the_sequence_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), 50, 7);
    flip_stored_byte(dir.path(), 23, 25);
    let before = common::raw_records(dir.path());
    let message = open_and_replay(dir.path()).unwrap_err().to_string();
    assert!(
        message.contains("corrupt at sequence 23")
            && message.contains("1..=22")
            && message.contains("salvage"),
        "{message}"
    );
    let message = inspect::verify(dir.path()).unwrap_err().to_string();
    assert!(
        message.contains("sequence 23")
            && message.contains("crc mismatch")
            && message.contains("salvage"),
        "{message}"
    );
    assert_eq!(
        common::raw_records(dir.path()),
        before,
        "open and verify modify nothing on a corrupt journal"
    );
}

#[test]
fn a_gap_in_the_sequence_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), 20, 4);
    // Batches of 4: values at keys 1, 5, 9, 13 and 17.
    tamper(dir.path(), |tree| {
        tree.remove(9u64.to_be_bytes()).unwrap();
    });
    let e = open_and_replay(dir.path()).unwrap_err();
    assert!(
        matches!(&e, Error::Corrupt { sequence: 9, .. })
            && e.to_string().contains("record 9 is missing"),
        "{e}"
    );
}

#[test]
fn verify_and_stats_on_a_good_journal() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), 30, 4);
    let (journal, _) = open(dir.path());
    journal
        .write_snapshot(28, &common::fold_all(&journal).to_bytes())
        .unwrap();
    let head = journal.chain_head();
    journal.close().unwrap();
    let summary = inspect::verify(dir.path()).unwrap();
    assert_eq!(
        (
            summary.records,
            summary.first_sequence,
            summary.last_sequence,
            summary.chain_head
        ),
        (30, 1, 30, head)
    );
    let line = summary.to_string();
    assert!(
        !line.contains('\n')
            && line.contains("30 records")
            && line.contains("at sequence 28 (valid)"),
        "{line}"
    );
    let stats = inspect::stats(dir.path()).unwrap();
    assert_eq!(
        (
            stats.records,
            stats.last_sequence,
            stats.chain_head,
            stats.damage.clone()
        ),
        (30, 30, head, None)
    );
    assert!(stats.bytes_on_disk >= stats.store_bytes && stats.store_bytes > 0);
    assert!(stats.to_string().lines().count() >= 4, "{stats}");
}

#[test]
fn raw_records_give_every_record_for_dump() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), 12, 5);
    let raw: Vec<_> = inspect::raw_records(dir.path())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        raw.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>()
    );
    for record in &raw {
        let event =
            <TestEvent as journal::Event>::decode(record.kind, record.version, &record.payload)
                .unwrap();
        assert_eq!(event, deposit(1, record.sequence));
    }
    flip_stored_byte(dir.path(), 4, 40);
    let results: Vec<_> = inspect::raw_records(dir.path()).collect();
    assert_eq!(results.len(), 4, "three good records then the error");
    assert!(
        matches!(&results[3], Err(Error::BadRecord { sequence: 4, .. })),
        "{:?}",
        results[3]
    );
    let missing: Vec<_> = inspect::raw_records(&dir.path().join("nope")).collect();
    assert!(matches!(missing.as_slice(), [Err(Error::Missing { .. })]));
}

#[test]
fn salvage_keeps_the_valid_prefix_and_moves_the_rest_aside() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), 40, 8);
    let (journal, _) = open(dir.path());
    journal.write_snapshot(10, b"state at 10").unwrap();
    journal.write_snapshot(35, b"state at 35").unwrap();
    journal.close().unwrap();
    flip_stored_byte(dir.path(), 31, 12);
    let report = inspect::salvage(dir.path()).unwrap();
    assert_eq!(
        (
            report.kept_through,
            report.moved_records,
            report.acknowledged_lost_through
        ),
        (30, 10, Some(40))
    );
    assert_eq!(report.snapshots_moved.len(), 1);
    let text = report.to_string();
    assert!(
        text.contains("kept records 1..=30") && text.contains("31..=40"),
        "{text}"
    );
    let side = std::fs::read(report.side_file.as_ref().unwrap()).unwrap();
    assert_eq!(
        side.len() as u64,
        report.moved_bytes + 4 * 2,
        "side file holds every moved byte plus lengths: the values holding 25..=32 and 33..=40"
    );
    inspect::verify(dir.path()).unwrap();
    let (journal, report) = open(dir.path());
    assert_eq!(report.last_sequence, 30);
    assert_eq!(journal.load_snapshot().0.unwrap().sequence, 10);
    assert_eq!(
        inspect::salvage(&dir.path().join("nope"))
            .unwrap_err()
            .to_string(),
        format!(
            "no journal at {}: the directory does not exist",
            dir.path().join("nope").display()
        )
    );
}

#[test]
fn missing_and_foreign_directories_give_their_own_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        inspect::verify(&dir.path().join("absent")),
        Err(Error::Missing { .. })
    ));
    assert!(matches!(
        inspect::stats(&dir.path().join("absent")),
        Err(Error::Missing { .. })
    ));
    std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    let e = inspect::verify(dir.path()).unwrap_err();
    assert!(
        e.to_string().contains("is not a journal") && e.to_string().contains("notes.txt"),
        "{e}"
    );
}

/// Damage to sled's own files, as an operator or a disk might do it: the journal refuses with a
/// clear error (never a panic) and verify says so.
#[test]
fn damaged_store_files_are_reported_never_panicking() {
    for damage in [
        "overwrite a byte of an event",
        "truncate the db file",
        "delete the db file",
        "delete the conf file",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = open(dir.path());
        for c in 0..200u64 {
            journal
                .append(vec![TestEvent::Rename {
                    account: c as u32,
                    name: format!("UNIQUE-NAME-{c:05}"),
                }])
                .unwrap();
        }
        journal.close().unwrap();
        damage_file(dir.path(), damage);
        let verified = inspect::verify(dir.path());
        let opened = open_and_replay(dir.path());
        println!("{damage}: verify -> {verified:?}\n  open -> {opened:?}");
        let e = verified.expect_err("verify fails on a damaged journal");
        assert!(!e.to_string().is_empty());
        assert!(
            opened.is_err(),
            "{damage}: open and replay must refuse, got {opened:?}"
        );
    }
}

fn damage_file(dir: &Path, damage: &str) {
    let db = dir.join("store/db");
    match damage {
        "overwrite a byte of an event" => {
            let mut bytes = std::fs::read(&db).unwrap();
            let at = bytes
                .windows(17)
                .position(|w| w == b"UNIQUE-NAME-00100")
                .expect("event bytes in the db file");
            bytes[at + 12] = b'X';
            std::fs::write(&db, bytes).unwrap();
        }
        "truncate the db file" => {
            let len = std::fs::metadata(&db).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&db)
                .unwrap()
                .set_len(len / 3)
                .unwrap();
        }
        "delete the db file" => std::fs::remove_file(&db).unwrap(),
        "delete the conf file" => std::fs::remove_file(dir.join("store/conf")).unwrap(),
        other => panic!("unknown damage {other}"),
    }
}

#[test]
fn an_older_on_disk_format_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), 3, 3);
    std::fs::write(dir.path().join("JOURNAL"), "journal format 1\n").unwrap();
    let e = open_result(dir.path()).unwrap_err();
    assert!(
        matches!(&e, Error::ReadMarker { .. })
            && e.to_string().contains("format 1 is older")
            && e.to_string().contains("move this directory aside"),
        "{e}"
    );
    assert!(inspect::verify(dir.path()).is_err());
}

/// Any flipped bit of a stored value's header (magic, format, count, crc) is detected.
#[test]
fn any_flipped_bit_in_a_value_header_is_detected() {
    for bit in 0..10 * 8 {
        let dir = tempfile::tempdir().unwrap();
        filled(dir.path(), 9, 3);
        tamper(dir.path(), |tree| {
            let mut value = tree.get(4u64.to_be_bytes()).unwrap().unwrap().to_vec();
            value[bit / 8] ^= 1 << (bit % 8);
            tree.insert(4u64.to_be_bytes(), value).unwrap();
        });
        let opened = open_and_replay(dir.path());
        assert!(
            matches!(opened, Err(Error::Corrupt { sequence: 4, .. })),
            "header bit {bit}: {opened:?}"
        );
        assert!(inspect::verify(dir.path()).is_err(), "header bit {bit}");
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Any single flipped bit in any acknowledged record is detected by open + replay and verify
        /// (never a panic, never a silent success).
        #[test]
        fn any_flipped_bit_in_an_acknowledged_record_is_detected(sequence in 1u64..=20, offset in 0usize..64, bit in 0u8..8) {
            let dir = tempfile::tempdir().unwrap();
            filled(dir.path(), 20, 3);
            common::tamper_record(dir.path(), sequence, |record| {
                let at = offset % record.len();
                record[at] ^= 1 << bit;
            });
            let opened = open_and_replay(dir.path());
            prop_assert!(opened.is_err(), "open and replay accepted a flipped bit at sequence {}", sequence);
            prop_assert!(inspect::verify(dir.path()).is_err());
        }
    }
}

#[test]
fn an_open_waits_for_a_store_lock_let_go_soon_after() {
    // sled lets go of its lock from its own threads after the last handle is dropped; an open in
    // the same process meanwhile waits instead of failing (salvage right after a close did).
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), 12, 4);
    let (db, tree) = common::raw_tree(dir.path());
    let holder = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(tree);
        drop(db);
    });
    let opened = open_result(dir.path());
    holder.join().unwrap();
    let (journal, _) = opened.expect("the open waited for the lock");
    assert_eq!(journal.last_sequence(), 12);
}
