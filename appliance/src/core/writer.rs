//! The core: one thread owns State and the log's write side. Commands arrive on a bounded queue,
//! are decided against State in arrival order, and every batch of concurrent commands becomes one
//! durable append (group commit). Only then is the new State published (readers take an
//! immutable `Arc<State>` without blocking the writer) and the callers answered. The writer
//! changes a private State that it keeps in step with the published one by replaying each
//! committed batch onto the State it replaced (see `Spare`), so a command costs O(its events),
//! not O(State).

use std::collections::HashMap;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, info_span, warn};

use crate::core::log::{decode_snapshot, encode_snapshot, EventLog, LogError, Logged};
use crate::core::metrics::Metrics;
use crate::decide::command::{decide, Command, CommandError, Decision};
use crate::model::{ApplyError, Event, Operation, OperationId, OperationKind, Outcome, State};

/// Limits of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Most commands decided into one durable append.
    pub batch_commands_max: usize,
    /// Commands that may wait in the queue; more are refused as overloaded.
    pub queue_commands_max: usize,
    /// A snapshot is written after this many events since the last one (0 = never).
    pub snapshot_events_interval: u64,
    /// Start from the newest valid snapshot; false replays the whole journal (to measure replay,
    /// or to rule out a doubtful snapshot).
    pub use_snapshots: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            batch_commands_max: 512,
            queue_commands_max: 8192,
            snapshot_events_interval: 50_000,
            use_snapshots: true,
        }
    }
}

/// A command's answer once its events are durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// State's head after the batch holding this command.
    pub sequence: u64,
    /// The operation started (or, for a repeated request id, the one started the first time).
    pub op: Option<OperationId>,
    /// True when a request id was seen before: nothing was journaled.
    pub repeated: bool,
    /// Events this command journaled.
    pub events: usize,
}

/// Why the core could not carry out a command.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("refused")]
    Refused(#[from] CommandError),
    #[error("append to the journal failed; nothing of this batch was applied")]
    Append(#[source] LogError),
    #[error("replay at start failed")]
    Replay(#[source] LogError),
    #[error("the replay's reading thread panicked")]
    ReplayReader,
    #[error("an event does not apply (a bug or a damaged journal)")]
    Apply(#[from] ApplyError),
    #[error("the core is overloaded: {queue_commands_max} commands already queued")]
    Overloaded { queue_commands_max: usize },
    #[error("spawn the core thread")]
    Spawn(#[source] std::io::Error),
    #[error("the core has stopped")]
    Stopped,
    #[error("operation {op} has no outcome after {timeout_ms} ms (it goes on; ask again later)")]
    WaitTimeout { op: OperationId, timeout_ms: u64 },
    #[error("operation {op} is not known (never started, or finished long ago)")]
    UnknownOperation { op: OperationId },
}

/// Events the replay's reader hands to the applier at a time, at start.
const REPLAY_CHUNK_EVENTS: usize = 1024;
/// Chunks read ahead of the applier at most (bounds the replay's memory).
const REPLAY_CHUNKS_QUEUED: usize = 4;

/// Where the state came from at start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartReport {
    pub journal_head: u64,
    pub events_replayed: u64,
    /// Sequence of the snapshot used, if one was.
    pub snapshot_sequence: Option<u64>,
    pub replay_ms: u64,
    /// Time the replay's reading thread spent reading and decoding the journal.
    #[serde(default)]
    pub replay_read_ms: u64,
    /// Time the applying thread spent applying events to State (not waiting for them). The two
    /// run at once: `replay_ms` is about the larger of them.
    #[serde(default)]
    pub replay_apply_ms: u64,
    /// Journal repairs and ignored snapshots, for the boot log.
    pub notes: Vec<String>,
}

impl std::fmt::Display for StartReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snapshot = self
            .snapshot_sequence
            .map(|s| s.to_string())
            .unwrap_or_else(|| "none".into());
        write!(
            f,
            "journal_head={} replayed={} snapshot={} replay_ms={} replay_read_ms={} \
             replay_apply_ms={} notes={}",
            self.journal_head,
            self.events_replayed,
            snapshot,
            self.replay_ms,
            self.replay_read_ms,
            self.replay_apply_ms,
            self.notes.len()
        )
    }
}

type Reply = SyncSender<Result<Accepted, CoreError>>;

enum Message {
    // Boxed: a command is a few hundred bytes, and the queue holds thousands of messages.
    Command(Box<Command>, Reply),
    Stop,
}

struct Shared {
    state: RwLock<Arc<State>>,
    changed: Mutex<u64>,
    wake: Condvar,
    /// The head, for async waiters (the event streams).
    head: tokio::sync::watch::Sender<u64>,
    metrics: Mutex<Metrics>,
}

/// A cheap, cloneable door to the core.
#[derive(Clone)]
pub struct CoreHandle {
    tx: SyncSender<Message>,
    shared: Arc<Shared>,
    queue_commands_max: usize,
}

impl std::fmt::Debug for CoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreHandle")
            .field("head", &self.state().head)
            .finish()
    }
}

/// The running core (owns its thread).
#[derive(Debug)]
pub struct Core {
    handle: CoreHandle,
    thread: Option<JoinHandle<()>>,
}

/// Rebuilds State from the newest valid snapshot plus the log's tail.
pub fn recover(log: &dyn EventLog) -> Result<(State, StartReport), CoreError> {
    recover_with(log, true)
}

/// Rebuilds State from the newest valid snapshot plus the log's tail, or, without
/// `use_snapshots`, from the whole log.
pub fn recover_with(
    log: &dyn EventLog,
    use_snapshots: bool,
) -> Result<(State, StartReport), CoreError> {
    let started = Instant::now();
    let (snapshot, mut notes) = if use_snapshots {
        log.load_snapshot()
    } else {
        let note = "snapshots off: replaying the whole journal".to_string();
        (None, vec![note])
    };
    let mut state = State::default();
    let mut snapshot_sequence = None;
    if let Some((sequence, bytes)) = snapshot {
        match decode_snapshot(sequence, &bytes) {
            Ok(s) => {
                state = s;
                snapshot_sequence = Some(sequence);
            }
            Err(e) => notes.push(format!("snapshot ignored, replaying from the start: {e}")),
        }
    }
    let replay = replay_into(log, &mut state)?;
    let report = StartReport {
        journal_head: state.head,
        events_replayed: replay.events,
        snapshot_sequence,
        replay_ms: started.elapsed().as_millis() as u64,
        replay_read_ms: replay.read.as_millis() as u64,
        replay_apply_ms: replay.apply.as_millis() as u64,
        notes,
    };
    Ok((state, report))
}

/// Applies the log's events after State's head to `state`; returns how many and both threads'
/// busy times. Reading (sled, checksums, decoding) and applying run on two threads, chunk by
/// chunk, so a replay takes about the longer of the two instead of their sum (at boot, the
/// appliance has both cores to itself). At most `REPLAY_CHUNKS_QUEUED` chunks wait between them;
/// emptied chunks go back to the reader to be filled again instead of a new vector per chunk.
fn replay_into(log: &dyn EventLog, state: &mut State) -> Result<Replayed, CoreError> {
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Result<Vec<Logged>, LogError>>(REPLAY_CHUNKS_QUEUED);
        let (empty_tx, empty_rx) = channel::<Vec<Logged>>();
        let from = state.head + 1;
        let reader = std::thread::Builder::new()
            .name("replay-read".into())
            .spawn_scoped(scope, move || read_chunks(log, from, tx, empty_rx))
            .map_err(CoreError::Spawn)?;
        let (mut events, mut apply) = (0u64, Duration::ZERO);
        for chunk in rx {
            let started = Instant::now();
            let mut chunk = chunk.map_err(CoreError::Replay)?;
            for logged in chunk.drain(..) {
                state.apply_owned(logged.sequence, logged.event)?;
                events += 1;
            }
            apply += started.elapsed();
            // The reader may have finished; then the chunk is simply dropped.
            let _ = empty_tx.send(chunk);
        }
        let read = reader.join().map_err(|_| CoreError::ReplayReader)?;
        Ok(Replayed {
            events,
            read,
            apply,
        })
    })
}

/// What `replay_into` did.
struct Replayed {
    events: u64,
    /// Busy time of the reading thread.
    read: Duration,
    /// Busy time of the applying thread.
    apply: Duration,
}

/// The replay's reading side: sends the log's events from `from` on in chunks (an error ends
/// them) and returns the time spent reading, not waiting. Stops when the receiver is gone.
fn read_chunks(
    log: &dyn EventLog,
    from: u64,
    tx: SyncSender<Result<Vec<Logged>, LogError>>,
    empty: Receiver<Vec<Logged>>,
) -> Duration {
    let mut busy = Duration::ZERO;
    let mut events = log.replay(from);
    loop {
        let started = Instant::now();
        // Filled in place: collecting from `take` would grow a vector from nothing, copying its
        // events about ten times per chunk.
        let mut chunk = empty
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(REPLAY_CHUNK_EVENTS));
        let mut failed = None;
        for item in events.by_ref().take(REPLAY_CHUNK_EVENTS) {
            match item {
                Ok(logged) => chunk.push(logged),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        busy += started.elapsed();
        let last = failed.is_some() || chunk.len() < REPLAY_CHUNK_EVENTS;
        // An error ends the replay (and the start): it is sent instead of its chunk.
        let sent = match failed {
            Some(e) => tx.send(Err(e)).is_ok(),
            None => chunk.is_empty() || tx.send(Ok(chunk)).is_ok(),
        };
        if last || !sent {
            break;
        }
    }
    busy
}

impl Core {
    /// Recovers State from `log` and starts the core thread.
    pub fn start(
        log: Arc<dyn EventLog>,
        config: CoreConfig,
    ) -> Result<(Core, StartReport), CoreError> {
        let (state, report) = recover_with(log.as_ref(), config.use_snapshots)?;
        if let Err(broken) = state.check_invariants() {
            warn!(%broken, "recovered state breaks an invariant");
        }
        info!(%report, "state recovered");
        let shared = Arc::new(Shared {
            state: RwLock::new(Arc::new(state)),
            changed: Mutex::new(report.journal_head),
            wake: Condvar::new(),
            head: tokio::sync::watch::channel(report.journal_head).0,
            metrics: Mutex::new(Metrics::default()),
        });
        let (tx, rx) = sync_channel(config.queue_commands_max);
        let handle = CoreHandle {
            tx,
            shared: shared.clone(),
            queue_commands_max: config.queue_commands_max,
        };
        let writer = Writer {
            log,
            shared,
            config,
            started: HashMap::new(),
            snapshot_at: report.journal_head,
            spare: Spare::Nothing,
        };
        let thread = std::thread::Builder::new()
            .name("core".into())
            .spawn(move || writer.run(rx))
            .map_err(CoreError::Spawn)?;
        Ok((
            Core {
                handle,
                thread: Some(thread),
            },
            report,
        ))
    }

    pub fn handle(&self) -> CoreHandle {
        self.handle.clone()
    }

    /// Stops taking commands, finishes the batch in hand and joins the thread.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        let _ = self.handle.tx.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

impl CoreHandle {
    /// Submits a command; returns once its events are durable (or it was refused).
    pub fn submit(&self, command: Command) -> Result<Accepted, CoreError> {
        let (reply, answer) = sync_channel(1);
        match self.tx.try_send(Message::Command(Box::new(command), reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(CoreError::Overloaded {
                    queue_commands_max: self.queue_commands_max,
                })
            }
            Err(TrySendError::Disconnected(_)) => return Err(CoreError::Stopped),
        }
        answer.recv().map_err(|_| CoreError::Stopped)?
    }

    /// The newest published State (immutable).
    pub fn state(&self) -> Arc<State> {
        self.shared
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn metrics(&self) -> Metrics {
        self.shared
            .metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The published head, for async waiters: changes after every batch that journaled events.
    pub fn watch_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.head.subscribe()
    }

    /// Waits until State's head moves past `seen` or `timeout` passes; returns the head.
    pub fn wait_change(&self, seen: u64, timeout: Duration) -> u64 {
        let guard = self
            .shared
            .changed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .shared
            .wake
            .wait_timeout_while(guard, timeout, |head| *head <= seen)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }

    /// Waits for operation `op` to have an outcome.
    pub fn wait_finished(
        &self,
        op: OperationId,
        timeout: Duration,
    ) -> Result<Operation, CoreError> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.state();
            if let Some(done) = state.finished.get(&op) {
                return Ok(Operation::clone(done));
            }
            if !state.pending.contains_key(&op) {
                return Err(CoreError::UnknownOperation { op });
            }
            let head = state.head;
            // Let go of State before waiting: the writer reuses the State no reader holds
            // (`Spare`); one held across the wait costs it a copy of State.
            drop(state);
            let now = Instant::now();
            if now >= deadline {
                return Err(CoreError::WaitTimeout {
                    op,
                    timeout_ms: timeout.as_millis() as u64,
                });
            }
            self.wait_change(head, deadline - now);
        }
    }
}

struct Writer {
    log: Arc<dyn EventLog>,
    shared: Arc<Shared>,
    config: CoreConfig,
    /// When each pending operation's intent became durable (for latency metrics).
    started: HashMap<OperationId, Instant>,
    snapshot_at: u64,
    /// What the writer keeps to get a private copy of the published State cheaply.
    spare: Spare,
}

/// The writer's way to a private State equal to the published one, so that a command's cost
/// does not grow with State. Readers hold `Arc<State>`s that never change; after each committed
/// batch the writer keeps the State it replaced (`previous`) with the batch's events. At the
/// next batch, once readers have let go of `previous` (`Arc::try_unwrap`), applying those events
/// to it gives the published State again, at the cost of one batch of events. A reader still
/// holding it, a failed append or a batch that did not apply leaves nothing reusable: then, and
/// only then, the writer copies the published State.
enum Spare {
    /// Nothing reusable: copy the published State.
    Nothing,
    /// Equal to the published State (the last batch journaled nothing).
    Current(Box<State>),
    /// The State published before the last batch, and that batch's (sequence, event)s.
    Behind {
        previous: Arc<State>,
        events: Vec<(u64, Event)>,
    },
}

/// A decided command waiting for its batch to be durable.
struct Waiting {
    reply: Reply,
    accepted: Accepted,
}

impl Writer {
    fn run(mut self, rx: Receiver<Message>) {
        let mut stop = false;
        while !stop {
            let mut batch = Vec::new();
            match rx.recv() {
                Ok(Message::Command(c, r)) => batch.push((*c, r)),
                Ok(Message::Stop) | Err(_) => break,
            }
            while batch.len() < self.config.batch_commands_max {
                match rx.try_recv() {
                    Ok(Message::Command(c, r)) => batch.push((*c, r)),
                    Ok(Message::Stop) => {
                        stop = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.process(batch);
        }
        drop(rx);
        info!("core stopped");
    }

    fn process(&mut self, batch: Vec<(Command, Reply)>) {
        let span = info_span!("batch", commands = batch.len());
        let _guard = span.enter();
        let live = self
            .shared
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut work = self.working_state(&live);
        let mut events: Vec<Event> = Vec::new();
        let mut waiting: Vec<Waiting> = Vec::with_capacity(batch.len());
        let mut refused = 0u64;
        let commands = batch.len() as u64;
        for (command, reply) in batch {
            match self.decide_one(&mut work, &command, &mut events) {
                Ok(accepted) => waiting.push(Waiting { reply, accepted }),
                Err(CoreError::Apply(e)) => {
                    // `work` holds part of the batch: drop it (the next batch copies `live`).
                    warn!(command = command.name(), error = %e, "decided events do not apply; batch dropped");
                    let _ = reply.send(Err(CoreError::Apply(e.clone())));
                    for w in waiting {
                        let _ = w.reply.send(Err(CoreError::Apply(e.clone())));
                    }
                    return;
                }
                Err(e) => {
                    refused += 1;
                    debug!(command = command.name(), error = %e, "refused");
                    let _ = reply.send(Err(e));
                }
            }
        }
        self.commit(live, work, events, waiting, commands, refused);
    }

    /// A private State equal to the published `live` one, for the writer to change, without
    /// copying State in the common case (see [`Spare`]). Costs O(events of one batch), or one
    /// copy of State when a reader still holds the previous State or after a failed batch.
    fn working_state(&mut self, live: &Arc<State>) -> State {
        match std::mem::replace(&mut self.spare, Spare::Nothing) {
            Spare::Current(state) if state.head == live.head => {
                self.count_state(false);
                return *state;
            }
            Spare::Behind { previous, events } => match Arc::try_unwrap(previous) {
                Ok(mut state) => match catch_up(&mut state, events) {
                    Ok(()) if state.head == live.head => {
                        debug_assert!(
                            state == **live,
                            "catching up diverged from the published state"
                        );
                        self.count_state(false);
                        return state;
                    }
                    Ok(()) => warn!(
                        head = state.head,
                        live = live.head,
                        "caught-up state is not at the published head; copying"
                    ),
                    Err(e) => warn!(error = %e, "catching up the previous state failed; copying"),
                },
                Err(_) => debug!("a reader still holds the previous state; copying"),
            },
            _ => {}
        }
        self.count_state(true);
        (**live).clone()
    }

    fn count_state(&self, copied: bool) {
        let mut metrics = self
            .shared
            .metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if copied {
            metrics.state_copies += 1;
        } else {
            metrics.states_reused += 1;
        }
    }

    /// Decides one command and applies its events to `work`.
    fn decide_one(
        &mut self,
        work: &mut State,
        command: &Command,
        events: &mut Vec<Event>,
    ) -> Result<Accepted, CoreError> {
        let span = info_span!("command", name = command.name());
        let _guard = span.enter();
        match decide(work, command)? {
            Decision::Repeat { op } => Ok(Accepted {
                sequence: work.head,
                op,
                repeated: true,
                events: 0,
            }),
            Decision::Events { events: mine, op } => {
                let count = mine.len();
                for event in mine {
                    work.apply_owned(work.head + 1, event.clone())?;
                    events.push(event);
                }
                Ok(Accepted {
                    sequence: work.head,
                    op,
                    repeated: false,
                    events: count,
                })
            }
        }
    }

    fn commit(
        &mut self,
        live: Arc<State>,
        work: State,
        events: Vec<Event>,
        waiting: Vec<Waiting>,
        commands: u64,
        refused: u64,
    ) {
        let base = live.head;
        let count = events.len() as u64;
        if events.is_empty() {
            // Nothing changed: `work` still equals the published State; keep it for the next batch.
            debug_assert_eq!(work.head, base);
            self.spare = Spare::Current(Box::new(work));
            self.publish(None, commands, refused, 0);
            for w in waiting {
                let _ = w.reply.send(Ok(w.accepted));
            }
            return;
        }
        // Kept to bring the State published now up to date when the writer reclaims it.
        let applied: Vec<(u64, Event)> = (base + 1..).zip(events.iter().cloned()).collect();
        if let Err(failure) = self.append(base, &work, events) {
            // `work` holds events that are not durable: drop it (`spare` stays empty, so the
            // next batch copies the published State).
            let reason = match failure {
                LogError::Append { reason, .. } => reason,
                other => other.to_string(),
            };
            return fail_all(waiting, || LogError::Append {
                sequence: base + 1,
                reason: reason.clone(),
            });
        }
        debug_assert_eq!(work.check_invariants(), Ok(()));
        let head = work.head;
        let snapshot_due = self.config.snapshot_events_interval > 0
            && head - self.snapshot_at >= self.config.snapshot_events_interval;
        let snapshot_bytes = if snapshot_due {
            encode_snapshot(&work).ok()
        } else {
            None
        };
        self.publish(Some(work), commands, refused, count);
        self.spare = Spare::Behind {
            previous: live,
            events: applied,
        };
        for w in waiting {
            let _ = w.reply.send(Ok(w.accepted));
        }
        if let Some(bytes) = snapshot_bytes {
            self.snapshot(head, &bytes);
        }
    }

    /// Appends the batch durably; checks the log assigned the sequences State expects.
    fn append(&mut self, base: u64, work: &State, events: Vec<Event>) -> Result<(), LogError> {
        let count = events.len() as u64;
        let append_started = Instant::now();
        let timings: Vec<(Option<OperationId>, Option<OperationId>)> = events
            .iter()
            .map(|e| (e.intent_of(), e.outcome_of()))
            .collect();
        match self.log.append(events) {
            Ok((first, last)) if first == base + 1 && last == base + count => {}
            Ok((first, last)) => {
                // The log and State disagree on sequences: nothing is safe to publish.
                let reason = format!(
                    "log assigned {first}..={last}, the core expected {}..={}",
                    base + 1,
                    base + count
                );
                warn!(%reason, "sequence mismatch");
                return Err(LogError::Append {
                    sequence: first,
                    reason,
                });
            }
            Err(e) => {
                warn!(error = %e, "append failed; batch dropped");
                return Err(e);
            }
        }
        self.record_timings(work, &timings, append_started.elapsed());
        Ok(())
    }

    /// Publishes `state` (when the batch changed it) and the batch's counters.
    fn publish(&self, state: Option<State>, commands: u64, refused: u64, events: u64) {
        let head = state.as_ref().map(|s| s.head);
        if let Some(state) = state {
            let new = Arc::new(state);
            let old = std::mem::replace(
                &mut *self.shared.state.write().unwrap_or_else(|e| e.into_inner()),
                new,
            );
            // The writer keeps its own reference to the old State (`Spare::Behind`).
            drop(old);
        }
        {
            let mut metrics = self
                .shared
                .metrics
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            metrics.commands += commands;
            metrics.commands_refused += refused;
            metrics.batches += 1;
            metrics.events_appended += events;
        }
        if let Some(head) = head {
            *self
                .shared
                .changed
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = head;
            self.shared.wake.notify_all();
            self.shared.head.send_replace(head);
        }
    }

    fn record_timings(
        &mut self,
        work: &State,
        timings: &[(Option<OperationId>, Option<OperationId>)],
        append: Duration,
    ) {
        let now = Instant::now();
        let mut metrics = self
            .shared
            .metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        metrics.append.record(append);
        for (intent, outcome) in timings {
            if let Some(op) = intent {
                self.started.insert(*op, now);
            }
            let Some(op) = outcome else { continue };
            let Some(started) = self.started.remove(op) else {
                continue;
            };
            let Some(finished) = work.finished.get(op) else {
                continue;
            };
            match &finished.kind {
                OperationKind::Compose { .. } => metrics.compose.record(now - started),
                OperationKind::Decompose { .. } => metrics.decompose.record(now - started),
                OperationKind::Failover { .. } => {
                    metrics.failover.record(now - started);
                    let answered = work.alarms.values().filter(|a| a.failover == Some(*op));
                    if finished.outcome == Some(Outcome::Completed) {
                        if let Some(alarm) = answered.min_by_key(|a| a.at_ms) {
                            let since = crate::time::now_ms().saturating_sub(alarm.at_ms);
                            metrics.recovery.record(Duration::from_millis(since));
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn snapshot(&mut self, head: u64, bytes: &[u8]) {
        match self.log.write_snapshot(head, bytes) {
            Ok(()) => {
                self.snapshot_at = head;
                self.shared
                    .metrics
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .snapshots_written += 1;
                info!(sequence = head, bytes = bytes.len(), "snapshot written");
            }
            Err(e) => warn!(sequence = head, error = %e, "snapshot not written (replay covers it)"),
        }
    }
}

/// Applies the events of one committed batch to an older copy of State.
fn catch_up(state: &mut State, events: Vec<(u64, Event)>) -> Result<(), ApplyError> {
    for (sequence, event) in events {
        state.apply_owned(sequence, event)?;
    }
    Ok(())
}

fn fail_all(waiting: Vec<Waiting>, error: impl Fn() -> LogError) {
    for w in waiting {
        let _ = w.reply.send(Err(CoreError::Append(error())));
    }
}
