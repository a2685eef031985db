//! Shared test support: a small event type with two schema versions (to exercise upcasting), the
//! state it folds into, and helpers to open journals in temp dirs.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

pub mod child;

use std::collections::BTreeMap;
use std::path::Path;

use journal::{Config, DecodeError, Event, Journal, Record};
use serde::{Deserialize, Serialize};

/// The current (version 2) test event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TestEvent {
    /// Kind 1. Version 1 had no `writer`/`counter` and a u32 amount.
    Deposit {
        account: u32,
        amount: u64,
        writer: u32,
        counter: u64,
    },
    /// Kind 2. Unchanged since version 1.
    Rename { account: u32, name: String },
}

impl Event for TestEvent {
    const SCHEMA_VERSION: u16 = 2;

    fn kind(&self) -> u16 {
        match self {
            TestEvent::Deposit { .. } => 1,
            TestEvent::Rename { .. } => 2,
        }
    }

    fn kind_name(kind: u16) -> Option<&'static str> {
        match kind {
            1 => Some("Deposit"),
            2 => Some("Rename"),
            _ => None,
        }
    }

    fn decode(kind: u16, version: u16, payload: &[u8]) -> Result<Self, DecodeError> {
        let bad = |e: bincode::Error| DecodeError::Payload {
            kind,
            version,
            reason: e.to_string(),
        };
        match version {
            1 => bincode::deserialize::<v1::TestEvent>(payload)
                .map(v1::upcast)
                .map_err(bad),
            2 => bincode::deserialize(payload).map_err(bad),
            _ => Err(DecodeError::UnknownVersion { kind, version }),
        }
    }
}

/// The schema as version 1 wrote it, and its upcaster.
pub mod v1 {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub enum TestEvent {
        Deposit { account: u32, amount: u32 },
        Rename { account: u32, name: String },
    }

    impl journal::Event for TestEvent {
        const SCHEMA_VERSION: u16 = 1;
        fn kind(&self) -> u16 {
            match self {
                TestEvent::Deposit { .. } => 1,
                TestEvent::Rename { .. } => 2,
            }
        }
        fn kind_name(kind: u16) -> Option<&'static str> {
            super::TestEvent::kind_name(kind)
        }
    }

    /// Version 1 → 2: deposits get writer 0 and counter 0.
    pub fn upcast(old: TestEvent) -> super::TestEvent {
        match old {
            TestEvent::Deposit { account, amount } => super::TestEvent::Deposit {
                account,
                amount: u64::from(amount),
                writer: 0,
                counter: 0,
            },
            TestEvent::Rename { account, name } => super::TestEvent::Rename { account, name },
        }
    }
}

/// A schema from the future, to check that this build refuses it.
pub mod v3 {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Future {
        pub anything: u64,
    }

    impl journal::Event for Future {
        const SCHEMA_VERSION: u16 = 3;
        fn kind(&self) -> u16 {
            9
        }
        fn kind_name(_: u16) -> Option<&'static str> {
            Some("Future")
        }
    }
}

/// State folded from test events: balances and names per account, and per writer the last
/// counter and number of deposits.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize
)]
pub struct State {
    pub balances: BTreeMap<u32, u64>,
    pub names: BTreeMap<u32, String>,
    pub writers: BTreeMap<u32, (u64, u64)>,
    pub applied_through: u64,
}

impl State {
    pub fn apply(&mut self, record: &Record<TestEvent>) {
        assert_eq!(
            record.sequence,
            self.applied_through + 1,
            "records applied in order without gaps"
        );
        match &record.event {
            TestEvent::Deposit {
                account,
                amount,
                writer,
                counter,
            } => {
                *self.balances.entry(*account).or_default() += amount;
                let entry = self.writers.entry(*writer).or_default();
                *entry = (*counter, entry.1 + 1);
            }
            TestEvent::Rename { account, name } => {
                self.names.insert(*account, name.clone());
            }
        }
        self.applied_through = record.sequence;
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        rkyv::to_bytes::<rkyv::rancor::Error>(self)
            .expect("state serializes")
            .to_vec()
    }

    pub fn from_bytes(bytes: &[u8]) -> State {
        rkyv::from_bytes::<State, rkyv::rancor::Error>(bytes).expect("snapshot state deserializes")
    }
}

/// A small config (small cache, so tests also exercise eviction).
pub fn config() -> Config {
    Config {
        cache_capacity_bytes: 8 << 20,
        ..Config::default()
    }
}

pub fn open(dir: &Path) -> (Journal<TestEvent>, journal::OpenReport) {
    Journal::open(dir, config()).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}

/// All records from `from`, panicking with the error if any fails.
pub fn records(journal: &Journal<TestEvent>, from: u64) -> Vec<Record<TestEvent>> {
    journal
        .replay(from)
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("replay from {from}: {e}"))
}

/// State rebuilt as the appliance does: newest valid snapshot, then replay of the tail.
pub fn rebuild(journal: &Journal<TestEvent>) -> State {
    let (snapshot, _notes) = journal.load_snapshot();
    let mut state = snapshot
        .map(|s| State::from_bytes(&s.bytes))
        .unwrap_or_default();
    for record in records(journal, state.applied_through + 1) {
        state.apply(&record);
    }
    state
}

/// State folded from every record from 1.
pub fn fold_all(journal: &Journal<TestEvent>) -> State {
    let mut state = State::default();
    for record in records(journal, 1) {
        state.apply(&record);
    }
    state
}

pub fn deposit(writer: u32, counter: u64) -> TestEvent {
    TestEvent::Deposit {
        account: (counter % 7) as u32,
        amount: counter % 1000 + 1,
        writer,
        counter,
    }
}

/// Opens the sled store of a closed journal directly, to tamper with stored records. sled's
/// background flusher of the just-closed journal may hold the store's file lock for a moment
/// after the close returns, so a lock conflict is retried until a deadline.
pub fn raw_tree(dir: &Path) -> (sled::Db, sled::Tree) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let db = loop {
        match sled::Config::new().path(dir.join("store")).open() {
            Ok(db) => break db,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::yield_now();
            }
            Err(e) => panic!("open the store directly: {e}"),
        }
    };
    let tree = db.open_tree(b"records").expect("records tree");
    (db, tree)
}

/// Runs `f` on the raw records tree of a closed journal, then flushes.
pub fn tamper(dir: &Path, f: impl FnOnce(&sled::Tree)) {
    let (db, tree) = raw_tree(dir);
    f(&tree);
    db.flush().expect("flush tampered store");
}

/// Where the record `sequence` lies in the store: the key of the value holding it, and the
/// record's byte range inside that value (the layout of `journal::frame`, 10-byte value header).
pub fn locate_record(tree: &sled::Tree, sequence: u64) -> (Vec<u8>, std::ops::Range<usize>) {
    let (key, value) = tree
        .range(..=sequence.to_be_bytes())
        .next_back()
        .expect("a stored value holds the record")
        .expect("raw read");
    let mut at = 10;
    while at + 30 <= value.len() {
        let stored = u64::from_be_bytes(value[at + 2..at + 10].try_into().unwrap());
        let payload = u32::from_be_bytes(value[at + 26..at + 30].try_into().unwrap()) as usize;
        let end = at + 30 + payload + 4;
        if stored == sequence {
            return (key.to_vec(), at..end);
        }
        at = end;
    }
    panic!("record {sequence} not found in the value at key {key:?}");
}

/// Changes the stored bytes of record `sequence` of a closed journal in place (its value's crc
/// is left stale, as damage on disk would).
pub fn tamper_record(dir: &Path, sequence: u64, f: impl FnOnce(&mut [u8])) {
    tamper(dir, |tree| {
        let (key, range) = locate_record(tree, sequence);
        let mut value = tree.get(&key).unwrap().unwrap().to_vec();
        f(&mut value[range]);
        tree.insert(key, value).unwrap();
    });
}

/// Every stored key and value of a closed journal.
pub fn raw_records(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let (_db, tree) = raw_tree(dir);
    tree.iter()
        .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("raw read"))
        .collect()
}

/// Creates a journal directory holding exactly these raw records (as a fixture import does).
pub fn import_raw(dir: &Path, records: &[(Vec<u8>, Vec<u8>)]) {
    std::fs::create_dir_all(dir).expect("create dir");
    std::fs::write(
        dir.join("JOURNAL"),
        format!("journal format {}\n", journal::FORMAT),
    )
    .expect("marker");
    let (db, tree) = raw_tree(dir);
    for (key, value) in records {
        tree.insert(key.as_slice(), value.as_slice())
            .expect("insert raw record");
    }
    db.flush().expect("flush imported store");
}

/// A journal with `n` deposits of writer 1, appended in batches of `batch`, closed.
pub fn filled(dir: &Path, n: u64, batch: u64) {
    let (journal, _) = open(dir);
    let mut counter = 1;
    while counter <= n {
        let last = (counter + batch - 1).min(n);
        journal
            .append((counter..=last).map(|c| deposit(1, c)).collect())
            .expect("append");
        counter = last + 1;
    }
    journal.close().expect("close");
}
