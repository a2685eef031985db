//! Recovery at open: the rules, as a table, and the scan of the store that applies them.
//!
//! | rule | what open finds                                                              | action                                   |
//! |------|------------------------------------------------------------------------------|------------------------------------------|
//! | 1    | the directory is missing or empty                                            | create a new journal                     |
//! | 2    | the directory is not empty and has no `JOURNAL` marker                       | refuse: `NotAJournal`                    |
//! | 3    | the marker names a newer on-disk format                                      | refuse: `FormatNewer`                    |
//! | 4    | a checkpoint exists but a sled store file is missing                         | refuse: `StoreFileMissing`               |
//! | 5    | every record from the start point is intact, contiguous and chained          | open                                     |
//! | 6    | bad records only at the tail: none after the first bad one is intact         | cut them, keep their bytes in `aside/`, note it |
//! | 7    | after the start point, a bad record, gap or chain break followed by an intact record | refuse: `Corrupt` naming the sequence |
//! | 8    | the checkpoint records, or the scan finds, a newer event schema version      | refuse: `SchemaNewer` / `NewerSchema`    |
//! | 9    | the store ends before the checkpoint, or its record there has another crc    | refuse: `LostAcknowledged`               |
//! | 10   | the newest snapshot is missing, damaged, or does not match the chain         | note it, try older ones, else replay from 1 |
//! | 11   | a bad record before the start point (verified at an earlier open)            | open; replay stops there with `Corrupt` naming the sequence |
//!
//! The start point is the record after the checkpoint or after the newest valid snapshot,
//! whichever is later (their chain value anchors the chain), or 1 without either. Records before
//! it were verified when the checkpoint was written and are verified again by `replay` as the
//! caller rebuilds its state (and by `inspect::verify`), so open does one pass over history, not
//! two, and a crash costs a scan of the records since the last checkpoint only. `RULES` mirrors
//! the table and the tests run a scenario per row.

use std::path::Path;

use crate::store::RawKv;
use crate::store::{catch_sled, Bad, Chain, Store};
use crate::{frame, Error};

/// What open does for a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Open,
    CutTail,
    IgnoreSnapshot,
    Refuse,
    /// Open succeeds; replay refuses when it reaches the damage.
    RefuseOnReplay,
}

/// One row of the recovery table.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub id: u8,
    pub finds: &'static str,
    pub action: Action,
}

/// The recovery table above, row by row.
pub const RULES: [Rule; 11] = [
    Rule {
        id: 1,
        finds: "directory missing or empty",
        action: Action::Create,
    },
    Rule {
        id: 2,
        finds: "non-empty directory without JOURNAL marker",
        action: Action::Refuse,
    },
    Rule {
        id: 3,
        finds: "marker of a newer on-disk format",
        action: Action::Refuse,
    },
    Rule {
        id: 4,
        finds: "checkpoint present, sled store file missing",
        action: Action::Refuse,
    },
    Rule {
        id: 5,
        finds: "all records intact, contiguous, chained",
        action: Action::Open,
    },
    Rule {
        id: 6,
        finds: "bad records only at the tail",
        action: Action::CutTail,
    },
    Rule {
        id: 7,
        finds: "bad record, gap or chain break followed by an intact record",
        action: Action::Refuse,
    },
    Rule {
        id: 8,
        finds: "newer event schema version",
        action: Action::Refuse,
    },
    Rule {
        id: 9,
        finds: "store ends before the checkpoint or differs at it",
        action: Action::Refuse,
    },
    Rule {
        id: 10,
        finds: "snapshot missing, damaged or off the chain",
        action: Action::IgnoreSnapshot,
    },
    Rule {
        id: 11,
        finds: "bad record before the start point",
        action: Action::RefuseOnReplay,
    },
];

/// How a scan of the store ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// Last good sequence and its crc (the chain head), or the start point's predecessor.
    pub last: u64,
    pub head: u32,
    /// Good records seen by this scan.
    pub records: u64,
    /// Highest schema version seen.
    pub version_max: u16,
    /// Rule 6: the first bad record of a torn tail, and the raw records from it to the end.
    pub torn: Option<(Bad, Vec<RawKv>)>,
}

/// Why a scan refuses.
#[derive(Debug)]
pub enum ScanError {
    /// Rule 7.
    Corrupt {
        bad: Bad,
        good_through: u64,
        head: u32,
    },
    /// Rule 8.
    Newer {
        sequence: u64,
        kind: u16,
        version: u16,
        supported: u16,
    },
    /// The store itself could not be read.
    Store(Error),
}

/// Scans records from `chain.expected` to the end, applying rules 5 to 8. `schema_max` is the
/// newest schema version the caller decodes (None: any).
pub fn scan(
    store: &Store,
    mut chain: Chain,
    schema_max: Option<u16>,
    path: &Path,
) -> Result<Scanned, ScanError> {
    let mut scanned = Scanned {
        last: chain.expected - 1,
        head: chain.prev_crc,
        records: 0,
        version_max: 0,
        torn: None,
    };
    let read_err = |reason: String| {
        ScanError::Store(Error::ReadStore {
            path: path.to_path_buf(),
            reason,
        })
    };
    // From the start, iterate every key (a stray key sorting before sequence 1 is found too).
    let mut iter = if chain.expected <= 1 {
        store.tree.iter()
    } else {
        store.tree.range(frame::key(chain.expected)..)
    };
    loop {
        let item = catch_sled(|| iter.next()).map_err(read_err)?;
        let Some(item) = item else { return Ok(scanned) };
        let (key, value) = item.map_err(|e| read_err(e.to_string()))?;
        match chain.check(&key, &value) {
            Ok(frame) => {
                if let Some(supported) = schema_max.filter(|max| frame.version > *max) {
                    let (sequence, kind, version) = (frame.sequence, frame.kind, frame.version);
                    return Err(ScanError::Newer {
                        sequence,
                        kind,
                        version,
                        supported,
                    });
                }
                scanned.version_max = scanned.version_max.max(frame.version);
                (scanned.last, scanned.head, scanned.records) =
                    (frame.sequence, frame.crc, scanned.records + 1);
            }
            Err(bad) => {
                let good_through = scanned.last;
                if bad.intact {
                    return Err(ScanError::Corrupt {
                        bad,
                        good_through,
                        head: scanned.head,
                    });
                }
                let rest = rest_of_tail(&mut iter, (key.to_vec(), value.to_vec()), path)?;
                if let Some(intact) = rest.iter().find_map(|(k, v)| frame::decode(k, v).ok()) {
                    let problem = format!(
                        "{}; yet record {} after it is intact",
                        bad.problem, intact.sequence
                    );
                    return Err(ScanError::Corrupt {
                        bad: Bad { problem, ..bad },
                        good_through,
                        head: scanned.head,
                    });
                }
                scanned.torn = Some((bad, rest));
                return Ok(scanned);
            }
        }
    }
}

/// The first bad record and every stored record after it, raw.
fn rest_of_tail(iter: &mut sled::Iter, first: RawKv, path: &Path) -> Result<Vec<RawKv>, ScanError> {
    let read_err = |reason: String| {
        ScanError::Store(Error::ReadStore {
            path: path.to_path_buf(),
            reason,
        })
    };
    let mut rest = vec![first];
    for item in iter {
        let (key, value) = item.map_err(|e| read_err(e.to_string()))?;
        rest.push((key.to_vec(), value.to_vec()));
    }
    Ok(rest)
}

/// Rule 9: the store must reach the checkpoint with the same chain value there.
pub fn check_checkpoint(
    store: &Store,
    store_last: u64,
    checkpoint: crate::layout::Checkpoint,
    dir: &Path,
) -> Result<(), Error> {
    let lost = |found: String| Error::LostAcknowledged {
        dir: dir.to_path_buf(),
        checkpoint_sequence: checkpoint.sequence,
        checkpoint_chain: checkpoint.chain,
        found,
    };
    if checkpoint.sequence == 0 {
        return Ok(());
    }
    if store_last < checkpoint.sequence {
        return Err(lost(format!("the store ends at sequence {store_last}")));
    }
    let value = store
        .get(checkpoint.sequence, dir)?
        .ok_or_else(|| lost("that record is missing".to_string()))?;
    match frame::decode(&frame::key(checkpoint.sequence), &value) {
        Ok(f) if f.crc == checkpoint.chain => Ok(()),
        Ok(f) => Err(lost(format!("the record there has crc {:#010x}", f.crc))),
        Err(e) => Err(lost(format!("the record there is damaged: {e}"))),
    }
}
