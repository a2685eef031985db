//! Group commit: many threads append; one of them (the leader) makes everything inserted so far
//! durable with one flush + fsync while the others wait on a condvar, then all return together.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::frame::{self, FrameFields};
use crate::store::{catch_sled, Store};
use crate::{fsio, Appended, Error};

/// One event ready to frame: kind, schema version, bincode payload.
#[derive(Debug)]
pub struct Encoded {
    pub kind: u16,
    pub version: u16,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
struct State {
    /// Last sequence inserted into sled (durable or not) and its crc.
    inserted: u64,
    inserted_crc: u32,
    /// Last durable (acknowledged) sequence and its crc.
    durable: u64,
    durable_crc: u32,
    /// A leader is flushing right now.
    flushing: bool,
    /// Set for good after a failed write or sync: nothing after it can be trusted.
    poisoned: Option<String>,
}

/// The write side of a journal.
#[derive(Debug)]
pub struct Writer {
    store: Store,
    store_dir: PathBuf,
    group_commit_events_max: usize,
    state: Mutex<State>,
    wake: Condvar,
    durable_tx: tokio::sync::watch::Sender<u64>,
    /// Group commits done (durable writes shared by all appenders waiting at the time).
    syncs: AtomicU64,
    /// fsyncs sled's files after its flush (one leader at a time; `close` too).
    syncer: Mutex<fsio::TreeSyncer>,
}

impl Writer {
    pub fn new(
        store: Store,
        store_dir: PathBuf,
        last: u64,
        head: u32,
        group_commit_events_max: usize,
    ) -> Writer {
        let state = State {
            inserted: last,
            inserted_crc: head,
            durable: last,
            durable_crc: head,
            flushing: false,
            poisoned: None,
        };
        Writer {
            store,
            store_dir: store_dir.clone(),
            group_commit_events_max: group_commit_events_max.max(1),
            state: Mutex::new(state),
            wake: Condvar::new(),
            durable_tx: tokio::sync::watch::channel(last).0,
            syncs: AtomicU64::new(0),
            syncer: Mutex::new(fsio::TreeSyncer::new(&store_dir)),
        }
    }

    /// Last durable sequence and its crc.
    pub fn durable(&self) -> (u64, u32) {
        let state = self.lock();
        (state.durable, state.durable_crc)
    }

    /// Group commits done since open.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.durable_tx.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves State consistent (fields are set together).
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.wake
            .wait(guard)
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Inserts the batch atomically after the current tail and returns once it is durable.
    pub fn append(&self, events: Vec<Encoded>, timestamp_ms: u64) -> Result<Appended, Error> {
        let count = events.len() as u64;
        let mut state = self.lock();
        // Back-pressure: at most group_commit_events_max events wait for one flush (a larger
        // single batch still goes alone).
        loop {
            if let Some(reason) = &state.poisoned {
                return Err(Error::Poisoned {
                    reason: reason.clone(),
                });
            }
            let pending = state.inserted - state.durable;
            if pending == 0 || pending + count <= self.group_commit_events_max as u64 {
                break;
            }
            state = self.wait(state);
        }
        let first = state.inserted + 1;
        let (batch, last_crc) = build_batch(&events, first, state.inserted_crc, timestamp_ms);
        let last = first + count - 1;
        if let Err(reason) = self.insert(batch) {
            let error = Error::WriteStore {
                first,
                last,
                reason,
            };
            state.poisoned = Some(error.to_string());
            self.wake.notify_all();
            return Err(error);
        }
        (state.inserted, state.inserted_crc) = (last, last_crc);
        self.wait_durable(state, last)?;
        Ok(Appended { first, last })
    }

    fn insert(&self, batch: sled::Batch) -> Result<(), String> {
        fail::fail_point!("journal::write", |_| Err(
            "fail point journal::write".to_string()
        ));
        catch_sled(|| self.store.tree.apply_batch(batch))?.map_err(|e| e.to_string())
    }

    /// Waits until `target` is durable, becoming the leader that flushes when nobody is.
    fn wait_durable<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        target: u64,
    ) -> Result<(), Error> {
        loop {
            if state.durable >= target {
                return Ok(());
            }
            if let Some(reason) = &state.poisoned {
                return Err(Error::Poisoned {
                    reason: reason.clone(),
                });
            }
            if state.flushing {
                state = self.wait(state);
                continue;
            }
            state.flushing = true;
            let (upto, upto_crc) = (state.inserted, state.inserted_crc);
            drop(state);
            let result = self.sync();
            state = self.lock();
            state.flushing = false;
            match result {
                Ok(()) => {
                    self.syncs.fetch_add(1, Ordering::Relaxed);
                    (state.durable, state.durable_crc) = (upto, upto_crc);
                    self.durable_tx.send_replace(upto);
                }
                Err(e) => {
                    state.poisoned = Some(e.to_string());
                    self.wake.notify_all();
                    return Err(e);
                }
            }
            self.wake.notify_all();
        }
    }

    /// One durable write: sled's flush, then fsync of its files and directories (see
    /// `fsio::TreeSyncer` for why the flush alone is not durable on Linux).
    pub fn sync(&self) -> Result<(), Error> {
        let _span = tracing::trace_span!("journal_sync").entered();
        let flush_err = |reason: String| Error::Flush {
            path: self.store_dir.clone(),
            reason,
        };
        fail::fail_point!("journal::flush", |_| Err(flush_err(
            "fail point journal::flush".to_string()
        )));
        catch_sled(|| self.store.db.flush())
            .map_err(flush_err)?
            .map_err(|e| flush_err(e.to_string()))?;
        self.syncer
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .sync()
    }
}

fn build_batch(
    events: &[Encoded],
    first: u64,
    mut prev_crc: u32,
    timestamp_ms: u64,
) -> (sled::Batch, u32) {
    let mut batch = sled::Batch::default();
    for (sequence, event) in (first..).zip(events) {
        let fields = FrameFields {
            sequence,
            timestamp_ms,
            kind: event.kind,
            version: event.version,
            prev_crc,
            payload: &event.payload,
        };
        let (value, crc) = frame::encode(&fields);
        batch.insert(&frame::key(sequence), value);
        prev_crc = crc;
    }
    (batch, prev_crc)
}
