//! Synthetic journals of the appliance's own life, for benchmarks and for booting a large journal
//! in QEMU: a pool of 16 GPUs on 16 ports, one tenant, 16 systems, then compose/decompose cycles,
//! the events an appliance journals as it works (State stays the size of the pool, as it does in
//! production, while the journal grows).

use std::path::{Path, PathBuf};

use crate::core::log::{EventLog, JournalLog, LogError};
use crate::model::{DeviceFacts, DeviceKind, Event, Made, OperationId, PortId, Role};

/// Events before the first cycle: 16 ports, 16 devices, a tenant, 16 systems.
pub const SETUP_EVENTS: u64 = 49;
/// Events of one compose/decompose cycle.
pub const CYCLE_EVENTS: u64 = 4;
/// Events per durable append while writing a synthetic journal.
const APPEND_EVENTS: usize = 4096;

/// Why a synthetic journal was not written.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("the journal in {} already holds {events} events; synth writes only into an empty one", dir.display())]
    NotEmpty { dir: PathBuf, events: u64 },
    #[error("create {}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("write the synthetic journal")]
    Log(#[from] LogError),
}

/// The smallest event count of at least `min` that ends on a whole cycle (no operation left
/// without its outcome).
pub fn whole_cycles(min: u64) -> u64 {
    let cycles = min.saturating_sub(SETUP_EVENTS).div_ceil(CYCLE_EVENTS);
    SETUP_EVENTS + cycles * CYCLE_EVENTS
}

/// Writes `count` cycle events (see [`cycle_events`]) into the empty journal at `dir` (created
/// when missing); returns the journal's last sequence.
pub fn write_journal(dir: &Path, count: u64) -> Result<u64, SynthError> {
    std::fs::create_dir_all(dir).map_err(|source| SynthError::CreateDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let (log, _) = JournalLog::open(dir)?;
    let events = log.last_sequence();
    if events > 0 {
        log.close()?;
        let dir = dir.to_path_buf();
        return Err(SynthError::NotEmpty { dir, events });
    }
    let mut batch = Vec::with_capacity(APPEND_EVENTS);
    for event in cycle_events(count) {
        batch.push(event);
        if batch.len() == APPEND_EVENTS {
            log.append(std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        log.append(batch)?;
    }
    let last = log.last_sequence();
    log.close()?;
    Ok(last)
}

/// The facts of a synthetic device (boxed, as events carry them): its id is its serial too.
pub fn device_facts(
    id: String,
    kind: DeviceKind,
    capacity_bytes: u64,
    switch: String,
    rdma: bool,
) -> Box<DeviceFacts> {
    let switch = switch.into();
    let class = match kind {
        DeviceKind::Gpu => 0x030000,
        DeviceKind::Nvme => 0x010802,
        DeviceKind::Nic => 0x020000,
        _ => 0x010700,
    };
    Box::new(DeviceFacts {
        id: id.as_str().into(),
        kind,
        class,
        vendor_id: 1,
        device_id: 1,
        serial: id,
        model: "bench".into(),
        firmware: "1".into(),
        capacity_bytes,
        rdma,
        switch,
    })
}

/// Domain events of compose/decompose cycles on a small pool, `count` in all: the pool, a tenant
/// and 16 systems (`SETUP_EVENTS`), then cycles of compose intent, completed, decompose intent,
/// completed, system after system.
pub fn cycle_events(count: u64) -> impl Iterator<Item = Event> {
    let setup: Vec<Event> = (0..16u16)
        .map(|p| Event::PortDiscovered {
            port: PortId(p),
            switch: "sw0".into(),
            slot: u32::from(p),
        })
        .chain((0..16).map(|i| Event::DeviceDiscovered {
            facts: device_facts(
                format!("gpu-{i}"),
                DeviceKind::Gpu,
                48 << 30,
                "sw0".into(),
                false,
            ),
        }))
        .chain(std::iter::once(Event::TenantCreated {
            name: "t".into(),
            made: Made::default(),
        }))
        .chain((0..16).map(|i| Event::SystemCreated {
            name: format!("s{i}").into(),
            tenant: "t".into(),
            role: Role::RenderNode,
            made: Made::default(),
        }))
        .collect();
    let cycles = (0u64..).flat_map(|op| {
        let i = op % 16;
        let system: crate::model::SystemName = format!("s{i}").into();
        let device: crate::model::DeviceId = format!("gpu-{i}").into();
        let (compose, decompose) = (OperationId(op * 2), OperationId(op * 2 + 1));
        [
            Event::ComposeRequested {
                op: compose,
                system: system.clone(),
                devices: vec![(device.clone(), PortId(i as u16))],
                made: Made::default(),
            },
            Event::ComposeCompleted { op: compose },
            Event::DecomposeRequested {
                op: decompose,
                system,
                devices: vec![device],
                made: Made::default(),
            },
            Event::DecomposeCompleted { op: decompose },
        ]
    });
    setup.into_iter().chain(cycles).take(count as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::state::State;

    #[test]
    fn cycle_events_apply_and_leave_no_operation_pending_on_whole_cycles() {
        let count = whole_cycles(1000);
        assert_eq!((count - SETUP_EVENTS) % CYCLE_EVENTS, 0);
        assert!(count >= 1000);
        let mut state = State::default();
        for (sequence, event) in (1..).zip(cycle_events(count)) {
            state.apply_owned(sequence, event).expect("applies");
        }
        assert_eq!(state.head, count);
        assert!(state.pending.is_empty(), "{:?}", state.pending);
        assert_eq!(state.devices.len(), 16);
        assert!(state.devices.values().all(|d| d.holder.is_none()));
    }

    #[test]
    fn write_journal_refuses_a_journal_that_holds_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = dir.path().join("journal");
        assert_eq!(write_journal(&journal, 100).expect("written"), 100);
        match write_journal(&journal, 100) {
            Err(SynthError::NotEmpty { events: 100, .. }) => {}
            other => panic!("expected NotEmpty with 100 events, got {other:?}"),
        }
    }
}
