//! Clients nobody here wrote, against `serve` on the simulated fabric: DMTF's Redfish Service
//! Validator and Protocol Validator (zero failures, a floor of passes), OpenStack's sushy
//! (walks the CompositionService, composes and decomposes) and DMTF's redfishtool (reads),
//! with the studio's directory configured (a real slapd behind AccountService's `LDAP`).
//! They run from target/redfish-venv, which `tests/redfish/setup.sh` makes (the README's test
//! command runs it); their warnings are written to the test's stderr.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use support::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> PathBuf {
    let python = repo().join("target/redfish-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash tests/redfish/setup.sh` (the README's test command does)",
        python.display()
    );
    python
}

/// DMTF's CSDL (../shared/redfish/csdl) and the appliance's OEM schemas, in one folder.
fn schema_dir() -> PathBuf {
    let shared = repo().join("../shared/redfish/csdl");
    let dir = repo().join("target/redfish/schemas");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("schema dir");
    let mut copied = 0;
    for source in [shared, repo().join("appliance/schemas")] {
        for entry in
            std::fs::read_dir(&source).unwrap_or_else(|e| panic!("{}: {e}", source.display()))
        {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "xml") {
                std::fs::copy(&path, dir.join(path.file_name().expect("name"))).expect("copy");
                copied += 1;
            }
        }
    }
    assert!(copied > 100, "only {copied} schema files");
    dir
}

/// Writes straight to the process's stderr (the test harness captures only its macros), so
/// the tools' warnings show in the test command's output.
fn show(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Runs a tool; its output is shown when it fails, and its FAIL/WARN lines always.
fn run(name: &str, command: &mut Command) -> String {
    let out = command
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .output()
        .unwrap_or_else(|e| panic!("run {name}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let notable: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("WARN ") || l.starts_with("FAIL ") || l.contains("totals:"))
        .collect();
    show(&format!(
        "--- {name}: {}\n{}\n",
        out.status,
        notable.join("\n")
    ));
    assert!(
        out.status.success(),
        "{name} failed ({}):\n{text}",
        out.status
    );
    text
}

/// An appliance with something of everything for the tools to walk, its logins falling back
/// to a real slapd (kept running as long as the appliance is walked).
fn populated(ldap_dir: &Path) -> (Served, appliance::testing::slapd::Slapd) {
    use appliance::testing::slapd::{Slapd, SERVICE_DN, SERVICE_PASSWORD, SUFFIX};
    let slapd = Slapd::start(ldap_dir);
    let served = serve();
    let admin = served.admin();
    let directory = json!({
        "LDAP": {
            "ServiceEnabled": true,
            "ServiceAddresses": [format!("ldaps://127.0.0.1:{}", slapd.port)],
            "Authentication": {"Username": SERVICE_DN, "Password": SERVICE_PASSWORD},
            "LDAPService": {"SearchSettings": {"BaseDistinguishedNames": [SUFFIX]}},
            "RemoteRoleMapping": [
                {"RemoteGroup": "appliance-admins", "LocalRole": "Administrator"},
                {"RemoteGroup": "show-a-artists", "LocalRole": "Operator",
                 "Oem": {"Appliance": {"Tenant": "studio"}}},
            ],
        },
        "Oem": {"Appliance": {"DirectoryCertificateAuthority": slapd.ca_pem}},
    });
    let answer = admin
        .patch("/redfish/v1/AccountService", &directory, None)
        .expect("patch");
    assert_eq!(answer.status, 200, "{}", answer.json());
    for tenant in ["studio", "edit"] {
        let answer = served.request(
            &admin,
            json!({"order": {"create_tenant": {"name": tenant}}}),
        );
        assert_eq!(answer.status, 200, "{}", answer.json());
    }
    served.account(&admin, "operator1", "Operator", None);
    served.account(&admin, "viewer1", "ReadOnly", None);
    served.account(&admin, "editor1", "Operator", Some("edit"));
    let answer = settle(
        &admin,
        admin
            .post(
                "/redfish/v1/Systems",
                &specific("ws1", &["gpu-0", "nvme-0", "nic-0"]),
            )
            .expect("post"),
    );
    assert_eq!(answer.status, 201, "{}", answer.json());
    let constrained = json!({"Name": "rn1",
        "Processors": {"Members": [{"@Redfish.RequestedCount": 2, "ProcessorType": "GPU"}]}});
    let answer = settle(
        &admin,
        admin
            .post("/redfish/v1/Systems", &constrained)
            .expect("post"),
    );
    assert_eq!(answer.status, 201, "{}", answer.json());
    // An alarm that stands: ws1's NIC loses its link with no spare NIC in service; past its
    // grace it counts as failed, the failover waits for a spare, and the alarms stay on ws1
    // and on the NIC's block (Status.Conditions) for the validators to read.
    for spare in ["nic-1", "nic-2", "nic-3"] {
        let answer = served.request(
            &admin,
            json!({"order": {"set_service": {"device": spare, "in_service": false, "reason": "withheld"}}}),
        );
        assert_eq!(answer.status, 200, "{}", answer.json());
    }
    let sim = served.running.sim().expect("the simulated fabric");
    assert!(sim.link("nic-0", false), "nic-0 is attached");
    wait_for("nic-0 failed, its failover waiting for a spare", || {
        let block = admin
            .get("/redfish/v1/CompositionService/ResourceBlocks/nic-0")
            .ok()?;
        let status = &block.json()["Status"];
        let conditions = status["Conditions"].as_array()?.len();
        (conditions == 2 && status["Health"] == "Critical").then_some(())
    });
    let ws1 = admin.get("/redfish/v1/Systems/ws1").expect("ws1").json();
    let conditions = ws1["Status"]["Conditions"]
        .as_array()
        .expect("ws1's conditions");
    assert_eq!(conditions.len(), 2, "{ws1}");
    assert!(
        conditions.iter().any(|c| c["Severity"] == "Critical"),
        "{ws1}"
    );
    let answer = admin
        .post(
            "/redfish/v1/EventService/Subscriptions",
            &json!({"Destination": "https://127.0.0.1:9/events", "Protocol": "Redfish", "Context": "clients-test"}),
        )
        .expect("subscribe");
    assert_eq!(answer.status, 201, "{}", answer.json());
    let manifest = json!({"Stanzas": [{"StanzaType": "ComposeSystem", "StanzaId": "1",
        "Request": specific("held", &["gpu-5"])}]});
    let answer = admin
        .post(
            "/redfish/v1/CompositionService/Actions/CompositionService.Compose",
            &json!({"RequestFormat": "Manifest", "RequestType": "PreviewReserve", "Manifest": manifest}),
        )
        .expect("reserve");
    assert_eq!(answer.status, 200, "{}", answer.json());
    // A directory user's session, for the tools to find among the sessions.
    served.session("ana", "ana-Password-1");
    (served, slapd)
}

#[test]
fn dmtf_validators_sushy_and_redfishtool_accept_the_service() {
    let python = python();
    let schemas = schema_dir();
    let ldap_dir = tempfile::tempdir().expect("tempdir");
    let (served, _slapd) = populated(ldap_dir.path());
    let tools = repo().join("tests/redfish");
    let reports = repo().join("target/redfish-reports");

    let text = run(
        "redfish-service-validator",
        Command::new(&python)
            .arg(tools.join("service_validator.py"))
            .arg("--schema-dir")
            .arg(&schemas)
            .args([
                "--rhost",
                &served.url,
                "-u",
                ADMIN,
                "-p",
                ADMIN_PASSWORD,
                "--min-pass",
                "2500",
            ])
            .arg("--report-dir")
            .arg(reports.join("service-validator")),
    );
    assert!(text.contains("fail=0"), "{text}");

    run(
        "sushy",
        Command::new(&python)
            .arg(tools.join("sushy_walk.py"))
            .args([&served.url, ADMIN, ADMIN_PASSWORD]),
    );
    run(
        "redfishtool",
        Command::new("bash")
            .arg(tools.join("redfishtool_read.sh"))
            .args([&served.url, ADMIN, ADMIN_PASSWORD]),
    );
    // Last: it creates and locks accounts of its own.
    let text = run(
        "redfish-protocol-validator",
        Command::new(&python)
            .arg(tools.join("protocol_validator.py"))
            .args(["--rhost", &served.url, "-u", ADMIN, "-p", ADMIN_PASSWORD])
            .args([
                "--no-cert-check",
                "--avoid-http-redirect",
                "--min-pass",
                "300",
            ])
            .arg("--report-dir")
            .arg(reports.join("protocol-validator")),
    );
    assert!(text.contains("fail=0"), "{text}");
}
