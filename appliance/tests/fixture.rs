//! The committed fixture journals of domain events (tests/fixtures/journal-v<N>, one per event
//! schema version) must replay under every later build into their committed State
//! (tests/fixtures/journal-v<N>.state.json). They are frozen: this test only reads them. A new
//! schema version gets a new fixture, written once by a separate tool:
//! `cargo run -p appliance --example write_fixture -- appliance/tests/fixtures`.

use std::path::{Path, PathBuf};

use appliance::core::log::{EventLog, JournalLog};
use appliance::core::recover;
use appliance::model::event::SCHEMA_VERSION;
use appliance::model::State;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Replays fixture `version` and compares it with its committed State.
fn replays_into_its_committed_state(version: u16, kinds_expected: usize) {
    let name = format!("journal-v{version}");
    let scratch = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixtures().join(&name), scratch.path());
    let (log, _) = JournalLog::open(scratch.path()).expect("the fixture journal opens");
    let (state, report) = recover(&log).expect("the fixture journal replays");
    assert!(report.events_replayed > 50, "{name}: {report}");
    let file = fixtures().join(format!("{name}.state.json"));
    let mut expected: State =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read state"))
            .expect("state json");
    // The free pool's index is derived, and not part of the JSON form.
    expected.reindex();
    assert_eq!(state, expected, "{name}");
    assert_eq!(state.check_invariants(), Ok(()), "{name}");
    let kinds: std::collections::BTreeSet<u16> = log
        .replay(1)
        .map(|l| l.expect("replay").event.kind_number())
        .collect();
    assert_eq!(
        kinds.len(),
        kinds_expected,
        "{name} holds every event kind of its schema: {kinds:?}"
    );
}

#[test]
fn the_schema_1_fixture_replays_into_its_committed_state() {
    replays_into_its_committed_state(1, 24);
}

#[test]
fn the_current_schema_fixture_replays_into_its_committed_state() {
    assert_eq!(
        SCHEMA_VERSION, 2,
        "a new schema version needs its own fixture (and test)"
    );
    replays_into_its_committed_state(SCHEMA_VERSION, 33);
}
