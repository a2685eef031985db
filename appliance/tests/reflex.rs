//! The appliance's reflex on the real journal and the simulated fabric: a composed device pulled
//! from its slot is observed as failed, taken out of service and replaced by the appliance on
//! its own (journaled with the appliance as its maker); a second system is untouched; a failure
//! with no spare left journals no failover until a spare comes back, and then takes it;
//! each fault raises one alarm, with its evidence and the failover it started, until an operator
//! clears it; after a restart nothing is failed over twice.

use std::time::{Duration, Instant};

use appliance::api::control::Client;
use appliance::api::views::{AlarmView, HistoryEntryView, OperationState, SystemView};
use appliance::api::{ErrorCode, HistoryOf, Meta, Query, Reply, Request};
use appliance::decide::command::{NewSystem, Selection, Verb};
use appliance::model::{Door, Role, Severity};
use appliance::serve::{self, FabricChoice, ServeOptions};

fn options(dir: &std::path::Path) -> ServeOptions {
    ServeOptions {
        data_dir: dir.to_path_buf(),
        fabric: FabricChoice::Sim {
            topology: None,
            seed: 3,
        },
        api: None,
        identity: None,
        snapshots: true,
        machine: None,
    }
}

/// The appliance on `dir` with the tenant studio, its simulated fabric and a client.
fn studio(
    dir: &std::path::Path,
) -> (
    serve::Running,
    std::sync::Arc<appliance::testing::sim::SimFabric>,
    Client,
) {
    let running = serve::start(options(dir)).expect("start");
    let sim = running.sim().expect("the simulated fabric");
    let mut client = Client::connect_unix(running.socket_path()).expect("connect");
    order(
        &mut client,
        Verb::CreateTenant {
            name: "studio".into(),
        },
    );
    (running, sim, client)
}

fn ask(client: &mut Client, request: Request) -> Reply {
    match client.call(&request) {
        Ok(Ok(reply)) => reply,
        other => panic!("{request:?}: {other:?}"),
    }
}

fn order(client: &mut Client, verb: Verb) -> Reply {
    ask(client, Request::order(verb, Meta::default()))
}

fn compose(client: &mut Client, system: &str, devices: &[&str]) {
    compose_as(client, system, Role::RenderNode, devices);
}

fn compose_as(client: &mut Client, system: &str, role: Role, devices: &[&str]) {
    let verb = Verb::Compose {
        system: system.into(),
        selection: Selection::Specific(devices.iter().map(|d| (*d).into()).collect()),
        create: Some(NewSystem {
            tenant: "studio".into(),
            role,
        }),
        tenant: None,
        reservation: None,
    };
    order(client, verb);
}

fn system(client: &mut Client, name: &str) -> SystemView {
    match ask(client, Request::query(Query::System { name: name.into() })) {
        Reply::System(system) => system,
        other => panic!("system {name}: {other:?}"),
    }
}

fn devices_of(client: &mut Client, name: &str) -> Vec<String> {
    let mut devices: Vec<String> = system(client, name)
        .devices
        .iter()
        .map(|d| d.id.to_string())
        .collect();
    devices.sort();
    devices
}

/// Polls `probe` every 20 ms for up to 10 s.
fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn nvme_pool(client: &mut Client) -> Vec<(String, bool, String)> {
    match ask(client, Request::query(Query::Devices)) {
        Reply::Devices(devices) => devices
            .into_iter()
            .filter(|d| d.kind == appliance::model::DeviceKind::Nvme)
            .map(|d| (d.id.to_string(), d.in_service, format!("{:?}", d.health)))
            .collect(),
        other => panic!("devices: {other:?}"),
    }
}

fn history_of(client: &mut Client, of: HistoryOf) -> Vec<HistoryEntryView> {
    match ask(client, Request::query(Query::History { of, limit: None })) {
        Reply::History(entries) => entries,
        other => panic!("history: {other:?}"),
    }
}

fn alarms(client: &mut Client) -> Vec<AlarmView> {
    match ask(client, Request::query(Query::Alarms)) {
        Reply::Alarms(alarms) => alarms,
        other => panic!("alarms: {other:?}"),
    }
}

fn present_nvme(client: &mut Client) -> Vec<String> {
    match ask(client, Request::query(Query::Devices)) {
        Reply::Devices(devices) => devices
            .into_iter()
            .filter(|d| d.kind == appliance::model::DeviceKind::Nvme && d.present)
            .map(|d| d.id.to_string())
            .collect(),
        other => panic!("devices: {other:?}"),
    }
}

#[test]
fn a_pulled_drive_is_replaced_by_the_appliance_and_only_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, sim, mut client) = studio(dir.path());
    compose(&mut client, "rn1", &["gpu-0", "nvme-0"]);
    compose(&mut client, "rn2", &["gpu-1", "nvme-1"]);
    let rn2 = system(&mut client, "rn2");

    sim.vanish("nvme-0");
    let replaced = eventually("rn1's nvme-0 replaced", || {
        let devices = devices_of(&mut client, "rn1");
        let settled = system(&mut client, "rn1").pending.is_none();
        (settled && !devices.contains(&"nvme-0".to_string())).then_some(devices)
    });
    assert_eq!(replaced.len(), 2, "gpu-0 and a new NVMe: {replaced:?}");
    assert!(replaced.contains(&"gpu-0".to_string()), "{replaced:?}");
    let pool = nvme_pool(&mut client);
    let pulled = pool.iter().find(|d| d.0 == "nvme-0").expect("nvme-0");
    assert!(!pulled.1, "the failed drive is out of service: {pulled:?}");
    assert_eq!(
        system(&mut client, "rn2"),
        rn2,
        "the healthy system is not touched"
    );

    // The journal says who did it: the appliance, with the failure as the reason.
    let history = history_of(&mut client, HistoryOf::System("rn1".into()));
    let failovers: Vec<_> = history
        .iter()
        .filter(|e| e.kind == "failover_requested")
        .collect();
    assert_eq!(
        failovers.len(),
        1,
        "one failover for one fault: {history:?}"
    );
    let by = failovers[0].by.as_ref().expect("made by someone");
    assert_eq!(by.door, Door::Appliance, "{by:?}");
    assert!(
        history.iter().any(|e| e.kind == "failover_completed"),
        "{history:?}"
    );

    // The alarm stands, with its evidence and the failover it started (completed).
    let raised = alarms(&mut client);
    assert_eq!(raised.len(), 1, "{raised:?}");
    let alarm = &raised[0];
    assert_eq!(
        (
            alarm.device.as_str(),
            alarm.severity,
            alarm.system.as_ref().map(|s| s.as_str())
        ),
        ("nvme-0", Severity::Critical, Some("rn1")),
        "{alarm:?}"
    );
    assert!(alarm.message.contains("removed"), "{alarm:?}");
    assert!(!alarm.evidence.is_empty(), "{alarm:?}");
    let failover = alarm.failover.as_ref().expect("the failover it started");
    assert_eq!(Some(failover.id), alarm.failover_op);
    assert_eq!(failover.id, failovers[0].op.expect("an op"), "{alarm:?}");
    assert_eq!(failover.state, OperationState::Completed, "{alarm:?}");
    let first_alarm = alarm.id;

    // Pull every remaining free NVMe's twin: rn2's drive fails with no spare left. The
    // failover is refused, the drive stays out of service, and the sweep does not retry it.
    let spares: Vec<String> = nvme_pool(&mut client)
        .into_iter()
        .filter(|(id, in_service, _)| *in_service && id != "nvme-1" && !replaced.contains(id))
        .map(|(id, _, _)| id)
        .collect();
    for spare in &spares {
        sim.vanish(spare);
    }
    eventually("the spares gone from the pool", || {
        let present = present_nvme(&mut client);
        spares.iter().all(|s| !present.contains(s)).then_some(())
    });
    let head_before = match ask(&mut client, Request::query(Query::Status)) {
        Reply::Status(status) => status.journal_head,
        other => panic!("status: {other:?}"),
    };
    sim.vanish("nvme-1");
    let second = eventually("nvme-1's alarm", || {
        alarms(&mut client)
            .into_iter()
            .find(|a| a.device.as_str() == "nvme-1")
    });
    // Two sweeps later: nvme-1's fault was recorded once (its health, its alarm, its leaving
    // the pool); the failover that cannot be made journals nothing, however often it is tried.
    std::thread::sleep(Duration::from_millis(2_500));
    let after: Vec<String> = history_of(&mut client, HistoryOf::Device("nvme-1".into()))
        .into_iter()
        .filter(|e| e.sequence > head_before)
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        after,
        ["health_changed", "alarm_raised", "device_vanished"],
        "one record of the fault, nothing for the refused failovers"
    );
    assert!(
        devices_of(&mut client, "rn2").contains(&"nvme-1".to_string()),
        "no spare: rn2 keeps its failed drive, its alarm standing"
    );
    assert_eq!(
        second.failover_op, None,
        "no failover could be made: {second:?}"
    );
    // A spare comes back to the pool: the next sweep takes it.
    sim.restore(&spares[0]);
    let taken = eventually("rn2 failed over to the returned spare", || {
        let devices = devices_of(&mut client, "rn2");
        let settled = system(&mut client, "rn2").pending.is_none();
        (settled && !devices.contains(&"nvme-1".to_string())).then_some(devices)
    });
    assert!(taken.contains(&spares[0]), "{taken:?}");
    let second = alarms(&mut client)
        .into_iter()
        .find(|a| a.device.as_str() == "nvme-1")
        .expect("nvme-1's alarm stands");
    assert_eq!(
        second.failover.as_ref().map(|o| o.state),
        Some(OperationState::Completed),
        "{second:?}"
    );

    // An operator clears both alarms: none is left.
    order(&mut client, Verb::ClearAlarm { alarm: first_alarm });
    order(&mut client, Verb::ClearAlarm { alarm: second.id });
    assert_eq!(alarms(&mut client), vec![], "every alarm ended");
    match client.call(&Request::order(
        Verb::ClearAlarm { alarm: first_alarm },
        Meta::default(),
    )) {
        Ok(Err(e)) => assert_eq!(e.code, ErrorCode::UnknownAlarm, "{e:?}"),
        other => panic!("clearing an ended alarm: {other:?}"),
    }

    // After a restart, the sweep finds nothing new to do.
    drop(client);
    running.shutdown().expect("shutdown");
    let running = serve::start(options(dir.path())).expect("restart");
    let mut client = Client::connect_unix(running.socket_path()).expect("connect");
    let head = match ask(&mut client, Request::query(Query::Status)) {
        Reply::Status(status) => status.journal_head,
        other => panic!("status: {other:?}"),
    };
    std::thread::sleep(Duration::from_millis(1_500));
    let history = history_of(&mut client, HistoryOf::System("rn1".into()));
    assert_eq!(
        history
            .iter()
            .filter(|e| e.kind == "failover_requested" && e.sequence > head)
            .count(),
        0,
        "nothing failed over twice after the restart"
    );
    running.shutdown().expect("shutdown");
}

/// The NAS gateway's mirror on the simulated fabric: a mirror is a gateway's (another role is
/// refused), its drives cannot be decomposed while it is mounted, and when one of them is
/// pulled the appliance fails it over with the mount: the mirror then lists the spare, its
/// condition is journaled (clean again) and the healthy drive is kept.
#[test]
fn a_gateway_mirror_fails_over_with_its_mount() {
    use appliance::api::views::MountSourceView;
    use appliance::model::{MountSource, MountSpec};

    let dir = tempfile::tempdir().expect("tempdir");
    let (running, sim, mut client) = studio(dir.path());
    compose_as(&mut client, "nas", Role::NasGateway, &["nvme-0", "nvme-1"]);
    compose_as(&mut client, "rn", Role::RenderNode, &["nvme-2"]);
    let mirror = |devices: &[&str]| MountSpec {
        source: MountSource::Mirror {
            devices: devices.iter().map(|d| (*d).into()).collect(),
        },
        target: "/srv/projects".into(),
        filesystem: "ext4".into(),
        options: "defaults".into(),
    };
    let refused = |client: &mut Client, system: &str, mount: MountSpec| {
        let verb = Verb::Mount {
            system: system.into(),
            mount,
        };
        match client.call(&Request::order(verb, Meta::default())) {
            Ok(Err(e)) => e,
            other => panic!("a bad mirror was accepted: {other:?}"),
        }
    };
    let e = refused(&mut client, "rn", mirror(&["nvme-2", "nvme-2"]));
    assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
    assert!(e.message.contains("nas_gateway"), "{e:?}");
    let e = refused(&mut client, "nas", mirror(&["nvme-0"]));
    assert!(e.message.contains("two or more"), "{e:?}");
    let e = refused(&mut client, "nas", mirror(&["nvme-0", "nvme-2"]));
    assert_eq!(e.code, ErrorCode::DeviceNotComposed, "{e:?}");

    let verb = Verb::Mount {
        system: "nas".into(),
        mount: mirror(&["nvme-0", "nvme-1"]),
    };
    let waited = Meta {
        wait: true,
        ..Meta::default()
    };
    match ask(&mut client, Request::order(verb, waited)) {
        Reply::Accepted(accepted) => assert_eq!(
            accepted.operation.map(|o| o.state),
            Some(OperationState::Completed)
        ),
        other => panic!("mount: {other:?}"),
    }
    let condition = |client: &mut Client| {
        let nas = system(client, "nas");
        let mount = nas.mounts.first().cloned().expect("the mirror mount");
        (mount, nas.pending.is_none())
    };
    eventually("the mirror seen clean", || {
        let (mount, _) = condition(&mut client);
        (mount.condition.as_deref() == Some("clean")).then_some(())
    });
    let verb = Verb::Decompose {
        system: "nas".into(),
        devices: Some(vec!["nvme-1".into()]),
    };
    match client.call(&Request::order(verb, Meta::default())) {
        Ok(Err(e)) => assert_eq!(e.code, ErrorCode::DeviceMounted, "{e:?}"),
        other => panic!("a mirror's drive was decomposed: {other:?}"),
    }

    sim.vanish("nvme-0");
    let moved = eventually("the mirror moved off nvme-0", || {
        let (mount, idle) = condition(&mut client);
        let MountSourceView::Mirror { devices } = &mount.source else {
            panic!("{mount:?}")
        };
        let devices: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
        (idle && !devices.contains(&"nvme-0".to_string())).then_some(devices)
    });
    assert_eq!(moved.len(), 2, "{moved:?}");
    assert!(
        moved.contains(&"nvme-1".to_string()),
        "the healthy drive is kept: {moved:?}"
    );
    let mut held = devices_of(&mut client, "nas");
    held.sort();
    let mut mirrored = moved.clone();
    mirrored.sort();
    assert_eq!(held, mirrored, "the gateway holds the mirror's drives");
    assert_eq!(
        devices_of(&mut client, "rn"),
        ["nvme-2"],
        "rn is not touched"
    );
    let history = history_of(&mut client, HistoryOf::System("nas".into()));
    let kinds: Vec<&str> = history.iter().map(|e| e.kind.as_str()).collect();
    assert!(kinds.contains(&"failover_completed"), "{kinds:?}");
    assert!(kinds.contains(&"mount_observed"), "{kinds:?}");

    // md fails a drive out of the mirror (as on its I/O errors): the appliance marks the drive
    // failed with md's word as the evidence, and moves the mirror off it.
    let volumes = running.sim_volumes().expect("the simulated volumes");
    let port = system(&mut client, "nas")
        .devices
        .iter()
        .find(|d| d.id.as_str() == "nvme-1")
        .map(|d| d.port)
        .expect("nvme-1 in the gateway");
    let Reply::Ports(ports) = ask(&mut client, Request::query(Query::Ports)) else {
        panic!("ports")
    };
    let slot = ports.iter().find(|p| p.id == port).expect("its port").slot;
    let address = appliance::testing::sim::address_of_slot(slot);
    let member = appliance::testing::volumes::namespace_path(address, 1);
    assert!(volumes.members().contains(&member), "{member:?}");
    assert!(volumes.fail_member(&member));
    let alarm = eventually("an alarm from md", || {
        alarms(&mut client)
            .into_iter()
            .find(|a| a.message == "md failed it out of the mirror")
    });
    assert!(
        alarm.evidence.contains("state=faulty") && alarm.device.as_str() == "nvme-1",
        "{alarm:?}"
    );
    let failed = alarm.device.to_string();
    let again = eventually("the mirror moved off the failed drive", || {
        let (mount, idle) = condition(&mut client);
        let MountSourceView::Mirror { devices } = &mount.source else {
            panic!("{mount:?}")
        };
        let devices: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
        (idle && !devices.contains(&failed)).then_some(devices)
    });
    assert_eq!(again.len(), 2, "{again:?}");
    assert_eq!(
        devices_of(&mut client, "rn"),
        ["nvme-2"],
        "rn is not touched"
    );
    running.shutdown().expect("shutdown");
}

/// The switch's own report: the fabric says rn1's NVMe's port went down. The drive is degraded
/// (a warning alarm with the switch's words as evidence); its link back up inside the grace
/// ends the alarm, nothing moved; down again and past the grace (the default 3 s), the
/// appliance fails rn1 over to a spare.
#[test]
fn a_fabric_port_down_past_its_grace_fails_the_device_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_running, sim, mut client) = studio(dir.path());
    compose(&mut client, "rn1", &["gpu-0", "nvme-0"]);
    assert!(
        !sim.port_link("nvme-5", false),
        "nvme-5 is attached nowhere"
    );

    assert!(sim.port_link("nvme-0", false));
    let warning = eventually("a warning for nvme-0's port", || {
        alarms(&mut client)
            .into_iter()
            .find(|a| a.device.as_str() == "nvme-0")
    });
    assert_eq!(warning.severity, Severity::Warning, "{warning:?}");
    assert!(
        warning.message.starts_with("fabric port ") && warning.message.ends_with(" down"),
        "{warning:?}"
    );
    assert!(
        warning.evidence.contains("the switch reported port")
            && warning.evidence.contains("surprise down"),
        "{warning:?}"
    );
    assert!(sim.port_link("nvme-0", true));
    eventually("the alarm ended by the link back up", || {
        alarms(&mut client).is_empty().then_some(())
    });
    assert_eq!(devices_of(&mut client, "rn1"), ["gpu-0", "nvme-0"]);

    assert!(sim.port_link("nvme-0", false));
    let replaced = eventually("rn1 failed over from nvme-0", || {
        let devices = devices_of(&mut client, "rn1");
        let settled = system(&mut client, "rn1").pending.is_none();
        (settled && !devices.contains(&"nvme-0".to_string())).then_some(devices)
    });
    assert_eq!(replaced.len(), 2, "{replaced:?}");
    let raised = alarms(&mut client);
    let critical = raised
        .iter()
        .find(|a| a.device.as_str() == "nvme-0" && a.severity == Severity::Critical)
        .unwrap_or_else(|| panic!("a critical alarm past the grace: {raised:?}"));
    assert!(
        critical.message.ends_with("down for more than 3000 ms"),
        "{critical:?}"
    );
    let failover = critical.failover.as_ref().expect("the failover it started");
    assert_eq!(failover.state, OperationState::Completed, "{critical:?}");
}

/// SMART's media errors count rising on rn1's NVMe: the drive is failed with the counts as
/// evidence, and the appliance fails rn1 over to a spare.
#[test]
fn media_errors_rising_fail_the_drive_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_running, sim, mut client) = studio(dir.path());
    compose(&mut client, "rn1", &["gpu-0", "nvme-0"]);
    assert!(sim.media_errors("nvme-0", 7, 2));
    let replaced = eventually("rn1 failed over from nvme-0", || {
        let devices = devices_of(&mut client, "rn1");
        let settled = system(&mut client, "rn1").pending.is_none();
        (settled && !devices.contains(&"nvme-0".to_string())).then_some(devices)
    });
    assert_eq!(replaced.len(), 2, "{replaced:?}");
    let raised = alarms(&mut client);
    let alarm = raised
        .iter()
        .find(|a| a.device.as_str() == "nvme-0")
        .unwrap_or_else(|| panic!("nvme-0's alarm: {raised:?}"));
    assert_eq!(alarm.severity, Severity::Critical, "{alarm:?}");
    assert_eq!(alarm.message, "NVMe media errors rising (SMART)");
    assert!(
        alarm
            .evidence
            .contains("media_errors=7 (+2 since the last read)"),
        "{alarm:?}"
    );
}
