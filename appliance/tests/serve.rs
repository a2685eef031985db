//! The service end to end on the real journal and the simulated fabric: compose and decompose
//! through the control socket, refusals with their codes, idempotent request ids, history, then
//! a clean restart; and `appliance serve` as a process, driven over HTTPS, killed with `kill -9`
//! and restarted onto the same state.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use appliance::api::client::Trust;
use appliance::api::control::{decode_answer, encode_request, Client};
use appliance::api::views::{OperationState, SystemView};
use appliance::api::{ErrorCode, HistoryOf, Meta, Query, Reply, Request};
use appliance::decide::command::{NewSystem, Selection, Verb};
use appliance::decide::placement::Want;
use appliance::model::{DeviceKind, Role};
use appliance::serve::{self, FabricChoice, ServeOptions};

fn options(dir: &std::path::Path) -> ServeOptions {
    ServeOptions {
        data_dir: dir.to_path_buf(),
        fabric: FabricChoice::Sim {
            topology: None,
            seed: 1,
        },
        api: None,
        identity: None,
        snapshots: true,
        machine: None,
    }
}

fn call(client: &mut Client, request: Request) -> Result<Reply, appliance::api::ApiError> {
    client
        .call(&request)
        .unwrap_or_else(|e| panic!("{request:?}: {e}"))
}

fn order(verb: Verb, request_id: Option<&str>, expected_version: Option<u64>) -> Request {
    let meta = Meta {
        request_id: request_id.map(Into::into),
        expected_version,
        wait: true,
    };
    Request::order(verb, meta)
}

fn create_tenant() -> Request {
    order(
        Verb::CreateTenant {
            name: "studio".into(),
        },
        None,
        None,
    )
}

fn compose_wants(system: &str, request_id: Option<&str>) -> Request {
    let selection = Selection::Constrained(vec![
        Want::of(DeviceKind::Gpu, 2).at_least(24 << 30),
        Want::of(DeviceKind::Nvme, 1).at_least(2_000_000_000_000),
    ]);
    let verb = Verb::Compose {
        system: system.into(),
        selection,
        create: Some(NewSystem {
            tenant: "studio".into(),
            role: Role::Workstation,
        }),
        tenant: None,
        reservation: None,
    };
    order(verb, request_id, None)
}

fn error_code(answer: &Result<Reply, appliance::api::ApiError>) -> ErrorCode {
    match answer {
        Err(e) => e.code,
        Ok(other) => panic!("expected an error, got {other:?}"),
    }
}

fn systems(client: &mut Client) -> Vec<SystemView> {
    match call(client, Request::query(Query::Systems)) {
        Ok(Reply::Systems(systems)) => systems,
        other => panic!("{other:?}"),
    }
}

#[test]
fn compose_decompose_restart_same_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = serve::start(options(dir.path())).expect("start");
    let mut client = Client::connect_unix(running.socket_path()).expect("connect");
    assert!(matches!(
        call(&mut client, create_tenant()),
        Ok(Reply::Accepted(_))
    ));
    let Ok(Reply::Accepted(first)) = call(&mut client, compose_wants("ws1", Some("r1"))) else {
        panic!("compose refused")
    };
    let operation = first.operation.clone().expect("waited for the outcome");
    assert_eq!(operation.state, OperationState::Completed);
    let Ok(Reply::Accepted(again)) = call(&mut client, compose_wants("ws1", Some("r1"))) else {
        panic!("repeat refused")
    };
    assert!(again.repeated && again.op == first.op, "{again:?}");
    let ws1 = systems(&mut client)
        .into_iter()
        .find(|s| s.name == "ws1")
        .expect("ws1");
    assert_eq!(ws1.devices.len(), 3);
    let held = ws1.devices.first().expect("a device").id.clone();
    let conflict = Verb::Compose {
        system: "ws2".into(),
        selection: Selection::Specific(vec![held.clone()]),
        create: Some(NewSystem {
            tenant: "studio".into(),
            role: Role::RenderNode,
        }),
        tenant: Some("studio".into()),
        reservation: None,
    };
    assert_eq!(
        error_code(&call(&mut client, order(conflict, None, None))),
        ErrorCode::DeviceComposed
    );
    let stale = Verb::Decompose {
        system: "ws1".into(),
        devices: None,
    };
    assert_eq!(
        error_code(&call(&mut client, order(stale, None, Some(1)))),
        ErrorCode::StaleVersion
    );
    let history = call(
        &mut client,
        Request::query(Query::History {
            of: HistoryOf::Device(held.to_string()),
            limit: None,
        }),
    );
    let Ok(Reply::History(entries)) = history else {
        panic!("{history:?}")
    };
    assert!(
        entries.len() >= 3,
        "discovered, compose requested, completed: {entries:?}"
    );
    let before = systems(&mut client);
    drop(client);
    running.shutdown().expect("clean shutdown");

    let running = serve::start(options(dir.path())).expect("restart");
    assert!(running.report().events_replayed > 0, "{}", running.report());
    let mut client = Client::connect_unix(running.socket_path()).expect("connect");
    assert_eq!(
        systems(&mut client),
        before,
        "same state after a clean restart"
    );
    let decompose = Verb::Decompose {
        system: "ws1".into(),
        devices: None,
    };
    let Ok(Reply::Accepted(done)) = call(&mut client, order(decompose, None, None)) else {
        panic!("decompose refused")
    };
    assert_eq!(
        done.operation.map(|o| o.state),
        Some(OperationState::Completed)
    );
    let Ok(Reply::Status(status)) = call(&mut client, Request::query(Query::Status)) else {
        panic!("status")
    };
    assert_eq!(status.pools["gpu"].composed, 0);
    assert_eq!(status.operations_pending, 0);
    running.shutdown().expect("clean shutdown");
}

/// Kills the child on every exit path.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const PASSWORD: &str = "serve-test-Passw0rd";

/// `appliance serve` on port 0 with a known admin password; returns the API's base URL.
fn spawn(dir: &std::path::Path) -> (Serving, String) {
    let password_file = dir.with_extension("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("write the password file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_appliance"))
        .args(["serve", "--fabric", "sim", "--api", "127.0.0.1:0"])
        .arg("--admin-password-file")
        .arg(&password_file)
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn appliance serve");
    let stdout = child.stdout.take().expect("stdout");
    let serving = Serving(child);
    // The ready line; EOF (the child died) fails the test instead of hanging.
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the ready line");
    let url = line.trim().rsplit("api=").next().unwrap_or("").to_string();
    assert!(
        url.starts_with("https://127.0.0.1:"),
        "no API URL in {line:?}"
    );
    (serving, url)
}

/// One request over HTTPS (`POST /redfish/v1/Oem/Appliance/Requests`, HTTP Basic).
fn https_call(url: &str, request: Request) -> Result<Reply, appliance::api::ApiError> {
    let client =
        appliance::api::client::Client::new(url, &Trust::Insecure, Duration::from_secs(60))
            .expect("client")
            .with_basic("admin", PASSWORD);
    let body: serde_json::Value =
        serde_json::from_str(&encode_request(&request)).expect("request JSON");
    let answer = client
        .post("/redfish/v1/Oem/Appliance/Requests", &body)
        .unwrap_or_else(|e| panic!("{request:?}: {e}"));
    assert_eq!(answer.status, 200, "{request:?}: {:?}", answer.json());
    decode_answer(&String::from_utf8_lossy(&answer.body)).expect("an answer")
}

fn https_systems(url: &str) -> Vec<SystemView> {
    match https_call(url, Request::query(Query::Systems)) {
        Ok(Reply::Systems(systems)) => systems,
        other => panic!("{other:?}"),
    }
}

#[test]
fn kill_9_then_restart_finds_the_same_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut first, url) = spawn(dir.path());
    https_call(&url, create_tenant()).expect("tenant created");
    let Ok(Reply::Accepted(_)) = https_call(&url, compose_wants("ws1", None)) else {
        panic!("compose refused")
    };
    let before = https_systems(&url);
    first.0.kill().expect("kill -9");
    first.0.wait().expect("reap");

    let (_second, url) = spawn(dir.path());
    assert_eq!(https_systems(&url), before, "same state after kill -9");
}

/// `appliance ctl` as a user runs it, over HTTPS with the pinned certificate.
fn ctl(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_appliance"))
        .arg("ctl")
        .args(args)
        .env("XDG_CONFIG_HOME", config)
        .env_remove("APPLIANCE_PASSWORD")
        .env_remove("APPLIANCE_USER")
        .output()
        .expect("run appliance ctl")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn ctl_logs_in_composes_and_reads_history_over_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tempfile::tempdir().expect("config dir");
    let (_serving, url) = spawn(dir.path());
    let cert = dir.path().join("tls/cert.pem");
    let cert = cert.to_str().expect("utf-8 path");
    let password_file = dir.path().with_extension("password");
    let password_file = password_file.to_str().expect("utf-8 path");

    let out = ctl(config.path(), &["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no appliance named"),
        "{}",
        text(&out)
    );

    let wrong = dir.path().with_extension("wrong");
    std::fs::write(&wrong, "Not-The-Passw0rd\n").expect("write");
    let out = ctl(
        config.path(),
        &[
            "--url",
            &url,
            "--ca-cert",
            cert,
            "login",
            "--user",
            "admin",
            "--password-file",
            wrong.to_str().expect("path"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("AccessUnauthorized"),
        "{}",
        text(&out)
    );

    let out = ctl(
        config.path(),
        &[
            "--url",
            &url,
            "--ca-cert",
            cert,
            "login",
            "--user",
            "admin",
            "--password-file",
            password_file,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let session = config.path().join("appliance/session.json");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&session)
        .expect("session file")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "the session file is the user's only: {mode:o}"
    );

    let out = ctl(config.path(), &["create-tenant", "studio"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = ctl(
        config.path(),
        &[
            "compose",
            "ws1",
            "--want",
            "gpu:2:24",
            "--tenant",
            "studio",
            "--role",
            "workstation",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = ctl(config.path(), &["--json", "systems"]);
    assert!(out.status.success(), "{}", text(&out));
    let systems: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(systems["systems"][0]["name"], "ws1", "{systems}");
    assert_eq!(
        systems["systems"][0]["devices"].as_array().map(Vec::len),
        Some(2)
    );

    // The same device again: the API's message and MessageId, exit 2, no stack trace.
    let held = systems["systems"][0]["devices"][0]["id"]
        .as_str()
        .expect("a device")
        .to_string();
    let out = ctl(
        config.path(),
        &[
            "compose",
            "ws2",
            "--device",
            &held,
            "--tenant",
            "studio",
            "--role",
            "workstation",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("ResourceBlockInUse"),
        "{}",
        text(&out)
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{}",
        text(&out)
    );

    // The composition made with ctl is a Redfish System, its blocks composed.
    let api = appliance::api::client::Client::new(
        &url,
        &Trust::Pinned(std::fs::read_to_string(cert).expect("cert")),
        Duration::from_secs(30),
    )
    .expect("client")
    .with_basic("admin", PASSWORD);
    let (status, system) = api.get_json("/redfish/v1/Systems/ws1").expect("GET");
    assert_eq!(status, 200, "{system}");
    assert_eq!(
        system["Links"]["ResourceBlocks"].as_array().map(Vec::len),
        Some(2),
        "{system}"
    );
    let (_, block) = api
        .get_json(&format!(
            "/redfish/v1/CompositionService/ResourceBlocks/{held}"
        ))
        .expect("GET");
    assert_eq!(
        block["CompositionStatus"]["CompositionState"], "Composed",
        "{block}"
    );

    let out = ctl(config.path(), &["history", "--system", "ws1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("admin via api"),
        "{}",
        text(&out)
    );

    // Events: everything after sequence 0, as it was journaled.
    let mut events = Command::new(env!("CARGO_BIN_EXE_appliance"))
        .args(["ctl", "events", "--after", "0"])
        .env("XDG_CONFIG_HOME", config.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("ctl events");
    let mut lines = BufReader::new(events.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("an event").expect("read");
    let _ = events.kill();
    let _ = events.wait();
    assert!(
        first.trim_start().starts_with("1 "),
        "the first event is sequence 1: {first:?}"
    );

    // A drain of the held GPU: out of service at once, and the appliance moves ws1 off it.
    let out = ctl(
        config.path(),
        &["drain", "--device", &held, "--reason", "fan"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let moved = loop {
        let out = ctl(config.path(), &["--json", "systems"]);
        let systems: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let devices = systems["systems"][0]["devices"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let holds = devices.iter().any(|d| d["id"] == held.as_str());
        if !holds && devices.len() == 2 && systems["systems"][0]["pending"].is_null() {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(moved, "ws1 still holds {held} after its drain");
    let out = ctl(config.path(), &["devices"]);
    let row = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with(&format!("{held} ")))
        .map(String::from);
    assert!(
        row.as_deref()
            .is_some_and(|r| r.contains(" out ") && !r.contains("ws1")),
        "{held} drained, out of service: {row:?}"
    );
    let out = ctl(config.path(), &["history", "--device", &held]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("drain of device"),
        "{}",
        text(&out)
    );
    let out = ctl(config.path(), &["drain", "--switch", "no-such-switch"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let out = ctl(config.path(), &["logout"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!session.exists());
    let out = ctl(config.path(), &["--url", &url, "--ca-cert", cert, "status"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not logged in"),
        "{}",
        text(&out)
    );

    // Without --ca-cert a self-signed certificate is refused.
    let out = ctl(
        config.path(),
        &[
            "--url",
            &url,
            "login",
            "--user",
            "admin",
            "--password-file",
            password_file,
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

/// A log whose records stop reading back once `damaged` is set (bit rot found after the start).
struct RottingLog {
    inner: appliance::core::log::MemoryLog,
    damaged: std::sync::atomic::AtomicBool,
}

impl appliance::core::log::EventLog for RottingLog {
    fn append(
        &self,
        events: Vec<appliance::model::Event>,
    ) -> Result<(u64, u64), appliance::core::log::LogError> {
        self.inner.append(events)
    }
    fn last_sequence(&self) -> u64 {
        self.inner.last_sequence()
    }
    fn replay(
        &self,
        from: u64,
    ) -> Box<
        dyn Iterator<Item = Result<appliance::core::log::Logged, appliance::core::log::LogError>>
            + '_,
    > {
        match self.damaged.load(std::sync::atomic::Ordering::SeqCst) {
            false => self.inner.replay(from),
            true => Box::new(self.inner.replay(from).take(3).chain(std::iter::once(Err(
                appliance::core::log::LogError::Snapshot {
                    sequence: 4,
                    reason: "crc mismatch (injected)".into(),
                },
            )))),
        }
    }
    fn write_snapshot(
        &self,
        sequence: u64,
        bytes: &[u8],
    ) -> Result<(), appliance::core::log::LogError> {
        self.inner.write_snapshot(sequence, bytes)
    }
    fn load_snapshot(&self) -> (Option<(u64, Vec<u8>)>, Vec<String>) {
        self.inner.load_snapshot()
    }
    fn load_snapshot_at_or_before(&self, sequence: u64) -> Option<(u64, Vec<u8>)> {
        self.inner.load_snapshot_at_or_before(sequence)
    }
    fn close(&self) -> Result<(), appliance::core::log::LogError> {
        self.inner.close()
    }
}

/// The journal's check through the running service reads every record back: intact, it says
/// so with the count; once a record no longer reads back, it names where, and `ctl` would exit
/// non-zero on it (the reply carries the problems).
#[test]
fn the_journal_check_reads_every_record_and_names_the_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = std::sync::Arc::new(RottingLog {
        inner: appliance::core::log::MemoryLog::new(),
        damaged: std::sync::atomic::AtomicBool::new(false),
    });
    let running = serve::start_with_log(options(dir.path()), log.clone()).expect("start");
    let mut client = Client::connect_unix(running.socket_path()).expect("connect");
    let head = appliance::core::log::EventLog::last_sequence(log.as_ref());
    let Ok(Reply::JournalCheck(intact)) = call(&mut client, Request::query(Query::VerifyJournal))
    else {
        panic!("a journal check")
    };
    assert_eq!(intact.problems, Vec::<String>::new());
    assert_eq!(
        (intact.records, intact.first_sequence, intact.last_sequence),
        (head, 1, head)
    );
    log.damaged.store(true, std::sync::atomic::Ordering::SeqCst);
    let Ok(Reply::JournalCheck(damaged)) = call(&mut client, Request::query(Query::VerifyJournal))
    else {
        panic!("a journal check")
    };
    assert_eq!(damaged.records, 3);
    assert_eq!(damaged.problems.len(), 1, "{:?}", damaged.problems);
    assert!(
        damaged.problems[0].starts_with(
            "after sequence 3: snapshot at sequence 4 does not decode: crc mismatch (injected)"
        ),
        "{:?}",
        damaged.problems
    );
    let text = appliance::api::render::reply(&Reply::JournalCheck(damaged));
    assert!(
        text.starts_with("JOURNAL DAMAGED: 3 records read"),
        "{text}"
    );
}
