//! Writes the fixture journal of the current event schema, and the State it replays into, for
//! `tests/fixture.rs`: `cargo run -p appliance --example write_fixture -- DIR` writes
//! `DIR/journal-v<N>` and `DIR/journal-v<N>.state.json` (N = `model::event::SCHEMA_VERSION`),
//! and refuses to overwrite them. A fixture is frozen once committed: older builds' journals must
//! keep replaying into their committed State, so this tool never rewrites one; a new schema
//! version gets a new fixture next to the old ones.
//!
//! The scenario is a short life of an appliance that journals every event kind, with typed
//! failures of every operation kind, orders made through several doors, and the accounts,
//! sessions, subscriptions and reservations of the Redfish door.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use appliance::api::auth::hash_password;
use appliance::core::log::{EventLog, JournalLog};
use appliance::core::{Core, CoreConfig, CoreHandle};
use appliance::decide::command::{Command, NewSystem, Observation, Order, Selection, Verb};
use appliance::decide::placement::Want;
use appliance::model::event::SCHEMA_VERSION;
use appliance::model::{
    AccountChange, AccountRole, DeviceKind, Door, Failure, Health, MountSource, MountSpec, Origin,
    Password, PortId, ReservationEnd, Role, Sealed, Secret, SessionEnd, Subscription, SwitchStep,
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
    access(&core.handle())?;
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
            reservation: None,
        },
        request_id: request_id.map(Into::into),
        expected_version: None,
        by: by_api("ana"),
        scope: None,
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
        evidence: "the fixture".into(),
        at_ms: 1,
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
            repaired: false,
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

/// Accounts, a session, a subscription, a reservation: kinds 25 to 33.
fn access(core: &CoreHandle) -> anyhow::Result<()> {
    let hashed = |plain: &str| -> anyhow::Result<Password> {
        let hash = hash_password(&Secret(plain.into())).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Password::Hashed(hash))
    };
    let admin = Origin::door(Door::Local);
    core.submit(order(
        Verb::CreateAccount {
            name: "ana".into(),
            role: AccountRole::Operator,
            tenant: Some("studio".into()),
            password: hashed("fixture-Passw0rd-one")?,
            password_change_required: true,
        },
        admin.clone(),
    ))?;
    core.submit(order(
        Verb::ChangeAccount {
            name: "ana".into(),
            change: AccountChange::Password {
                password: hashed("fixture-Passw0rd-two")?,
                change_required: false,
            },
        },
        by_api("ana"),
    ))?;
    core.submit(order(
        Verb::ChangeAccount {
            name: "ana".into(),
            change: AccountChange::Totp(Some(Sealed {
                nonce: vec![7; 12],
                ciphertext: vec![1, 2, 3, 4],
            })),
        },
        by_api("ana"),
    ))?;
    core.submit(order(
        Verb::OpenSession {
            id: "s1".into(),
            account: "ana".into(),
            token_sha256: "0".repeat(64),
            at_ms: 1_700_000_000_000,
            grant: None,
        },
        Origin::door(Door::Api),
    ))?;
    core.submit(order(
        Verb::CreateSubscription {
            subscription: Subscription {
                id: "e1".into(),
                destination: "https://events.studio.example/redfish".into(),
                context: "render-farm".into(),
                account: "ana".into(),
                created_ms: 1_700_000_000_100,
            },
        },
        by_api("ana"),
    ))?;
    let state = core.state();
    let free = |kind| {
        state
            .devices
            .values()
            .find(|d| d.kind == kind && d.is_available())
            .map(|d| d.id.clone())
            .context("a free device")
    };
    core.submit(order(
        Verb::Reserve {
            id: "r1".into(),
            devices: vec![free(DeviceKind::Gpu)?, free(DeviceKind::Nvme)?],
            manifest: r#"{"Stanzas":[]}"#.into(),
            at_ms: 1_700_000_000_200,
            expires_ms: 1_700_000_600_200,
        },
        by_api("ana"),
    ))?;
    core.submit(order(
        Verb::EndReservation {
            id: "r1".into(),
            end: ReservationEnd::Cancelled,
        },
        by_api("ana"),
    ))?;
    core.submit(order(
        Verb::DeleteSubscription { id: "e1".into() },
        by_api("ana"),
    ))?;
    core.submit(order(
        Verb::CloseSession {
            id: "s1".into(),
            end: SessionEnd::Logout,
        },
        by_api("ana"),
    ))?;
    core.submit(order(Verb::DeleteAccount { name: "ana".into() }, admin))?;
    Ok(())
}
