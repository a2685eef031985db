//! The crash-test child (the test binary re-run with `JOURNAL_TEST_CHILD_DIR` set) and the
//! parent's side: spawn it, read its acknowledgements, and check what survived.
//!
//! Child protocol on stdout, one line each: `OPENED <last>`, `ACK <first> <last> <writer>
//! <counter of first>` after each durable append, `HIT <failpoint> <n>` just before a fail point
//! aborts the process.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{deposit, State, TestEvent};

pub const CHILD_DIR_ENV: &str = "JOURNAL_TEST_CHILD_DIR";
/// `<fail point>:<n>`: abort the child at the n-th hit of that fail point.
pub const CHILD_FAILPOINT_ENV: &str = "JOURNAL_TEST_CHILD_FAILPOINT";
const WRITERS: u32 = 4;
/// The child snapshots its state every this many records.
const SNAPSHOT_EVERY_RECORDS: u64 = 48;

/// Runs the child if this process was started as one (never returns then).
pub fn run_child_if_asked() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    if let Ok(spec) = std::env::var(CHILD_FAILPOINT_ENV) {
        arm_failpoint(&spec);
    }
    let (journal, report) =
        match journal::Journal::<TestEvent>::open(Path::new(&dir), super::config()) {
            Ok(opened) => opened,
            Err(e) => {
                println!("OPEN_ERROR {e}");
                std::process::exit(3);
            }
        };
    say(&format!("OPENED {}", report.last_sequence));
    let journal = Arc::new(journal);
    let threads: Vec<_> = (0..WRITERS)
        .map(|writer| {
            std::thread::spawn({
                let journal = Arc::clone(&journal);
                move || write_forever(&journal, writer)
            })
        })
        .collect();
    snapshot_forever(&journal);
    for thread in threads {
        let _ = thread.join();
    }
    std::process::exit(0);
}

fn arm_failpoint(spec: &str) {
    let (name, n) = spec.rsplit_once(':').expect("failpoint spec is name:n");
    let (name, n) = (name.to_string(), n.parse::<u64>().expect("failpoint count"));
    let hits = AtomicU64::new(0);
    let point = name.clone();
    fail::cfg_callback(&name, move || {
        if hits.fetch_add(1, Ordering::SeqCst) + 1 == n {
            say(&format!("HIT {point} {n}"));
            // Die on the spot, as a crash would: no destructor, no flush (exit, not abort, so
            // that no core file is written).
            std::process::exit(86);
        }
    })
    .expect("configure fail point");
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Appends batches of 1..=5 deposits; the per-writer counter continues from the journal.
fn write_forever(journal: &journal::Journal<TestEvent>, writer: u32) {
    let mut counter = super::fold_all(journal)
        .writers
        .get(&(writer + 1))
        .map_or(0, |w| w.0)
        + 1;
    let mut size = writer as u64;
    loop {
        size = size * 7 % 5 + 1;
        let events: Vec<_> = (0..size)
            .map(|i| deposit(writer + 1, counter + i))
            .collect();
        match journal.append(events) {
            Ok(appended) => say(&format!(
                "ACK {} {} {} {counter}",
                appended.first,
                appended.last,
                writer + 1
            )),
            Err(e) => {
                say(&format!("APPEND_ERROR {e}"));
                return;
            }
        }
        counter += size;
    }
}

/// Follows the live tail, folds it, and snapshots every SNAPSHOT_EVERY_RECORDS records.
fn snapshot_forever(journal: &journal::Journal<TestEvent>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut state = super::rebuild(journal);
    let mut tail = journal.subscribe(state.applied_through);
    runtime.block_on(async {
        while let Some(record) = tail.next().await {
            let record = record.expect("tail record");
            state.apply(&record);
            if record.sequence % SNAPSHOT_EVERY_RECORDS == 0 {
                if let Err(e) = journal.write_snapshot(record.sequence, &state.to_bytes()) {
                    say(&format!("SNAPSHOT_ERROR {e}"));
                }
            }
        }
    });
}

/// What the parent learned from one child run.
#[derive(Debug, Default)]
pub struct Outcome {
    /// (first, last, writer, first counter) of every acknowledged batch.
    pub acks: Vec<(u64, u64, u32, u64)>,
    pub hits: Vec<String>,
    pub other: Vec<String>,
}

/// Spawns the child on `dir`.
pub fn spawn(dir: &Path, failpoint: Option<&str>) -> Child {
    let mut command = Command::new(std::env::current_exe().expect("test binary path"));
    command
        .env(CHILD_DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(spec) = failpoint {
        command.env(CHILD_FAILPOINT_ENV, spec);
    }
    command.spawn().expect("spawn the crash child")
}

/// When the parent SIGKILLs the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// At once: somewhere in process start-up or journal open.
    AtSpawn,
    /// Once this many acknowledgements were read (0: right after `OPENED`).
    AfterAcks(usize),
    /// Never, unless it is still running after this many acknowledgements (the child is
    /// expected to end itself at a fail point).
    Backstop(usize),
}

/// Reads the child's lines, SIGKILLs it as `kill` says, then reads what is left until EOF.
pub fn run(mut child: Child, kill: Kill) -> Outcome {
    let stdout = child.stdout.take().expect("child stdout");
    let mut outcome = Outcome::default();
    let mut killed = kill == Kill::AtSpawn;
    if killed {
        child.kill().expect("SIGKILL the child");
    }
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        parse(&line, &mut outcome);
        let due = match kill {
            Kill::AtSpawn => false,
            Kill::AfterAcks(0) => line.starts_with("OPENED"),
            Kill::AfterAcks(n) | Kill::Backstop(n) => outcome.acks.len() >= n,
        };
        if !killed && due {
            child.kill().expect("SIGKILL the child");
            killed = true;
        }
    }
    let status = child.wait().expect("wait for the child");
    assert!(
        !status.success(),
        "the child must die, not exit: {status:?}; lines: {:?}",
        outcome.other
    );
    outcome
}

fn parse(line: &str, outcome: &mut Outcome) {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["ACK", first, last, writer, counter] => {
            let n = |s: &str| s.parse::<u64>().expect("number in ACK line");
            outcome
                .acks
                .push((n(first), n(last), n(writer) as u32, n(counter)));
        }
        ["HIT", point, _] => outcome.hits.push(point.to_string()),
        _ => outcome.other.push(line.to_string()),
    }
}

/// Reopens the journal and checks: every acknowledged event present at its sequence, in order,
/// the chain verifies, and the rebuilt state (snapshot + tail) equals the fold of all records.
pub fn check_survivors(dir: &Path, outcome: &Outcome) -> u64 {
    let (journal, report) = super::open(dir);
    let records = super::records(&journal, 1);
    assert_eq!(
        records.len() as u64,
        report.last_sequence,
        "replay returns every record"
    );
    let mut acked = 0;
    for &(first, last, writer, counter) in &outcome.acks {
        for (i, sequence) in (first..=last).enumerate() {
            let record = records.get(sequence as usize - 1).unwrap_or_else(|| {
                panic!(
                    "acknowledged sequence {sequence} lost (journal ends at {})",
                    report.last_sequence
                )
            });
            assert_eq!(
                record.event,
                deposit(writer, counter + i as u64),
                "acknowledged event at sequence {sequence}"
            );
            acked += 1;
        }
    }
    check_writer_order(&records);
    let folded = super::fold_all(&journal);
    assert_eq!(
        super::rebuild(&journal),
        folded,
        "snapshot + tail equals the fold of all records"
    );
    journal.close().expect("close");
    acked
}

fn check_writer_order(records: &[journal::Record<TestEvent>]) {
    let mut last: BTreeMap<u32, u64> = BTreeMap::new();
    for record in records {
        if let TestEvent::Deposit {
            writer, counter, ..
        } = record.event
        {
            let previous = last.insert(writer, counter).unwrap_or(0);
            assert_eq!(
                counter,
                previous + 1,
                "writer {writer}'s events are in order at sequence {}",
                record.sequence
            );
        }
    }
}

/// State type re-export for callers.
pub type Folded = State;
