//! Reading the journal back: replay from a sequence (every crc and chain link verified, events
//! decoded with upcasting) and the live tail for subscribers.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use crate::frame::{self, Frame};
use crate::store::{catch_sled, Bad, Chain, Store};
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
fn corrupt(store_path: &Path, bad: Bad) -> Error {
    let dir = store_path.parent().unwrap_or(store_path).to_path_buf();
    Error::Corrupt {
        dir,
        sequence: bad.sequence,
        problem: bad.problem,
        good_through: bad.sequence.saturating_sub(1),
    }
}

/// The chain state before the record `first`: the crc of record `first - 1`, itself checked.
fn chain_before(store: &Store, path: &Path, first: u64) -> Result<Chain, Error> {
    if first <= 1 {
        return Ok(Chain::new(1, 0));
    }
    let before = first - 1;
    let crc = store
        .record_crc(before, path)?
        .map_err(|problem| Error::BadRecord {
            sequence: before,
            problem,
        })?;
    Ok(Chain::new(first, crc))
}

/// Reads the stored values from the one holding `from` up to the one holding `last`, checking
/// each (value crc, record crcs, sequences, chain) and decoding the records `from..=last`.
struct Reader {
    path: PathBuf,
    iter: sled::Iter,
    chain: Chain,
    from: u64,
    last: u64,
}

impl Reader {
    /// Positions a reader on the value holding `from` (from 1 at least), the chain anchored on
    /// the record before that value.
    fn new(store: &Store, path: &Path, from: u64, last: u64) -> Result<Reader, Error> {
        let first = match store.value_containing(from, path)? {
            Some((key, _)) => frame::sequence_of(&key).unwrap_or(from),
            None => from,
        };
        let chain = chain_before(store, path, first)?;
        Ok(Reader {
            path: path.to_path_buf(),
            iter: store.tree.range(frame::key(first)..=frame::key(last)),
            chain,
            from,
            last,
        })
    }

    /// Decodes the next value's records into `out`; false once the reader is done (at the end
    /// or after an error, which is pushed last).
    fn fill<E: Event>(&mut self, out: &mut VecDeque<Result<Record<E>, Error>>) -> bool {
        let read_err = |reason: String| Error::ReadStore {
            path: self.path.clone(),
            reason,
        };
        let item = match catch_sled(|| self.iter.next()) {
            Ok(item) => item,
            Err(reason) => {
                out.push_back(Err(read_err(reason)));
                return false;
            }
        };
        let Some(item) = item else {
            if self.chain.expected <= self.last {
                let problem = format!(
                    "record {} is missing (the store ends before {})",
                    self.chain.expected, self.last
                );
                let bad = Bad {
                    sequence: self.chain.expected,
                    problem,
                    intact: false,
                };
                out.push_back(Err(corrupt(&self.path, bad)));
            }
            return false;
        };
        let (key, value) = match item {
            Ok(kv) => kv,
            Err(e) => {
                out.push_back(Err(read_err(e.to_string())));
                return false;
            }
        };
        let checked = self.chain.check_value(&key, &value);
        for frame in checked.frames {
            if (self.from..=self.last).contains(&frame.sequence) {
                out.push_back(to_record(frame));
            }
        }
        match checked.bad {
            Some(bad) => {
                out.push_back(Err(corrupt(&self.path, bad)));
                false
            }
            None => self.chain.expected <= self.last,
        }
    }
}

/// Iterator over the records `from..=last`, verified and decoded; stops after the first error.
/// It holds the decoded records of one stored value at a time.
pub struct Replay<'a, E> {
    _store: PhantomData<&'a Store>,
    reader: Option<Reader>,
    buffer: VecDeque<Result<Record<E>, Error>>,
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
        let done = from > last;
        let mut buffer = VecDeque::new();
        let reader = if done {
            None
        } else {
            Reader::new(store, path, from, last)
                .map_err(|e| buffer.push_back(Err(e)))
                .ok()
        };
        Replay {
            _store: PhantomData,
            reader,
            buffer,
            from,
            last,
            done,
            _e: PhantomData,
        }
    }
}

impl<E: Event> Iterator for Replay<'_, E> {
    type Item = Result<Record<E>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        while self.buffer.is_empty() {
            let more = match self.reader.as_mut() {
                Some(reader) => reader.fill(&mut self.buffer),
                None => false,
            };
            if !more {
                self.reader = None;
                break;
            }
        }
        let item = self.buffer.pop_front();
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
    /// Records of the last value read, not yet returned (at most one value's worth).
    buffer: VecDeque<Result<Record<E>, Error>>,
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
            buffer: VecDeque::new(),
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
                let record = self.read_next(durable);
                self.failed = record.is_err();
                return Some(record);
            }
            if self.durable.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Reads the value holding `self.next` (checked from the value's first record) and returns
    /// its durable records from `self.next` on.
    fn read_next(&mut self, durable: u64) -> Result<Record<E>, Error> {
        if self.buffer.is_empty() {
            Reader::new(&self.store, &self.path, self.next, durable)?.fill(&mut self.buffer);
        }
        let record = self.buffer.pop_front().unwrap_or_else(|| {
            Err(Error::BadRecord {
                sequence: self.next,
                problem: "missing".to_string(),
            })
        })?;
        self.next = record.sequence + 1;
        Ok(record)
    }
}
