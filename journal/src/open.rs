//! Opening a journal directory: rules 1 to 10 of `recovery`, in order, and the open handle.

use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};

use crate::commit::Writer;
use crate::layout::{Checkpoint, Layout};
use crate::recovery::{self, ScanError, Scanned};
use crate::store::{Chain, Store};
use crate::{fsio, snapshot, Config, Error, OpenReport};

/// An open journal: its directory, sled store and write side.
#[derive(Debug)]
pub struct Opened {
    pub layout: Layout,
    pub store: Store,
    pub writer: Writer,
    /// Newest schema version stored (for the checkpoint; raised by appends).
    pub version_max: AtomicU16,
}

/// Opens `dir`, creating it if absent (rule 1) and applying the recovery rules.
pub fn open(
    dir: &Path,
    config: &Config,
    schema_max: Option<u16>,
) -> Result<(Opened, OpenReport), Error> {
    let layout = Layout::new(dir);
    prepare_dir(&layout, true)?;
    let mut notes = Vec::new();
    let checkpoint = read_checkpoint(&layout, &mut notes)?;
    let store = Store::open(&layout.store(), config.cache_capacity_bytes)?;
    let (last, head, version_max) = recover(&layout, &store, checkpoint, schema_max, &mut notes)?;
    let fresh = Checkpoint {
        sequence: last,
        chain: head,
        version_max,
    };
    if checkpoint != Some(fresh) {
        layout.write_checkpoint(fresh)?;
    }
    let writer = Writer::new(
        store.clone(),
        layout.store(),
        last,
        head,
        config.group_commit_events_max,
    );
    let report = OpenReport {
        last_sequence: last,
        chain_head: head,
        notes,
    };
    let version_max = AtomicU16::new(version_max);
    Ok((
        Opened {
            layout,
            store,
            writer,
            version_max,
        },
        report,
    ))
}

/// Rules 1 to 3: the directory exists (or is created) and is a journal of a known format.
pub fn prepare_dir(layout: &Layout, create: bool) -> Result<(), Error> {
    if !layout.dir.exists() {
        if !create {
            return Err(Error::Missing {
                dir: layout.dir.clone(),
            });
        }
        fsio::create_dir_durable(&layout.dir)?;
        return layout.write_marker();
    }
    if layout.read_marker()?.is_some() {
        return Ok(());
    }
    // A `.tmp` file alone is what an interrupted creation leaves (marker written, not renamed).
    let names = layout.entry_names();
    if names.iter().all(|n| n.ends_with(".tmp")) && create {
        return layout.write_marker();
    }
    let found = if names.is_empty() {
        "nothing".to_string()
    } else {
        names.join(", ")
    };
    Err(Error::NotAJournal {
        dir: layout.dir.clone(),
        found,
    })
}

/// Reads the checkpoint (a damaged one is noted and ignored) and applies rule 4.
pub fn read_checkpoint(
    layout: &Layout,
    notes: &mut Vec<String>,
) -> Result<Option<Checkpoint>, Error> {
    let checkpoint = layout.read_checkpoint().unwrap_or_else(|why| {
        notes.push(format!("{why}; ignored"));
        None
    });
    if let Some(missing) = layout.missing_store_file() {
        if let Some(cp) = checkpoint {
            return Err(Error::StoreFileMissing {
                dir: layout.dir.clone(),
                missing,
                checkpoint_sequence: cp.sequence,
            });
        }
    }
    Ok(checkpoint)
}

/// Rules 5 to 11 on an open store: returns the last good sequence, chain head and newest
/// schema version stored.
fn recover(
    layout: &Layout,
    store: &Store,
    checkpoint: Option<Checkpoint>,
    schema_max: Option<u16>,
    notes: &mut Vec<String>,
) -> Result<(u64, u32, u16), Error> {
    let path = layout.store();
    let bound = store.last_stored(&path)?;
    let (loaded, snapshot_notes) = snapshot::newest_valid(layout, store, bound);
    notes.extend(snapshot_notes);
    let mut chain = loaded
        .map(|l| Chain::new(l.snapshot.sequence + 1, l.chain))
        .unwrap_or(Chain::new(1, 0));
    let mut version_max = 0;
    if let Some(cp) = checkpoint {
        // Rules 8 and 9; records up to the checkpoint were verified when it was written, so the
        // scan starts after it and replay re-verifies them as it reads them (rule 11).
        if let Some(supported) = schema_max.filter(|max| cp.version_max > *max) {
            return Err(Error::SchemaNewer {
                dir: layout.dir.clone(),
                version: cp.version_max,
                supported,
            });
        }
        recovery::check_checkpoint(store, bound, cp, &layout.dir)?;
        if cp.sequence >= chain.expected {
            chain = Chain::new(cp.sequence + 1, cp.chain);
        }
        version_max = cp.version_max;
    }
    let scanned =
        recovery::scan(store, chain, schema_max, &path).map_err(|e| scan_error(layout, e))?;
    if scanned.torn.is_some() {
        cut_tail(layout, store, &scanned, notes)?;
    }
    Ok((
        scanned.last,
        scanned.head,
        version_max.max(scanned.version_max),
    ))
}

/// Turns a refusing scan into the error the operator sees.
pub fn scan_error(layout: &Layout, error: ScanError) -> Error {
    match error {
        ScanError::Corrupt {
            bad, good_through, ..
        } => Error::Corrupt {
            dir: layout.dir.clone(),
            sequence: bad.sequence,
            problem: bad.problem,
            good_through,
        },
        ScanError::Newer {
            sequence,
            kind,
            version,
            supported,
        } => Error::NewerSchema {
            sequence,
            kind,
            version,
            supported,
        },
        ScanError::Store(e) => e,
    }
}

/// Rule 6: moves the torn tail's stored values to a side file, then removes them from the store
/// (keeping the intact records before the first bad one).
pub fn cut_tail(
    layout: &Layout,
    store: &Store,
    scanned: &Scanned,
    notes: &mut Vec<String>,
) -> Result<(), Error> {
    let Some(bad) = &scanned.torn else {
        return Ok(());
    };
    let cut = recovery::cut_after(store, scanned.last, &layout.store())?;
    let side = layout.write_aside("torn", bad.sequence, &cut.rest)?;
    replace_tail(layout, store, &cut)?;
    notes.push(format!(
        "torn tail cut at sequence {}: {}; {} stored value(s) moved to {}; the journal ends at {}",
        bad.sequence,
        bad.problem,
        cut.rest.len(),
        side.display(),
        scanned.last
    ));
    Ok(())
}

/// Removes the cut values from the store and stores the kept prefix, durably, in one batch.
pub fn replace_tail(layout: &Layout, store: &Store, cut: &recovery::Cut) -> Result<(), Error> {
    let path = layout.store();
    let mut batch = sled::Batch::default();
    for (key, _) in &cut.rest {
        batch.remove(key.as_slice());
    }
    if let Some((key, value)) = &cut.keep {
        batch.insert(key.as_slice(), value.as_slice());
    }
    let write_err = |reason: String| Error::Flush {
        path: path.clone(),
        reason,
    };
    crate::store::catch_sled(|| store.tree.apply_batch(batch))
        .map_err(write_err)?
        .map_err(|e| write_err(e.to_string()))?;
    crate::store::catch_sled(|| store.db.flush())
        .map_err(write_err)?
        .map_err(|e| write_err(e.to_string()))?;
    fsio::sync_tree(&path)
}

impl Opened {
    pub fn write_snapshot(&self, sequence: u64, state: &[u8]) -> Result<(), Error> {
        let (last, head) = self.writer.durable();
        if sequence == 0 || sequence > last {
            return Err(Error::SnapshotSequence {
                sequence,
                last_sequence: last,
            });
        }
        let crc = self
            .store
            .record_crc(sequence, &self.layout.store())?
            .map_err(|problem| Error::BadRecord { sequence, problem })?;
        snapshot::write(&self.layout, sequence, crc, state)?;
        self.write_checkpoint(last, head)
    }

    fn write_checkpoint(&self, sequence: u64, chain: u32) -> Result<(), Error> {
        let version_max = self.version_max.load(Ordering::Relaxed);
        self.layout.write_checkpoint(Checkpoint {
            sequence,
            chain,
            version_max,
        })
    }

    pub fn close(&self) -> Result<(), Error> {
        self.writer.sync()?;
        let (last, head) = self.writer.durable();
        self.write_checkpoint(last, head)
    }
}
