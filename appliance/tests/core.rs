//! The one-writer core on the in-memory log: group commit of concurrent callers, a failed append
//! publishes nothing, snapshots are used at restart and give the same State as a full replay.

use std::sync::Arc;

use appliance::core::log::{EventLog, LogError, Logged, MemoryLog};
use appliance::core::{recover, Core, CoreConfig, CoreError};
use appliance::decide::command::{Command, CommandError, Verb};
use appliance::model::Event;
use appliance::testing::simulation::rebuild;

/// An order to create tenant `name`.
fn create_tenant(name: impl Into<String>) -> Command {
    let name = name.into().into();
    Command::appliance(Verb::CreateTenant { name })
}

fn start(log: &Arc<MemoryLog>, config: CoreConfig) -> Core {
    let log: Arc<dyn EventLog> = log.clone();
    Core::start(log, config).expect("core starts").0
}

#[test]
fn concurrent_callers_share_appends_and_all_land() {
    let log = Arc::new(MemoryLog::new());
    let core = start(&log, CoreConfig::default());
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let core = core.handle();
            std::thread::spawn(move || {
                for i in 0..50 {
                    core.submit(create_tenant(format!("t{t}-{i}")))
                        .expect("accepted");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("client");
    }
    let handle = core.handle();
    assert_eq!(handle.state().tenants.len(), 800);
    let metrics = handle.metrics();
    assert_eq!(metrics.commands, 800);
    assert!(metrics.batches <= 800, "{metrics:?}");
    core.stop();
    assert_eq!(rebuild(log.as_ref()).tenants.len(), 800);
}

#[test]
fn a_refusal_or_a_failed_append_changes_nothing() {
    let log = Arc::new(MemoryLog::new());
    let core = start(&log, CoreConfig::default());
    let handle = core.handle();
    handle.submit(create_tenant("a")).expect("accepted");
    let refused = handle.submit(create_tenant("a"));
    assert!(
        matches!(
            refused,
            Err(CoreError::Refused(CommandError::TenantExists { .. }))
        ),
        "{refused:?}"
    );
    log.fail_appends(1);
    let failed = handle.submit(create_tenant("b"));
    assert!(matches!(failed, Err(CoreError::Append(_))), "{failed:?}");
    assert!(
        !handle.state().tenants.contains_key("b"),
        "nothing published after a failed append"
    );
    assert_eq!(log.last_sequence(), 1);
    handle
        .submit(create_tenant("b"))
        .expect("the next append works");
    assert_eq!(handle.state().head, 2);
}

#[test]
fn restart_uses_the_snapshot_and_matches_a_full_replay() {
    let log = Arc::new(MemoryLog::new());
    let core = start(
        &log,
        CoreConfig {
            snapshot_events_interval: 10,
            ..CoreConfig::default()
        },
    );
    let handle = core.handle();
    for i in 0..25 {
        handle
            .submit(create_tenant(format!("t{i}")))
            .expect("accepted");
    }
    let live = handle.state();
    core.stop();
    let (recovered, report) = recover(log.as_ref()).expect("recover");
    let snapshot = report
        .snapshot_sequence
        .expect("a snapshot was written and used");
    assert!(snapshot >= 20, "{report}");
    assert_eq!(report.events_replayed, 25 - snapshot);
    assert_eq!(recovered, *live);
    assert_eq!(recovered, rebuild(log.as_ref()));
}

#[test]
fn a_damaged_snapshot_is_reported_and_replay_covers_it() {
    let log = Arc::new(MemoryLog::new());
    let core = start(&log, CoreConfig::default());
    for i in 0..5 {
        core.handle()
            .submit(create_tenant(format!("t{i}")))
            .expect("accepted");
    }
    core.stop();
    log.write_snapshot(5, b"\x01\x00garbage").expect("store");
    let (recovered, report) = recover(log.as_ref()).expect("recover");
    assert_eq!(report.snapshot_sequence, None);
    assert_eq!(report.notes.len(), 1, "{report:?}");
    assert_eq!(recovered.tenants.len(), 5);
}

fn tenant(handle: &appliance::core::CoreHandle, name: &str) {
    handle.submit(create_tenant(name)).expect("accepted");
}

#[test]
fn the_writer_reuses_state_and_copies_it_only_when_it_must() {
    let log = Arc::new(MemoryLog::new());
    let core = start(&log, CoreConfig::default());
    let handle = core.handle();
    for i in 0..20 {
        tenant(&handle, &format!("t{i}"));
    }
    let m = handle.metrics();
    assert_eq!(
        (m.state_copies, m.states_reused),
        (1, 19),
        "only the first batch copies State: {m:?}"
    );
    let refused = handle.submit(create_tenant("t0"));
    assert!(refused.is_err(), "{refused:?}");
    // A reader holds the published State: it never changes, and the writer copies once.
    let held = handle.state();
    for i in 20..25 {
        tenant(&handle, &format!("t{i}"));
    }
    assert_eq!(held.tenants.len(), 20);
    assert_eq!(held.head, 20);
    drop(held);
    let m = handle.metrics();
    assert_eq!(
        (m.state_copies, m.states_reused),
        (2, 24),
        "one copy while a reader held State: {m:?}"
    );
    // A failed append leaves nothing to reuse: the next batch copies the published State.
    log.fail_appends(1);
    let failed = handle.submit(create_tenant("x"));
    assert!(matches!(failed, Err(CoreError::Append(_))), "{failed:?}");
    tenant(&handle, "y");
    tenant(&handle, "z");
    let m = handle.metrics();
    assert_eq!(
        (m.state_copies, m.states_reused),
        (3, 26),
        "one copy after the failed append: {m:?}"
    );
    let live = handle.state();
    assert!(!live.tenants.contains_key("x"));
    assert_eq!(live.head, 27);
    core.stop();
    assert_eq!(*live, rebuild(log.as_ref()));
}

#[test]
fn replay_across_many_chunks_equals_applying_one_event_after_the_other() {
    // Several of the replay's 1,024-event chunks, and a partial one at the end.
    let log = MemoryLog::with_clock(0);
    let events = appliance::testing::synth::cycle_events(3 * 1024 + 77).collect::<Vec<_>>();
    log.append(events.clone()).expect("append");
    let (recovered, report) = appliance::core::recover_with(&log, false).expect("recover");
    assert_eq!(report.events_replayed, events.len() as u64);
    assert_eq!(recovered, rebuild(&log));
    let mut one_by_one = appliance::model::State::default();
    for (sequence, event) in (1..).zip(&events) {
        one_by_one.apply(sequence, event).expect("applies");
    }
    assert_eq!(recovered, one_by_one);
}

#[test]
fn an_event_that_does_not_apply_mid_replay_fails_the_start_and_names_it() {
    let log = MemoryLog::with_clock(0);
    let mut events = appliance::testing::synth::cycle_events(2 * 1024).collect::<Vec<_>>();
    // A system of a tenant that does not exist does not apply.
    events.insert(
        1500,
        Event::SystemCreated {
            name: "orphan".into(),
            tenant: "nobody".into(),
            role: appliance::model::Role::RenderNode,
            made: Default::default(),
        },
    );
    log.append(events).expect("append");
    match appliance::core::recover_with(&log, false) {
        Err(CoreError::Apply(e)) => {
            let text = e.to_string();
            assert!(text.contains("1501") && text.contains("nobody"), "{text}");
        }
        other => panic!("expected an apply error at sequence 1501, got {other:?}"),
    }
}

/// A log whose reading fails after `good` events (a damaged journal found mid-replay).
struct FailingReads {
    inner: MemoryLog,
    good: usize,
}

impl EventLog for FailingReads {
    fn append(&self, events: Vec<Event>) -> Result<(u64, u64), LogError> {
        self.inner.append(events)
    }
    fn last_sequence(&self) -> u64 {
        self.inner.last_sequence()
    }
    fn replay(&self, from: u64) -> Box<dyn Iterator<Item = Result<Logged, LogError>> + '_> {
        let good = self.inner.replay(from).take(self.good);
        Box::new(good.chain(std::iter::once(Err(LogError::Closed))))
    }
    fn write_snapshot(&self, sequence: u64, bytes: &[u8]) -> Result<(), LogError> {
        self.inner.write_snapshot(sequence, bytes)
    }
    fn load_snapshot(&self) -> (Option<(u64, Vec<u8>)>, Vec<String>) {
        self.inner.load_snapshot()
    }
    fn load_snapshot_at_or_before(&self, sequence: u64) -> Option<(u64, Vec<u8>)> {
        self.inner.load_snapshot_at_or_before(sequence)
    }
    fn close(&self) -> Result<(), LogError> {
        self.inner.close()
    }
}

#[test]
fn a_read_error_mid_replay_fails_the_start_with_that_error() {
    // At a chunk's end, inside a chunk, and before anything was read.
    for good in [1024, 1500, 0] {
        let log = FailingReads {
            inner: MemoryLog::with_clock(0),
            good,
        };
        let events = appliance::testing::synth::cycle_events(3 * 1024).collect::<Vec<_>>();
        log.append(events).expect("append");
        match appliance::core::recover_with(&log, false) {
            Err(CoreError::Replay(LogError::Closed)) => {}
            other => panic!("after {good} good events: expected the read error, got {other:?}"),
        }
    }
}
