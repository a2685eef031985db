//! Reading the journal back: replay from a sequence (every crc and chain link verified, events
//! decoded with upcasting) and the live tail for subscribers.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use crate::frame::{self, Frame};
use crate::store::{catch_sled, Chain, Store};
use crate::{Error, Event, Record};

/// Turns a checked frame into a typed record (refusing newer schema versions).
fn to_record<E: Event>(frame: Frame<'_>) -> Result<Record<E>, Error> {
    let Frame {
        sequence,
        timestamp_ms,
        kind,
        version,
        crc,
        payload,
        ..
    } = frame;
    if version > E::SCHEMA_VERSION {
        return Err(Error::NewerSchema {
            sequence,
            kind,
            version,
            supported: E::SCHEMA_VERSION,
        });
    }
    let event =
        E::decode(kind, version, payload).map_err(|source| Error::Decode { sequence, source })?;
    Ok(Record {
        sequence,
        timestamp_ms,
        kind,
        version,
        crc,
        event,
    })
}

/// A damaged record met while reading: the same operator message as at open (rule 11).
fn corrupt(store_path: &Path, bad: crate::store::Bad) -> Error {
    let dir = store_path.parent().unwrap_or(store_path).to_path_buf();
    Error::Corrupt {
        dir,
        sequence: bad.sequence,
        problem: bad.problem,
        good_through: bad.sequence.saturating_sub(1),
    }
}

/// The chain state before `from`: the crc of record `from - 1`, itself checked.
fn chain_before(store: &Store, path: &Path, from: u64) -> Result<Chain, Error> {
    if from <= 1 {
        return Ok(Chain::new(1, 0));
    }
    let before = from - 1;
    let value = store.get(before, path)?.ok_or_else(|| Error::BadRecord {
        sequence: before,
        problem: "missing".to_string(),
    })?;
    let frame = frame::decode(&frame::key(before), &value).map_err(|e| Error::BadRecord {
        sequence: before,
        problem: e.to_string(),
    })?;
    Ok(Chain::new(from, frame.crc))
}

/// Iterator over the records `from..=last`, verified and decoded; stops after the first error.
pub struct Replay<'a, E> {
    store: &'a Store,
    path: PathBuf,
    iter: Option<sled::Iter>,
    chain: Option<Chain>,
    from: u64,
    last: u64,
    done: bool,
    _e: PhantomData<fn() -> E>,
}

impl<E> std::fmt::Debug for Replay<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("from", &self.from)
            .field("last", &self.last)
            .field("done", &self.done)
            .finish()
    }
}

impl<'a, E: Event> Replay<'a, E> {
    pub(crate) fn new(store: &'a Store, path: &Path, from: u64, last: u64) -> Self {
        let from = from.max(1);
        Replay {
            store,
            path: path.to_path_buf(),
            iter: None,
            chain: None,
            from,
            last,
            done: from > last,
            _e: PhantomData,
        }
    }

    fn step(&mut self) -> Option<Result<Record<E>, Error>> {
        if self.chain.is_none() {
            match chain_before(self.store, &self.path, self.from) {
                Ok(chain) => self.chain = Some(chain),
                Err(e) => return Some(Err(e)),
            }
            self.iter = Some(
                self.store
                    .tree
                    .range(frame::key(self.from)..=frame::key(self.last)),
            );
        }
        let (chain, iter) = (self.chain.as_mut()?, self.iter.as_mut()?);
        let read_err = |reason: String| Error::ReadStore {
            path: self.path.clone(),
            reason,
        };
        let item = match catch_sled(|| iter.next()) {
            Ok(item) => item,
            Err(reason) => return Some(Err(read_err(reason))),
        };
        let Some(item) = item else {
            return (chain.expected <= self.last).then(|| {
                let problem = format!(
                    "record {} is missing (the store ends before {})",
                    chain.expected, self.last
                );
                Err(corrupt(
                    &self.path,
                    crate::store::Bad {
                        sequence: chain.expected,
                        problem,
                        intact: false,
                    },
                ))
            });
        };
        let (key, value) = match item {
            Ok(kv) => kv,
            Err(e) => return Some(Err(read_err(e.to_string()))),
        };
        Some(match chain.check(&key, &value) {
            Ok(frame) => to_record(frame),
            Err(bad) => Err(corrupt(&self.path, bad)),
        })
    }
}

impl<E: Event> Iterator for Replay<'_, E> {
    type Item = Result<Record<E>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step();
        self.done = !matches!(item, Some(Ok(_)));
        item
    }
}

/// A subscriber's view of the journal: stored records after a sequence, then live ones.
pub struct Tail<E> {
    store: Store,
    path: PathBuf,
    durable: tokio::sync::watch::Receiver<u64>,
    next: u64,
    chain: Option<Chain>,
    failed: bool,
    _e: PhantomData<fn() -> E>,
}

impl<E> std::fmt::Debug for Tail<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tail")
            .field("next", &self.next)
            .field("failed", &self.failed)
            .finish()
    }
}

impl<E: Event> Tail<E> {
    pub(crate) fn new(
        store: Store,
        path: PathBuf,
        durable: tokio::sync::watch::Receiver<u64>,
        next: u64,
    ) -> Self {
        Tail {
            store,
            path,
            durable,
            next: next.max(1),
            chain: None,
            failed: false,
            _e: PhantomData,
        }
    }

    /// Next record, waiting for one to be appended if needed. None once the journal is closed
    /// (or after an error was returned).
    pub async fn next(&mut self) -> Option<Result<Record<E>, Error>> {
        if self.failed {
            return None;
        }
        loop {
            let durable = *self.durable.borrow_and_update();
            if self.next <= durable {
                let record = self.read_next();
                self.failed = record.is_err();
                return Some(record);
            }
            if self.durable.changed().await.is_err() {
                return None;
            }
        }
    }

    fn read_next(&mut self) -> Result<Record<E>, Error> {
        let mut chain = match self.chain {
            Some(chain) => chain,
            None => chain_before(&self.store, &self.path, self.next)?,
        };
        let sequence = self.next;
        let value = self
            .store
            .get(sequence, &self.path)?
            .ok_or_else(|| Error::BadRecord {
                sequence,
                problem: "missing".to_string(),
            })?;
        let frame = chain
            .check(&frame::key(sequence), &value)
            .map_err(|bad| corrupt(&self.path, bad))?;
        let record = to_record(frame)?;
        self.chain = Some(chain);
        self.next += 1;
        Ok(record)
    }
}
