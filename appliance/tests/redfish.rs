//! The Redfish door against `serve` on the simulated fabric, over real HTTPS on loopback:
//! composition in all its forms, ETags, tenancy, the security table over every route, hostile
//! requests, the event stream and metrics.

mod support;

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use appliance::api::client::Client;
use serde_json::{json, Value};
use support::*;

fn system_blocks(client: &Client, name: &str) -> Vec<String> {
    let (status, system) = client
        .get_json(&format!("/redfish/v1/Systems/{name}"))
        .expect("get system");
    assert_eq!(status, 200, "{system}");
    let mut blocks: Vec<String> = system["Links"]["ResourceBlocks"]
        .as_array()
        .expect("Links.ResourceBlocks")
        .iter()
        .map(|b| {
            b["@odata.id"]
                .as_str()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    blocks.sort();
    blocks
}

fn block_state(client: &Client, device: &str) -> String {
    let (_, block) = client
        .get_json(&format!(
            "/redfish/v1/CompositionService/ResourceBlocks/{device}"
        ))
        .expect("get block");
    block["CompositionStatus"]["CompositionState"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn specific_and_constrained_composition_patch_and_decompose() {
    let served = serve();
    let admin = served.admin();

    // Specific composition.
    let answer = admin
        .post(
            "/redfish/v1/Systems",
            &specific("ws1", &["gpu-0", "nvme-0"]),
        )
        .expect("compose");
    let answer = settle(&admin, answer);
    assert_eq!(answer.status, 201, "{}", answer.json());
    assert_eq!(answer.header("location"), Some("/redfish/v1/Systems/ws1"));
    assert_eq!(system_blocks(&admin, "ws1"), ["gpu-0", "nvme-0"]);
    assert_eq!(block_state(&admin, "gpu-0"), "Composed");
    let (_, system) = admin.get_json("/redfish/v1/Systems/ws1").expect("get");
    assert_eq!(system["SystemType"], "Composed");
    assert_eq!(system["Id"], "ws1");

    // The same block again: ResourceBlockInUse, nothing journaled.
    let head = served.head();
    let answer = admin
        .post("/redfish/v1/Systems", &specific("ws2", &["gpu-0"]))
        .expect("compose");
    assert_error(&answer, 409, "ResourceBlockInUse");
    assert_eq!(served.head(), head, "a refused compose journals nothing");

    // A block that does not exist.
    let answer = admin
        .post("/redfish/v1/Systems", &specific("ws2", &["gpu-99"]))
        .expect("compose");
    assert_eq!(answer.status / 100, 4, "{}", answer.json());

    // PATCH Links.ResourceBlocks: add nic-0, then remove gpu-0 (one PATCH either adds or
    // removes: each is one operation of the fabric, and both at once would not be atomic).
    for (blocks, expected) in [
        (
            vec!["gpu-0", "nvme-0", "nic-0"],
            vec!["gpu-0", "nic-0", "nvme-0"],
        ),
        (vec!["nvme-0", "nic-0"], vec!["nic-0", "nvme-0"]),
    ] {
        let body = json!({"Links": {"ResourceBlocks": blocks.iter().map(|b| block(b)).collect::<Vec<_>>()}});
        let answer = settle(
            &admin,
            admin
                .patch("/redfish/v1/Systems/ws1", &body, None)
                .expect("patch"),
        );
        assert!(
            answer.status == 200 || answer.status == 204,
            "{} {}",
            answer.status,
            answer.json()
        );
        assert_eq!(system_blocks(&admin, "ws1"), expected);
    }
    assert_eq!(block_state(&admin, "gpu-0"), "Unused");
    let both = json!({"Links": {"ResourceBlocks": [block("gpu-0")]}});
    let head = served.head();
    let answer = admin
        .patch("/redfish/v1/Systems/ws1", &both, None)
        .expect("patch");
    assert_eq!(
        answer.status,
        400,
        "adding and removing at once is refused: {}",
        answer.json()
    );
    assert_eq!(served.head(), head);

    // Constrained composition: two GPUs of at least 24 GiB and an NVMe of at least 2 TB.
    let constrained = json!({
        "Name": "rn1",
        "Processors": {"Members": [{"@Redfish.RequestedCount": 2, "ProcessorType": "GPU",
            "ProcessorMemory": [{"CapacityMiB": 24 * 1024}]}]},
        "Storage": {"Members": [{"Drives": [{"@Redfish.RequestedCount": 1, "CapacityBytes": 2_000_000_000_000u64}]}]},
    });
    let answer = settle(
        &admin,
        admin
            .post("/redfish/v1/Systems", &constrained)
            .expect("compose"),
    );
    assert_eq!(answer.status, 201, "{}", answer.json());
    let blocks = system_blocks(&admin, "rn1");
    assert_eq!(
        blocks.iter().filter(|b| b.starts_with("gpu")).count(),
        2,
        "{blocks:?}"
    );
    assert_eq!(
        blocks.iter().filter(|b| b.starts_with("nvme")).count(),
        1,
        "{blocks:?}"
    );

    // More GPUs than the pool has: NoResourceMatch, nothing journaled.
    let head = served.head();
    let greedy = json!({"Name": "big", "Processors": {"Members": [{"@Redfish.RequestedCount": 32, "ProcessorType": "GPU"}]}});
    let answer = admin.post("/redfish/v1/Systems", &greedy).expect("compose");
    assert_error(&answer, 409, "NoResourceMatch");
    assert_eq!(served.head(), head);

    // Who composed ws1: the journal says admin, through the API.
    let answer = served.request(
        &admin,
        json!({"query": {"history": {"of": {"system": "ws1"}}}}),
    );
    assert_eq!(answer.status, 200);
    let history = answer.json()["history"].clone();
    let compose = history
        .as_array()
        .expect("history")
        .iter()
        .find(|e| e["kind"] == "compose_requested")
        .expect("a compose in the history");
    assert_eq!(compose["by"]["account"], "admin", "{compose}");
    assert_eq!(compose["by"]["door"], "api", "{compose}");

    // Decompose.
    for name in ["ws1", "rn1"] {
        let answer = settle(
            &admin,
            admin
                .delete(&format!("/redfish/v1/Systems/{name}"))
                .expect("delete"),
        );
        assert!(
            answer.status == 200 || answer.status == 204,
            "{} {}",
            answer.status,
            answer.json()
        );
        let (status, _) = admin
            .get_json(&format!("/redfish/v1/Systems/{name}"))
            .expect("get");
        assert_eq!(status, 404);
    }
    assert_eq!(block_state(&admin, "nvme-0"), "Unused");
}

#[test]
fn the_compose_action_previews_reserves_and_applies_all_or_nothing() {
    let served = serve();
    let admin = served.admin();
    let manifest = |name: &str, devices: &[&str]| {
        json!({"Description": "test", "Stanzas": [{
            "StanzaType": "ComposeSystem", "StanzaId": "one",
            "Request": specific(name, devices)}]})
    };
    let action = "/redfish/v1/CompositionService/Actions/CompositionService.Compose";
    let head = served.head();
    let preview = admin
        .post(action, &json!({"RequestFormat": "Manifest", "RequestType": "Preview", "Manifest": manifest("p1", &["gpu-1"])}))
        .expect("preview");
    assert_eq!(preview.status, 200, "{}", preview.json());
    assert_eq!(served.head(), head, "a preview journals nothing");
    assert_eq!(block_state(&admin, "gpu-1"), "Unused");

    let reserve = admin
        .post(action, &json!({"RequestFormat": "Manifest", "RequestType": "PreviewReserve", "Manifest": manifest("p1", &["gpu-1"])}))
        .expect("reserve");
    assert_eq!(reserve.status, 200, "{}", reserve.json());
    let reservation = reserve.json()["ReservationId"]
        .as_str()
        .expect("ReservationId")
        .to_string();
    // Reserved blocks are not free to another composition.
    let answer = admin
        .post("/redfish/v1/Systems", &specific("other", &["gpu-1"]))
        .expect("compose");
    assert_eq!(answer.status, 409, "{}", answer.json());
    let (status, listed) = admin
        .get_json(&format!(
            "/redfish/v1/CompositionService/CompositionReservations/{reservation}"
        ))
        .expect("reservation");
    assert_eq!(status, 200, "{listed}");

    let apply = admin
        .post(action, &json!({"RequestFormat": "Manifest", "RequestType": "Apply", "ReservationId": reservation}))
        .expect("apply");
    assert_eq!(apply.status, 200, "{}", apply.json());
    assert_eq!(system_blocks(&admin, "p1"), ["gpu-1"]);

    // All or nothing: the second stanza cannot be placed, so the first is not left composed.
    let both = json!({"Stanzas": [
        {"StanzaType": "ComposeSystem", "StanzaId": "a", "Request": specific("a1", &["gpu-2"])},
        {"StanzaType": "ComposeSystem", "StanzaId": "b", "Request": specific("b1", &["gpu-1"])},
    ]});
    let answer = admin
        .post(
            action,
            &json!({"RequestFormat": "Manifest", "RequestType": "Apply", "Manifest": both}),
        )
        .expect("apply");
    assert_eq!(answer.status, 409, "{}", answer.json());
    let (status, _) = admin.get_json("/redfish/v1/Systems/a1").expect("get");
    assert_eq!(status, 404, "the first stanza was undone");
    assert_eq!(block_state(&admin, "gpu-2"), "Unused");
}

#[test]
fn etags_refuse_stale_writes_and_one_of_four_concurrent_patches_wins() {
    let served = serve();
    let admin = served.admin();
    served.account(&admin, "op1", "Operator", None);
    let path = "/redfish/v1/AccountService/Accounts/op1";
    let answer = admin.get(path).expect("get");
    let tag = answer.header("etag").expect("an ETag").to_string();
    assert!(!tag.starts_with("W/"), "strong ETag: {tag}");

    let head = served.head();
    let stale = admin
        .patch(path, &json!({"RoleId": "ReadOnly"}), Some("\"1\""))
        .expect("patch");
    assert_error(&stale, 412, "PreconditionFailed");
    assert_eq!(served.head(), head, "a stale write journals nothing");

    let url = served.url.clone();
    let cert = served.cert.clone();
    let winners: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = ["ReadOnly", "Administrator", "ReadOnly", "Administrator"]
            .into_iter()
            .map(|role| {
                let (url, cert, tag) = (url.clone(), cert.clone(), tag.clone());
                scope.spawn(move || {
                    let client = Client::new(
                        &url,
                        &appliance::api::client::Trust::Pinned(cert),
                        Duration::from_secs(30),
                    )
                    .expect("client")
                    .with_basic(ADMIN, ADMIN_PASSWORD);
                    client
                        .patch(path, &json!({"RoleId": role}), Some(&tag))
                        .expect("patch")
                        .status
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let ok = winners.iter().filter(|s| **s == 200 || **s == 204).count();
    let refused = winners.iter().filter(|s| **s == 412).count();
    assert_eq!((ok, refused), (1, 3), "{winners:?}");
}

#[test]
fn tenants_see_only_their_systems_and_free_blocks() {
    let served = serve();
    let admin = served.admin();
    for tenant in ["blue", "red"] {
        let answer = served.request(
            &admin,
            json!({"order": {"create_tenant": {"name": tenant}}}),
        );
        assert_eq!(answer.status, 200, "{}", answer.json());
    }
    served.account(&admin, "blue-op", "Operator", Some("blue"));
    served.account(&admin, "red-op", "Operator", Some("red"));
    let blue = served.session("blue-op", PASSWORD);
    let red = served.session("red-op", PASSWORD);
    let answer = settle(
        &blue,
        blue.post("/redfish/v1/Systems", &specific("blue-ws", &["gpu-3"]))
            .expect("compose"),
    );
    assert_eq!(answer.status, 201, "{}", answer.json());

    // Red sees neither the system nor its composed block as anything but missing.
    let (status, _) = red.get_json("/redfish/v1/Systems/blue-ws").expect("get");
    assert_eq!(status, 404);
    let (_, systems) = red.get_json("/redfish/v1/Systems").expect("list");
    assert_eq!(systems["Members@odata.count"], 0, "{systems}");
    for (method, body) in [
        ("DELETE", None),
        ("PATCH", Some(json!({"Links": {"ResourceBlocks": []}}))),
    ] {
        let answer = red
            .send(method, "/redfish/v1/Systems/blue-ws", body.as_ref(), &[])
            .expect("write");
        assert_eq!(answer.status, 404, "{method}: {}", answer.json());
    }
    // Free blocks are visible to every tenant; red composes its own.
    assert_eq!(block_state(&red, "gpu-4"), "Unused");
    let answer = settle(
        &red,
        red.post("/redfish/v1/Systems", &specific("red-ws", &["gpu-4"]))
            .expect("compose"),
    );
    assert_eq!(answer.status, 201, "{}", answer.json());
    let (_, systems) = blue.get_json("/redfish/v1/Systems").expect("list");
    assert_eq!(systems["Members@odata.count"], 1, "{systems}");
    // A tenant's account cannot make a global account, or one of another tenant.
    served.account(&admin, "blue-admin", "Administrator", Some("blue"));
    let blue_admin = served.session("blue-admin", PASSWORD);
    let head = served.head();
    for tenant in [None, Some("red")] {
        let mut body =
            json!({"UserName": "sneaky", "Password": PASSWORD, "RoleId": "Administrator"});
        if let Some(tenant) = tenant {
            body["Oem"] = json!({"Appliance": {"Tenant": tenant}});
        }
        let answer = blue_admin
            .post("/redfish/v1/AccountService/Accounts", &body)
            .expect("post");
        if tenant.is_none() {
            // No tenant named: the account is made in the creator's own tenant.
            assert_eq!(answer.status, 201, "{}", answer.json());
            let answer = blue_admin
                .delete("/redfish/v1/AccountService/Accounts/sneaky")
                .expect("delete");
            assert!(answer.status == 200 || answer.status == 204);
        } else {
            assert_eq!(answer.status, 403, "{}", answer.json());
        }
    }
    assert!(served.head() > head);
}

/// Every route of the service, with a method that changes something and a body for it.
fn mutating_routes() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("POST", "/redfish/v1/Systems", specific("x", &["gpu-5"])),
        (
            "PATCH",
            "/redfish/v1/Systems/ws1",
            json!({"Links": {"ResourceBlocks": []}}),
        ),
        ("DELETE", "/redfish/v1/Systems/ws1", Value::Null),
        (
            "POST",
            "/redfish/v1/CompositionService/Actions/CompositionService.Compose",
            json!({"RequestFormat": "Manifest", "RequestType": "Apply", "Manifest": {"Stanzas": [
                {"StanzaType": "ComposeSystem", "StanzaId": "1", "Request": specific("y", &["gpu-6"])}]}}),
        ),
        (
            "POST",
            "/redfish/v1/AccountService/Accounts",
            json!({"UserName": "new1", "Password": PASSWORD, "RoleId": "ReadOnly"}),
        ),
        (
            "PATCH",
            "/redfish/v1/AccountService/Accounts/admin",
            json!({"RoleId": "ReadOnly"}),
        ),
        (
            "DELETE",
            "/redfish/v1/AccountService/Accounts/admin",
            Value::Null,
        ),
        (
            "POST",
            "/redfish/v1/EventService/Subscriptions",
            json!({"Destination": "https://127.0.0.1:9/events", "Protocol": "Redfish"}),
        ),
        (
            "POST",
            "/redfish/v1/EventService/Actions/EventService.SubmitTestEvent",
            json!({}),
        ),
        (
            "POST",
            "/redfish/v1/Managers/Appliance/Actions/Manager.Reset",
            json!({"ResetType": "GracefulRestart"}),
        ),
        (
            "POST",
            "/redfish/v1/Oem/Appliance/Requests",
            json!({"order": {"create_tenant": {"name": "t9"}}}),
        ),
    ]
}

fn readable_routes() -> Vec<&'static str> {
    vec![
        "/redfish/v1/Systems",
        "/redfish/v1/Systems/ws1",
        "/redfish/v1/CompositionService",
        "/redfish/v1/CompositionService/ResourceBlocks",
        "/redfish/v1/CompositionService/ResourceBlocks/gpu-0",
        "/redfish/v1/CompositionService/ResourceZones",
        "/redfish/v1/Chassis",
        "/redfish/v1/Fabrics/PCIe",
        "/redfish/v1/Managers/Appliance",
        "/redfish/v1/Managers/Appliance/LogServices/Journal/Entries",
        "/redfish/v1/TaskService/Tasks",
        "/redfish/v1/EventService",
        "/redfish/v1/SessionService/Sessions",
        "/redfish/v1/AccountService/Accounts",
        "/redfish/v1/AccountService/Roles",
        "/metrics",
    ]
}

#[test]
fn the_security_table_holds_on_every_route() {
    let served = serve_with(|config| config.session_timeout_s = 2);
    let admin = served.admin();
    let answer = settle(
        &admin,
        admin
            .post("/redfish/v1/Systems", &specific("ws1", &["gpu-0"]))
            .expect("compose"),
    );
    assert_eq!(answer.status, 201);
    served.account(&admin, "viewer", "ReadOnly", None);
    let viewer = served.session("viewer", PASSWORD);
    let head = served.head();

    // No credentials: 401 with WWW-Authenticate everywhere but the public documents.
    let anonymous = served.anonymous();
    for path in readable_routes() {
        let answer = anonymous.get(path).expect("get");
        assert_eq!(answer.status, 401, "GET {path}");
        assert!(answer.header("www-authenticate").is_some(), "GET {path}");
    }
    for (method, path, body) in mutating_routes() {
        let answer = anonymous
            .send(method, path, Some(&body).filter(|b| !b.is_null()), &[])
            .expect("send");
        assert_eq!(answer.status, 401, "{method} {path}: {}", answer.json());
    }
    for path in [
        "/redfish",
        "/redfish/v1",
        "/redfish/v1/",
        "/redfish/v1/$metadata",
        "/redfish/v1/odata",
    ] {
        assert_eq!(anonymous.get(path).expect("get").status, 200, "GET {path}");
    }

    // ReadOnly: reads everything, changes nothing (403).
    for path in readable_routes() {
        assert_eq!(viewer.get(path).expect("get").status, 200, "GET {path}");
    }
    for (method, path, body) in mutating_routes() {
        let answer = viewer
            .send(method, path, Some(&body).filter(|b| !b.is_null()), &[])
            .expect("send");
        assert_error(&answer, 403, "InsufficientPrivilege");
    }
    assert_eq!(served.head(), head, "refused requests journal nothing");

    // A deleted session's token is refused.
    let mut short = served.anonymous();
    let login = short.login("viewer", PASSWORD, None).expect("login");
    let location = login.header("location").expect("location").to_string();
    assert_eq!(short.get("/redfish/v1/Systems").expect("get").status, 200);
    assert_eq!(short.delete(&location).expect("logout").status / 100, 2);
    assert_eq!(short.get("/redfish/v1/Systems").expect("get").status, 401);

    // An idle session expires (session_timeout_s = 2 here; admin's too: Basic from now on).
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        viewer.get("/redfish/v1/Systems").expect("get").status,
        401,
        "expired session"
    );
    let admin = served.anonymous().with_basic(ADMIN, ADMIN_PASSWORD);

    // Five wrong passwords lock the account; then even the right one is refused.
    for _ in 0..5 {
        let answer = served
            .anonymous()
            .login("viewer", "Wrong-Passw0rd-x", None)
            .expect("login");
        assert_eq!(answer.status, 401);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = served
            .anonymous()
            .login("viewer", PASSWORD, None)
            .expect("login");
        if answer.status == 401 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the account was never locked"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, account) = admin
        .get_json("/redfish/v1/AccountService/Accounts/viewer")
        .expect("get");
    assert_eq!(account["Locked"], true, "{account}");
    // An administrator unlocks it.
    let answer = admin
        .patch(
            "/redfish/v1/AccountService/Accounts/viewer",
            &json!({"Locked": false}),
            None,
        )
        .expect("patch");
    assert_eq!(answer.status / 100, 2, "{}", answer.json());
    assert_eq!(
        served
            .anonymous()
            .login("viewer", PASSWORD, None)
            .expect("login")
            .status,
        201
    );
}

#[test]
fn an_account_with_totp_logs_in_only_with_its_code() {
    let served = serve();
    let admin = served.admin();
    served.account(&admin, "mfa", "Operator", None);
    let answer = admin
        .post(
            "/redfish/v1/AccountService/Accounts/mfa/Actions/ManagerAccount.GenerateSecretKey",
            &json!({}),
        )
        .expect("generate");
    assert_eq!(answer.status, 200, "{}", answer.json());
    let secret = secret_key(&answer);

    assert_eq!(
        served
            .anonymous()
            .login("mfa", PASSWORD, None)
            .expect("login")
            .status,
        401,
        "no code"
    );
    assert_eq!(
        served
            .anonymous()
            .login("mfa", PASSWORD, Some("000000"))
            .expect("login")
            .status,
        401,
        "wrong code"
    );
    let basic = served.anonymous().with_basic("mfa", PASSWORD);
    assert_eq!(
        basic.get("/redfish/v1/Systems").expect("get").status,
        401,
        "Basic cannot carry a code"
    );
    let code = totp_now(&secret);
    let answer = served
        .anonymous()
        .login("mfa", PASSWORD, Some(&code))
        .expect("login");
    assert_eq!(answer.status, 201, "{}", answer.json());
    // The key is never shown again, and the journal holds it sealed only.
    let (_, account) = admin
        .get_json("/redfish/v1/AccountService/Accounts/mfa")
        .expect("get");
    assert_eq!(account["SecretKeySet"], true);
    assert!(!account.to_string().contains(&code));
}

#[test]
fn secrets_never_reach_the_journal_or_the_disk_in_plain_text() {
    let served = serve();
    let admin = served.admin();
    served.account(&admin, "plain", "Operator", None);
    let token = served
        .session("plain", PASSWORD)
        .token()
        .expect("token")
        .to_string();
    let state =
        serde_json::to_string(&*served.running.core().expect("core").state()).expect("JSON");
    assert!(
        state.contains("$argon2id$"),
        "passwords are kept as argon2id hashes"
    );
    let Served { running, dir, .. } = served;
    running.shutdown().expect("shutdown");
    let dump = std::process::Command::new(env!("CARGO_BIN_EXE_appliance"))
        .args(["journal", "dump", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("journal dump");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let journal = String::from_utf8_lossy(&dump.stdout).to_string();
    assert!(journal.contains("account_created") && journal.contains("session_opened"));
    let mut files = vec![dir.path().to_path_buf()];
    let mut bytes_seen = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(
                std::fs::read_dir(&path)
                    .expect("read dir")
                    .map(|e| e.expect("entry").path()),
            );
            continue;
        }
        let bytes = std::fs::read(&path).expect("read");
        bytes_seen += bytes.len();
        for secret in [PASSWORD, ADMIN_PASSWORD, token.as_str()] {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "a secret in plain text in {}", path.display());
        }
    }
    for secret in [PASSWORD, ADMIN_PASSWORD, token.as_str()] {
        assert!(!journal.contains(secret), "a secret in the journal dump");
    }
    assert!(
        bytes_seen > 10_000,
        "the data directory was read ({bytes_seen} bytes)"
    );
}

/// A raw HTTPS exchange on a new connection: the status line's code and the body (status 0
/// when the server closed the connection without an answer). With `truncate`, the client
/// closes its side after `request` (a body that never comes in full).
fn raw(served: &Served, request: &[u8], truncate: bool) -> (u16, Vec<u8>) {
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(served.cert.as_bytes())
        .collect::<Result<_, _>>()
        .expect("cert");
    roots.add_parsable_certificates(certs);
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("tls");
    let addr = served.url.trim_start_matches("https://");
    let socket = TcpStream::connect(addr).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(connection, socket);
    if tls.write_all(request).is_err() {
        return (0, Vec::new());
    }
    let _ = tls.flush();
    if truncate {
        tls.conn.send_close_notify();
        let _ = tls.flush();
        let _ = tls.sock.shutdown(std::net::Shutdown::Write);
    }
    let mut answer = Vec::new();
    let _ = (&mut tls).take(4 << 20).read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .as_bytes()
        .to_vec();
    (status, body)
}

use rustls::pki_types::pem::PemObject;

/// One generated hostile request: what makes it hostile, its bytes, and whether the client
/// stops sending before its body is complete.
struct Hostile {
    what: String,
    method: &'static str,
    bytes: Vec<u8>,
    truncate: bool,
}

/// Every case is hostile by construction: a bad body for the methods that carry one, a bad
/// path for the others, and half of them a bad header on top.
fn hostile(next: &mut impl FnMut() -> u64, token: &str) -> Hostile {
    let pick = |n: u64, next: &mut dyn FnMut() -> u64| (next() % n) as usize;
    let paths = [
        "/redfish/v1/Systems",
        "/redfish/v1/Systems/ws1",
        "/redfish/v1/AccountService/Accounts",
        "/redfish/v1/CompositionService/Actions/CompositionService.Compose",
        "/redfish/v1/EventService/Subscriptions",
        "/redfish/v1/Oem/Appliance/Requests",
        "/redfish/v1/AccountService/Accounts/admin",
    ];
    let bodies: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        b"[]".to_vec(),
        b"null".to_vec(),
        b"\"text\"".to_vec(),
        br#"{"Name": 7}"#.to_vec(),
        br#"{"Name": "a b c", "Links": {"ResourceBlocks": "gpu-0"}}"#.to_vec(),
        br#"{"Name": "ok", "Links": {"ResourceBlocks": [{"@odata.id": "/../../etc/passwd"}]}}"#.to_vec(),
        br#"{"UserName": "", "Password": "x", "RoleId": "Root"}"#.to_vec(),
        br#"{"RequestFormat": "Manifest", "RequestType": "Apply", "Manifest": {"Stanzas": "x"}}"#.to_vec(),
        br#"{"Destination": "ftp://example.com/x", "Protocol": "FTP"}"#.to_vec(),
        br#"{"order": {"compose": {"system": 1}}}"#.to_vec(),
        br#"{"query": "status", "extra": true}"#.to_vec(),
        br#"{"RoleId": ["Administrator"], "Name": {"$ne": 1}}"#.to_vec(),
        format!(r#"{{"Name": "{}"}}"#, "x".repeat(5000)).into_bytes(),
        vec![0xff, 0xfe, 0x00, 0x7b],
        "{\"Name\": \"\u{202e}evil\", \"Links\": {\"ResourceBlocks\": []}}".as_bytes().to_vec(),
        "{\"Name\": \"ws\u{0}1\", \"Links\": {\"ResourceBlocks\": [{\"@odata.id\": \"/redfish/v1/CompositionService/ResourceBlocks/gpu-7\"}]}}".as_bytes().to_vec(),
    ];
    let methods = [
        "POST", "PATCH", "PUT", "DELETE", "GET", "HEAD", "BREW", "OPTIONS", "TRACE",
    ];
    let method = methods[pick(methods.len() as u64, next)];
    let carries_body = matches!(method, "POST" | "PATCH" | "PUT");
    let mut path = paths[pick(paths.len() as u64, next)].to_string();
    let mut what = Vec::new();
    let body = match carries_body {
        true => {
            let body = bodies[pick(bodies.len() as u64, next)].clone();
            what.push(format!(
                "body {:?}",
                String::from_utf8_lossy(&body[..body.len().min(40)])
            ));
            body
        }
        false => Vec::new(),
    };
    let bad_path = !carries_body || next() % 3 == 0;
    if bad_path {
        let (mutated, name) = match pick(6, next) {
            0 => (format!("{path}/%2e%2e/%00"), "dot-dot and NUL"),
            1 => (format!("{path}?$expand=*($levels=99)&$top=-1"), "bad query"),
            2 => (
                path.replace("/redfish/v1", "/redfish/v2"),
                "unknown version",
            ),
            3 => (format!("{path}{}", "/a".repeat(200)), "deep path"),
            4 => (format!("{path}?only&$select=/../x&$skip=abc"), "bad query"),
            _ => (format!("{path}//Members/../../"), "odd segments"),
        };
        path = mutated;
        what.push(name.to_string());
    }
    let mut headers = format!("X-Auth-Token: {token}\r\nContent-Type: application/json\r\n");
    let mut truncate = false;
    let mut smuggled = false;
    let mut length = body.len();
    if next() % 2 == 0 {
        let name = match pick(8, next) {
            0 => {
                headers.push_str("X-Folded: a\r\n continued\r\n");
                "obs-fold header"
            }
            1 => {
                headers.push_str(&format!("X-Big: {}\r\n", "h".repeat(80_000)));
                "80 KB header"
            }
            2 => {
                // Chunked wins over Content-Length (RFC 9112), and what follows is no chunk.
                headers.push_str("Transfer-Encoding: chunked\r\n");
                smuggled = true;
                "Content-Length and Transfer-Encoding, then no chunk"
            }
            3 => {
                headers.push_str("If-Match: \"not-a-version\"\r\n");
                "bad If-Match"
            }
            4 => {
                headers.push_str("OData-Version: 4.1\r\n");
                "OData-Version 4.1"
            }
            5 => {
                headers = headers.replace(token, "0000");
                "bad token"
            }
            6 => {
                headers = headers.replace("application/json", "text/plain");
                "text/plain body"
            }
            _ => {
                length += 10;
                truncate = true;
                "body shorter than its Content-Length"
            }
        };
        what.push(name.to_string());
    }
    let mut bytes = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}Content-Length: {length}\r\n\r\n"
    )
    .into_bytes();
    if smuggled {
        bytes.extend_from_slice(b"zz\r\nGET /redfish/v1/Systems HTTP/1.1\r\n\r\n");
    }
    bytes.extend_from_slice(&body);
    Hostile {
        what: what.join(", "),
        method,
        bytes,
        truncate,
    }
}

#[test]
fn a_thousand_hostile_requests_get_a_4xx_and_change_nothing() {
    let served = serve();
    let admin = served.admin();
    let token = admin.token().expect("token").to_string();
    let head = served.head();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_nanos() as u64
        | 1;
    println!("hostile requests: seed {seed}");
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let registries = ["Base.1.", "Composition.1.", "Appliance."];
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    for case in 0..1000u32 {
        let request = hostile(&mut next, &token);
        let (status, body) = raw(&served, &request.bytes, request.truncate);
        *statuses.entry(status).or_default() += 1;
        let what = format!(
            "case {case} (seed {seed}): {} {}",
            request.method, request.what
        );
        // An unknown method is 501 Not Implemented (DSP0266; the DMTF Protocol Validator
        // checks it) once the request is otherwise sound; everything else is a 4xx. A
        // connection closed without an answer (0) only when the client broke it off.
        let standard =
            ["POST", "PATCH", "PUT", "DELETE", "GET", "HEAD", "OPTIONS"].contains(&request.method);
        let allowed = (400..500).contains(&status)
            || (status == 501 && !standard)
            || (status == 0 && request.truncate);
        assert!(allowed, "{what}: answered {status}");
        // hyper's own refusals of a malformed head (400, 431) carry no body; ours are Redfish
        // errors naming a registry message.
        if !body.is_empty() && request.method != "HEAD" {
            let error: Value =
                serde_json::from_slice(&body).unwrap_or_else(|_| panic!("{what}: body not JSON"));
            let id = error["error"]["@Message.ExtendedInfo"][0]["MessageId"]
                .as_str()
                .unwrap_or_default();
            assert!(
                registries.iter().any(|r| id.starts_with(r)),
                "{what}: MessageId {id:?}"
            );
        }
        if case % 100 == 0 {
            assert_eq!(
                admin.get("/redfish/v1/Systems").expect("get").status,
                200,
                "the door after {what}"
            );
            assert_eq!(served.head(), head, "{what} journaled something");
        }
    }
    // A huge body is refused with 413 from its Content-Length, before any of it is sent.
    let bytes = format!(
        "POST /redfish/v1/Systems HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Auth-Token: {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        3 << 20
    );
    let (status, _) = raw(&served, bytes.as_bytes(), false);
    assert_eq!(status, 413, "a 3 MiB body");
    // And one that does not say its length (chunked) is cut at the limit.
    let mut bytes = format!(
        "POST /redfish/v1/Systems HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Auth-Token: {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    let chunk = vec![b' '; 64 << 10];
    for _ in 0..24 {
        bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        bytes.extend_from_slice(&chunk);
        bytes.extend_from_slice(b"\r\n");
    }
    let (status, _) = raw(&served, &bytes, true);
    assert!(
        status == 413 || status == 0,
        "a chunked 1.5 MiB body: {status}"
    );
    assert_eq!(
        served.head(),
        head,
        "no hostile request journaled anything: {statuses:?}"
    );
    println!("hostile requests by status: {statuses:?}");
}

#[test]
fn slow_clients_do_not_hold_the_door() {
    let served = serve();
    let addr = served.url.trim_start_matches("https://").to_string();
    // Fifty connections that never finish a TLS handshake, and fifty that stop mid-header.
    let mut idle = Vec::new();
    for _ in 0..50 {
        let mut socket = TcpStream::connect(&addr).expect("connect");
        socket.write_all(&[0x16, 0x03, 0x01]).expect("write");
        idle.push(socket);
    }
    let admin = served.admin();
    for _ in 0..5 {
        assert_eq!(admin.get("/redfish/v1/Systems").expect("get").status, 200);
    }
    drop(idle);
}

#[test]
fn the_event_stream_resumes_from_last_event_id() {
    let served = serve();
    let admin = served.admin();
    let start = served.head();
    let answer = served.request(
        &admin,
        json!({"order": {"create_tenant": {"name": "sse1"}}}),
    );
    assert_eq!(answer.status, 200);
    let answer = served.request(
        &admin,
        json!({"order": {"create_tenant": {"name": "sse2"}}}),
    );
    assert_eq!(answer.status, 200);
    let last = served.head();
    let after = start.to_string();
    let (status, reader) = admin
        .stream(
            "/redfish/v1/EventService/SSE",
            &[("Last-Event-ID", after.as_str())],
        )
        .expect("stream");
    assert_eq!(status, 200);
    let mut reader = reader.unwrap_or_else(|a| panic!("{}", a.json()));
    let mut ids = Vec::new();
    let mut line = String::new();
    while ids.last().is_none_or(|id| *id < last) {
        line.clear();
        assert!(
            reader.read_line(&mut line).expect("read") > 0,
            "the stream ended"
        );
        if let Some(id) = line.trim().strip_prefix("id:") {
            ids.push(id.trim().parse::<u64>().expect("a sequence"));
        }
        if let Some(data) = line.trim().strip_prefix("data:") {
            let event: Value = serde_json::from_str(data.trim()).expect("an event");
            assert_eq!(event["@odata.type"], "#Event.v1_13_0.Event");
        }
    }
    assert_eq!(
        ids,
        ((start + 1)..=last).collect::<Vec<_>>(),
        "every event after Last-Event-ID, in order"
    );
}

#[test]
fn metrics_are_prometheus_text_behind_a_login_unless_public() {
    let served = serve();
    let admin = served.admin();
    let answer = settle(
        &admin,
        admin
            .post("/redfish/v1/Systems", &specific("m1", &["gpu-0", "nvme-0"]))
            .expect("compose"),
    );
    assert_eq!(answer.status, 201);
    // A fault the appliance answers on its own: nvme-0 reports a SMART critical warning.
    let sim = served.running.sim().expect("the simulated fabric");
    assert!(sim.smart_warning("nvme-0", 0x04));
    wait_for("nvme-0 failed over", || {
        let system = admin.get("/redfish/v1/Systems/m1").ok()?.json();
        let links = system["Links"]["ResourceBlocks"].as_array()?.clone();
        let gone = !links.iter().any(|l| {
            l["@odata.id"]
                .as_str()
                .is_some_and(|u| u.ends_with("/nvme-0"))
        });
        (gone && links.len() == 2).then_some(())
    });
    assert_eq!(served.anonymous().get("/metrics").expect("get").status, 401);
    let answer = admin.get("/metrics").expect("get");
    assert_eq!(answer.status, 200);
    let text = String::from_utf8_lossy(&answer.body).to_string();
    for family in [
        "appliance_journal_events_appended_total",
        "appliance_journal_append_seconds_bucket",
        "appliance_compose_seconds_count",
        "appliance_start_replay_seconds",
        "appliance_pool_devices{kind=\"gpu\",state=\"composed\"} 1",
        "appliance_api_requests_total{status=\"201\"}",
        "appliance_api_request_duration_seconds_bucket",
        "appliance_alarms_critical 1",
        "appliance_alarms_raised_total 1",
        "appliance_failover_seconds_count 1",
        "appliance_failover_recovery_seconds_count 1",
    ] {
        assert!(text.contains(family), "{family} missing from:\n{text}");
    }
    let public = serve_with(|config| config.metrics_public = true);
    assert_eq!(public.anonymous().get("/metrics").expect("get").status, 200);
    assert_eq!(
        public
            .anonymous()
            .get("/redfish/v1/Systems")
            .expect("get")
            .status,
        401
    );
}
