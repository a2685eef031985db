//! Group commit: many threads append; one of them (the leader) writes everything queued so far as
//! one stored value and makes it durable with one flush + fsync while the others wait on a
//! condvar, then all return together.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::block;
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

/// An append waiting for the next group commit.
#[derive(Debug)]
struct Queued {
    first: u64,
    timestamp_ms: u64,
    events: Vec<Encoded>,
}

#[derive(Debug)]
struct State {
    /// Sequence the next queued event gets.
    next_sequence: u64,
    /// Appends queued for the next group commit, in sequence order, and their event count.
    queue: Vec<Queued>,
    queued_events: u64,
    /// Last durable (acknowledged) sequence and its crc (the chain head).
    durable: u64,
    durable_crc: u32,
    /// A leader is writing and syncing a group right now.
    flushing: bool,
    /// Appenders of synced groups that have not yet returned. The next group waits for them to
    /// be gone: they are woken and usually append again at once, so the next sync carries them
    /// too instead of the writers splitting into two groups that alternate (each sync carrying
    /// half of them).
    releasing: u64,
    /// Set for good after a failed write or sync: nothing after it can be trusted.
    poisoned: Option<String>,
}

/// The write side of a journal.
///
/// Group commit: an append queues its events (getting its sequences at once) and waits. When no
/// sync is running, one waiting appender becomes the leader: it takes everything queued at that
/// moment, frames it into values (one per group, split at `block::VALUE_BYTES_MAX`), inserts
/// them in one atomic sled batch, flushes and fsyncs, publishes the new durable point and wakes
/// everyone. Appends arriving during a sync queue up behind it and form the next group, so each
/// sync carries every appender that was waiting when it started. The next sync starts once the
/// appenders released by the previous one have left (`State::releasing`; no timed wait), so that
/// those which append again at once join it.
#[derive(Debug)]
pub struct Writer {
    store: Store,
    store_dir: PathBuf,
    group_commit_events_max: u64,
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
            next_sequence: last + 1,
            queue: Vec::new(),
            queued_events: 0,
            durable: last,
            durable_crc: head,
            flushing: false,
            releasing: 0,
            poisoned: None,
        };
        Writer {
            store,
            store_dir: store_dir.clone(),
            group_commit_events_max: group_commit_events_max.max(1) as u64,
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

    /// Queues the batch after the current tail and returns once it is durable.
    pub fn append(&self, events: Vec<Encoded>, timestamp_ms: u64) -> Result<Appended, Error> {
        let count = events.len() as u64;
        let mut state = self.lock();
        // Back-pressure: at most group_commit_events_max events wait for one group commit (a
        // larger single batch still goes alone).
        loop {
            if let Some(reason) = &state.poisoned {
                return Err(Error::Poisoned {
                    reason: reason.clone(),
                });
            }
            let queued = state.queued_events;
            if queued == 0 || queued + count <= self.group_commit_events_max {
                break;
            }
            state = self.wait(state);
        }
        let first = state.next_sequence;
        let last = first + count - 1;
        state.next_sequence = last + 1;
        state.queued_events += count;
        state.queue.push(Queued {
            first,
            timestamp_ms,
            events,
        });
        self.wait_durable(state, last)?;
        Ok(Appended { first, last })
    }

    /// Waits until `target` is durable, becoming the leader that writes and syncs the queued
    /// group when no sync is running.
    fn wait_durable<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        target: u64,
    ) -> Result<(), Error> {
        loop {
            if state.durable >= target {
                state.releasing = state.releasing.saturating_sub(1);
                if state.releasing == 0 {
                    self.wake.notify_all();
                }
                return Ok(());
            }
            if let Some(reason) = &state.poisoned {
                return Err(Error::Poisoned {
                    reason: reason.clone(),
                });
            }
            if state.flushing || state.queue.is_empty() || state.releasing > 0 {
                state = self.wait(state);
                continue;
            }
            state.flushing = true;
            let group = std::mem::take(&mut state.queue);
            state.queued_events = 0;
            let prev_crc = state.durable_crc;
            drop(state);
            // Room in the queue again: appenders held back by back-pressure may queue now.
            self.wake.notify_all();
            let result = self.commit_group(&group, prev_crc);
            state = self.lock();
            state.flushing = false;
            let outcome = match result {
                Ok((upto, upto_crc)) => {
                    self.syncs.fetch_add(1, Ordering::Relaxed);
                    state.releasing += group.len() as u64;
                    (state.durable, state.durable_crc) = (upto, upto_crc);
                    self.durable_tx.send_replace(upto);
                    Ok(())
                }
                Err(e) => {
                    state.poisoned = Some(e.to_string());
                    Err(e)
                }
            };
            self.wake.notify_all();
            outcome?;
        }
    }

    /// Frames, inserts and makes durable one group; returns its last sequence and crc.
    fn commit_group(&self, group: &[Queued], prev_crc: u32) -> Result<(u64, u32), Error> {
        let _span = tracing::trace_span!("journal_group_commit", appends = group.len()).entered();
        let first = group.first().map_or(0, |q| q.first);
        let (values, last, last_crc) = build_values(group, prev_crc);
        self.insert(values).map_err(|reason| Error::WriteStore {
            first,
            last,
            reason,
        })?;
        self.sync()?;
        Ok((last, last_crc))
    }

    /// Writes a group's values atomically. One value (every group of at most
    /// `block::VALUE_BYTES_MAX`) is a plain sled insert, atomic by itself; several go in one sled
    /// batch. A sled batch costs a second log write of its own: sled puts the batch manifest in
    /// an I/O buffer of its own (`pin_log` rolls the buffer before and after it), and each buffer
    /// is a `pwrite` + `sync_file_range`, so a one-value group skips it.
    fn insert(&self, values: Vec<(sled::IVec, Vec<u8>)>) -> Result<(), String> {
        fail::fail_point!("journal::write", |_| Err(
            "fail point journal::write".to_string()
        ));
        let values = match <[_; 1]>::try_from(values) {
            Ok([(key, value)]) => {
                return catch_sled(|| self.store.tree.insert(key, value))?
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Err(values) => values,
        };
        let mut batch = sled::Batch::default();
        for (key, value) in values {
            batch.insert(key, value);
        }
        catch_sled(|| self.store.tree.apply_batch(batch))?.map_err(|e| e.to_string())
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

/// The stored values of one group (key, value): its records framed and chained; with the
/// group's last sequence and crc.
fn build_values(group: &[Queued], mut prev_crc: u32) -> (Vec<(sled::IVec, Vec<u8>)>, u64, u32) {
    let mut builder = block::Builder::default();
    let mut last = 0;
    for queued in group {
        for (sequence, event) in (queued.first..).zip(&queued.events) {
            prev_crc = builder.push(&FrameFields {
                sequence,
                timestamp_ms: queued.timestamp_ms,
                kind: event.kind,
                version: event.version,
                prev_crc,
                payload: &event.payload,
            });
            last = sequence;
        }
    }
    let values = builder
        .finish()
        .into_iter()
        .map(|(first, value)| (sled::IVec::from(&frame::key(first)), value))
        .collect();
    (values, last, prev_crc)
}
