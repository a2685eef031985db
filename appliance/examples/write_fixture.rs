//! Writes the fixture journal of the current event schema, and the State it replays into, for
//! `tests/fixture.rs`: `cargo run -p appliance --example write_fixture -- DIR` writes
//! `DIR/journal-v<N>` and `DIR/journal-v<N>.state.json` (N = `model::event::SCHEMA_VERSION`),
//! and refuses to overwrite them. A fixture is frozen once committed: older builds' journals must
//! keep replaying into their committed State, so this tool never rewrites one; a new schema
//! version gets a new fixture next to the old ones.
//!
//! The scenario is a short life of an appliance that journals every event kind, with typed
//! failures of every operation kind and orders made through several doors.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use appliance::core::log::{EventLog, JournalLog};
use appliance::core::{Core, CoreConfig, CoreHandle};
use appliance::decide::command::{Command, NewSystem, Observation, Order, Selection, Verb};
use appliance::decide::placement::Want;
use appliance::model::event::SCHEMA_VERSION;
use appliance::model::{
    DeviceKind, Door, Failure, Health, MountSource, MountSpec, Origin, PortId, Role, SwitchStep,
};
use appliance::runtime::adapt::inventory_commands;
use appliance::serve::SAMPLE_TOPOLOGY;

fn main() -> anyhow::Result<()> {
    let Some(dir) = std::env::args().nth(1).map(PathBuf::from) else {
        bail!("usage: write_fixture DIR (e.g. appliance/tests/fixtures)");
    };
    let journal = dir.join(format!("journal-v{SCHEMA_VERSION}"));
    let state_file = dir.join(format!("journal-v{SCHEMA_VERSION}.state.json"));
    if journal.exists() || state_file.exists() {
        bail!(
            "{} or {} exists: committed fixtures are frozen",
            journal.display(),
            state_file.display()
        );
    }
    std::fs::create_dir_all(&journal).with_context(|| format!("create {}", journal.display()))?;
    let (log, _) = JournalLog::open(&journal)?;
    let log: Arc<dyn EventLog> = Arc::new(log);
    let config = CoreConfig {
        snapshot_events_interval: 0,
        ..CoreConfig::default()
    };
    let (core, _) = Core::start(log.clone(), config)?;
    scenario(&core.handle())?;
    let state = core.handle().state();
    core.stop();
    log.close()?;
    let json = serde_json::to_string_pretty(&*state)?;
    std::fs::write(&state_file, json + "\n")
        .with_context(|| format!("write {}", state_file.display()))?;
    println!(
        "wrote {} ({} events) and {}",
        journal.display(),
        state.head,
        state_file.display()
    );
    Ok(())
}

fn by_api(account: &str) -> Origin {
    Origin::account(Door::Api, account)
}

fn order(verb: Verb, by: Origin) -> Command {
    Command::Order(Order::new(verb, by))
}

/// Submits an order that starts an operation, then its outcome.
fn finish(core: &CoreHandle, command: Command, result: Result<(), Failure>) -> anyhow::Result<()> {
    let op = core.submit(command)?.op.context("an operation")?;
    core.submit(Command::Finish { op, result })?;
    Ok(())
}

fn compose(system: &str, selection: Selection, request_id: Option<&str>) -> Command {
    Command::Order(Order {
        verb: Verb::Compose {
            system: system.into(),
            selection,
            create: Some(NewSystem {
                tenant: "studio".into(),
                role: Role::Workstation,
            }),
            tenant: None,
        },
        request_id: request_id.map(Into::into),
        expected_version: None,
        by: by_api("ana"),
    })
}

fn scenario(core: &CoreHandle) -> anyhow::Result<()> {
    let topology = appliance::topology::parse(SAMPLE_TOPOLOGY, Path::new("sample.toml"))?;
    let identity = topology.identity.clone().context("identity")?;
    core.submit(Command::appliance(Verb::SetIdentity { identity }))?;
    let rdma = topology.rdma_nics();
    for command in inventory_commands(&topology.inventory(), &core.state(), &rdma) {
        core.submit(command)?;
    }
    core.submit(order(
        Verb::CreateTenant {
            name: "studio".into(),
        },
        Origin::door(Door::Local),
    ))?;
    let wants = vec![
        Want::of(DeviceKind::Gpu, 2).at_least(24 << 30),
        Want::of(DeviceKind::Nvme, 1).at_least(2_000_000_000_000),
        Want::of(DeviceKind::Nic, 1).rdma(),
    ];
    finish(
        core,
        compose("ws1", Selection::Constrained(wants), Some("r1")),
        Ok(()),
    )?;
    finish(
        core,
        compose("rn1", Selection::Specific(vec!["gpu-6".into()]), None),
        Err(Failure::SwitchRefused {
            device: "gpu-6".into(),
            port: PortId(7),
            step: SwitchStep::Attach,
            reason: "injected: switch refused".into(),
        }),
    )?;
    core.submit(order(
        Verb::CreateSystem {
            name: "nas".into(),
            tenant: "studio".into(),
            role: Role::NasGateway,
        },
        Origin::account(Door::Console, "console"),
    ))?;
    finish(
        core,
        compose(
            "nas",
            Selection::Specific(vec!["hba-0".into(), "nvme-3".into()]),
            None,
        ),
        Ok(()),
    )?;
    let mount = MountSpec {
        source: MountSource::Namespace {
            device: "nvme-3".into(),
            namespace: 1,
        },
        target: "/srv/projects".into(),
        filesystem: "xfs".into(),
        options: "noatime".into(),
    };
    let system = || "nas".into();
    finish(
        core,
        order(
            Verb::Mount {
                system: system(),
                mount,
            },
            by_api("ana"),
        ),
        Ok(()),
    )?;
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
        order(
            Verb::Mount {
                system: "ws1".into(),
                mount: export,
            },
            by_api("ana"),
        ),
        Err(Failure::Unclassified {
            reason: "server unreachable".into(),
        }),
    )?;
    let unmount = || Verb::Unmount {
        system: system(),
        target: "/srv/projects".into(),
    };
    finish(
        core,
        order(unmount(), by_api("ana")),
        Err(Failure::Inconsistent {
            what: "mount /srv/projects".into(),
        }),
    )?;
    finish(core, order(unmount(), by_api("ana")), Ok(()))?;
    finish(
        core,
        order(
            Verb::Decompose {
                system: system(),
                devices: Some(vec!["hba-0".into()]),
            },
            by_api("ana"),
        ),
        Ok(()),
    )?;
    let ws1 = core.state().systems["ws1"].clone();
    let gpu = ws1
        .devices
        .keys()
        .find(|d| d.starts_with("gpu"))
        .cloned()
        .context("a gpu")?;
    core.submit(Command::Observe(Observation::Health {
        device: gpu.clone(),
        health: Health::Failed("Xid 79".into()),
    }))?;
    let failover = |device| Verb::Failover {
        system: "ws1".into(),
        device,
    };
    finish(core, order(failover(gpu.clone()), by_api("ana")), Ok(()))?;
    let nic = ws1
        .devices
        .keys()
        .find(|d| d.starts_with("nic"))
        .cloned()
        .context("a nic")?;
    finish(
        core,
        order(failover(nic.clone()), Origin::appliance()),
        Err(Failure::BindTimeout {
            device: nic,
            driver: "the kernel's default driver".into(),
            reason: "timed out after 10000 ms".into(),
        }),
    )?;
    core.submit(order(
        Verb::SetService {
            device: gpu,
            in_service: false,
            reason: "RMA".into(),
        },
        by_api("ana"),
    ))?;
    core.submit(Command::Observe(Observation::Vanished {
        device: "gpu-7".into(),
    }))?;
    core.submit(order(
        Verb::DeleteSystem { name: "rn1".into() },
        by_api("ana"),
    ))?;
    finish(
        core,
        order(
            Verb::Decompose {
                system: "ws1".into(),
                devices: None,
            },
            by_api("ana"),
        ),
        Err(Failure::SwitchRefused {
            device: "gpu-0".into(),
            port: PortId(1),
            step: SwitchStep::Detach,
            reason: "detach refused".into(),
        }),
    )?;
    Ok(())
}
