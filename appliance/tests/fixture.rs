//! The committed fixture journal of domain events (tests/fixtures/journal-v1, schema version 1)
//! must replay under every later build into the committed State (tests/fixtures/journal-v1.state.json).
//! Regenerate both only when the schema changes on purpose:
//! `APPLIANCE_WRITE_FIXTURE=1 cargo test -p appliance --test fixture`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use appliance::core::log::{EventLog, JournalLog};
use appliance::core::{recover, Core, CoreConfig, CoreHandle};
use appliance::decide::command::{Command, NewSystem, Selection};
use appliance::decide::placement::Want;
use appliance::model::domain::{DeviceKind, Health, MountSource, Role};
use appliance::model::event::MountSpec;
use appliance::runtime::reconciler::sync_inventory;
use appliance::serve::SAMPLE_TOPOLOGY;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn finish(core: &CoreHandle, command: Command, result: Result<(), String>) {
    let op = core
        .submit(command)
        .expect("accepted")
        .op
        .expect("an operation");
    core.submit(Command::Finish { op, result })
        .expect("outcome");
}

/// A short life of an appliance touching every event kind.
fn scenario(core: &CoreHandle) {
    let topology =
        appliance::topology::parse(SAMPLE_TOPOLOGY, Path::new("sample.toml")).expect("sample");
    let identity = topology.identity.clone().expect("identity");
    core.submit(Command::SetIdentity { identity })
        .expect("identity");
    let rdma = topology
        .devices
        .iter()
        .filter(|d| d.rdma)
        .map(|d| d.device.id.clone())
        .collect();
    for command in sync_inventory(&topology.inventory(), &core.state(), &rdma) {
        core.submit(command).expect("inventory");
    }
    core.submit(Command::CreateTenant {
        name: "studio".into(),
    })
    .expect("tenant");
    let wants = vec![
        Want {
            kind: DeviceKind::Gpu,
            count: 2,
            capacity_bytes_min: 24 << 30,
            rdma: false,
        },
        Want {
            kind: DeviceKind::Nvme,
            count: 1,
            capacity_bytes_min: 2_000_000_000_000,
            rdma: false,
        },
        Want {
            kind: DeviceKind::Nic,
            count: 1,
            capacity_bytes_min: 0,
            rdma: true,
        },
    ];
    let create = Some(NewSystem {
        tenant: "studio".into(),
        role: Role::Workstation,
    });
    let compose = |system: &str, selection, request_id: Option<&str>| Command::Compose {
        system: system.into(),
        selection,
        create: create.clone(),
        tenant: None,
        request_id: request_id.map(String::from),
        expected_version: None,
    };
    finish(
        core,
        compose("ws1", Selection::Constrained(wants), Some("r1")),
        Ok(()),
    );
    finish(
        core,
        compose("rn1", Selection::Specific(vec!["gpu-6".into()]), None),
        Err("injected: switch refused".into()),
    );
    core.submit(Command::CreateSystem {
        name: "nas".into(),
        tenant: "studio".into(),
        role: Role::NasGateway,
    })
    .expect("system");
    finish(
        core,
        compose(
            "nas",
            Selection::Specific(vec!["hba-0".into(), "nvme-3".into()]),
            None,
        ),
        Ok(()),
    );
    let mount = MountSpec {
        source: MountSource::Namespace {
            device: "nvme-3".into(),
            namespace: 1,
        },
        target: "/srv/projects".into(),
        filesystem: "xfs".into(),
        options: "noatime".into(),
    };
    finish(
        core,
        Command::Mount {
            system: "nas".into(),
            mount: mount.clone(),
            request_id: None,
            expected_version: None,
        },
        Ok(()),
    );
    let export = MountSpec {
        source: MountSource::Export {
            server: "nas".into(),
            path: "/projects".into(),
        },
        target: "/mnt/projects".into(),
        filesystem: "nfs".into(),
        options: "vers=4.2".into(),
    };
    finish(
        core,
        Command::Mount {
            system: "ws1".into(),
            mount: export,
            request_id: None,
            expected_version: None,
        },
        Err("server unreachable".into()),
    );
    finish(
        core,
        Command::Unmount {
            system: "nas".into(),
            target: "/srv/projects".into(),
            request_id: None,
            expected_version: None,
        },
        Err("busy".into()),
    );
    finish(
        core,
        Command::Unmount {
            system: "nas".into(),
            target: "/srv/projects".into(),
            request_id: None,
            expected_version: None,
        },
        Ok(()),
    );
    finish(
        core,
        Command::Decompose {
            system: "nas".into(),
            devices: Some(vec!["hba-0".into()]),
            request_id: None,
            expected_version: None,
        },
        Ok(()),
    );
    let gpu = core.state().systems["ws1"]
        .devices
        .keys()
        .find(|d| d.starts_with("gpu"))
        .cloned()
        .expect("a gpu");
    core.submit(Command::ObserveHealth {
        device: gpu.clone(),
        health: Health::Failed("Xid 79".into()),
    })
    .expect("health");
    finish(
        core,
        Command::Failover {
            system: "ws1".into(),
            device: gpu.clone(),
            request_id: None,
            expected_version: None,
        },
        Ok(()),
    );
    finish(
        core,
        Command::Failover {
            system: "ws1".into(),
            device: core.state().systems["ws1"]
                .devices
                .keys()
                .find(|d| d.starts_with("nic"))
                .cloned()
                .expect("nic"),
            request_id: None,
            expected_version: None,
        },
        Err("bind timed out".into()),
    );
    core.submit(Command::SetService {
        device: gpu,
        in_service: false,
        reason: "RMA".into(),
        expected_version: None,
    })
    .expect("service");
    core.submit(Command::ObserveVanished {
        device: "gpu-7".into(),
    })
    .expect("vanished");
    core.submit(Command::DeleteSystem {
        name: "rn1".into(),
        expected_version: None,
    })
    .expect("delete");
    finish(
        core,
        Command::Decompose {
            system: "ws1".into(),
            devices: None,
            request_id: None,
            expected_version: None,
        },
        Err("detach refused".into()),
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

fn write_fixture() {
    let dir = fixtures().join("journal-v1");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let (log, _) = JournalLog::open(&dir).expect("open");
    let log: Arc<dyn EventLog> = Arc::new(log);
    let config = CoreConfig {
        snapshot_events_interval: 0,
        ..CoreConfig::default()
    };
    let (core, _) = Core::start(log.clone(), config).expect("core");
    scenario(&core.handle());
    let state = core.handle().state();
    core.stop();
    log.close().expect("close");
    let json = serde_json::to_string_pretty(&*state).expect("json");
    std::fs::write(fixtures().join("journal-v1.state.json"), json + "\n").expect("write state");
}

#[test]
fn fixture_journal_replays_into_the_committed_state() {
    if std::env::var_os("APPLIANCE_WRITE_FIXTURE").is_some() {
        write_fixture();
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixtures().join("journal-v1"), scratch.path());
    let (log, _) = JournalLog::open(scratch.path()).expect("the fixture journal opens");
    let (state, report) = recover(&log).expect("the fixture journal replays");
    assert!(report.events_replayed > 50, "{report}");
    let expected: appliance::model::state::State = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("journal-v1.state.json")).expect("read state"),
    )
    .expect("state json");
    assert_eq!(state, expected);
    assert_eq!(state.check_invariants(), Ok(()));
    let kinds: std::collections::BTreeSet<u16> = log
        .replay(1)
        .map(|l| l.expect("replay").event.kind_number())
        .collect();
    assert_eq!(
        kinds.len(),
        24,
        "the fixture holds every event kind: {kinds:?}"
    );
}
