//! A served appliance (simulated fabric, real journal, HTTPS door on a loopback port) for the
//! Redfish tests, and clients of it that pin its certificate.

#![allow(dead_code)]

use std::time::Duration;

use appliance::api::client::{Answer, Client, Trust};
use appliance::api::redfish::RedfishConfig;
use appliance::model::Secret;
use appliance::serve::{self, ApiDoor, FabricChoice, Running, ServeOptions};
use serde_json::{json, Value};

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "Admin-Passw0rd-test";
pub const PASSWORD: &str = "Other-Passw0rd-test";

/// The appliance and its data directory (removed on drop).
pub struct Served {
    pub running: Running,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub cert: String,
}

/// Starts an appliance whose door is configured by `configure`.
pub fn serve_with(configure: impl FnOnce(&mut RedfishConfig)) -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = RedfishConfig::new("127.0.0.1:0".parse().expect("address"), dir.path().into());
    configure(&mut config);
    let options = ServeOptions {
        data_dir: dir.path().to_path_buf(),
        fabric: FabricChoice::Sim {
            topology: None,
            seed: 1,
        },
        api: Some(ApiDoor {
            config,
            admin_password: Some(Secret(ADMIN_PASSWORD.into())),
        }),
        identity: None,
        snapshots: true,
        machine: None,
    };
    let running = serve::start(options).expect("start the appliance");
    let url = format!("https://{}", running.api_addr().expect("the API's address"));
    let cert = running
        .api_cert_pem()
        .expect("the API's certificate")
        .to_string();
    Served {
        running,
        dir,
        url,
        cert,
    }
}

pub fn serve() -> Served {
    serve_with(|_| {})
}

impl Served {
    /// A client without credentials.
    pub fn anonymous(&self) -> Client {
        Client::new(
            &self.url,
            &Trust::Pinned(self.cert.clone()),
            Duration::from_secs(60),
        )
        .expect("client")
    }

    /// A client with a session of `account`.
    pub fn session(&self, account: &str, password: &str) -> Client {
        let mut client = self.anonymous();
        let answer = client.login(account, password, None).expect("login");
        assert_eq!(answer.status, 201, "login of {account}: {}", answer.json());
        client
    }

    pub fn admin(&self) -> Client {
        self.session(ADMIN, ADMIN_PASSWORD)
    }

    /// The journal's head (a refused request must not move it).
    pub fn head(&self) -> u64 {
        self.running.core().expect("core").state().head
    }

    /// Makes `name` with `role` (Administrator, Operator, ReadOnly), of `tenant` or global.
    pub fn account(&self, admin: &Client, name: &str, role: &str, tenant: Option<&str>) {
        let mut body = json!({"UserName": name, "Password": PASSWORD, "RoleId": role});
        if let Some(tenant) = tenant {
            body["Oem"] = json!({"Appliance": {"Tenant": tenant}});
        }
        let answer = admin
            .post("/redfish/v1/AccountService/Accounts", &body)
            .expect("create account");
        assert_eq!(answer.status, 201, "create {name}: {}", answer.json());
    }

    /// Every journaled event, as `ctl history` reads them.
    pub fn events(&self, client: &Client) -> Vec<appliance::api::views::HistoryEntryView> {
        let query = appliance::api::Query::Events {
            after: 0,
            wait_ms: 0,
            limit: None,
        };
        match client
            .request(&appliance::api::Request::query(query))
            .expect("events")
        {
            Ok(appliance::api::Reply::History(events)) => events,
            other => panic!("the events: {other:?}"),
        }
    }

    /// An OEM request (the CLI's JSON lines), e.g. `{"order":{"create_tenant":{"name":"a"}}}`.
    pub fn request(&self, client: &Client, body: Value) -> Answer {
        client
            .post("/redfish/v1/Oem/Appliance/Requests", &body)
            .expect("request")
    }
}

/// The secret key a `ManagerAccount.GenerateSecretKey` answered (base32), as bytes.
pub fn secret_key(answer: &Answer) -> Vec<u8> {
    let key = answer.json()["SecretKey"]
        .as_str()
        .expect("SecretKey")
        .to_string();
    totp_rs::Secret::try_from_base32(&key)
        .expect("base32")
        .as_bytes()
        .to_vec()
}

/// The TOTP code of `secret` now.
pub fn totp_now(secret: &[u8]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    appliance::api::auth::totp_code(secret, now).expect("code")
}

/// A block's `{"@odata.id": ...}`.
pub fn block(device: &str) -> Value {
    json!({"@odata.id": format!("/redfish/v1/CompositionService/ResourceBlocks/{device}")})
}

/// Specific composition of `devices` into `name`.
pub fn specific(name: &str, devices: &[&str]) -> Value {
    json!({
        "Name": name,
        "Links": {"ResourceBlocks": devices.iter().map(|d| block(d)).collect::<Vec<_>>()},
    })
}

/// Follows a 202's task monitor until it answers something else (at most a minute).
pub fn settle(client: &Client, answer: Answer) -> Answer {
    let mut answer = answer;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while answer.status == 202 {
        assert!(
            std::time::Instant::now() < deadline,
            "the task never finished"
        );
        let monitor = answer
            .header("location")
            .expect("a task monitor")
            .to_string();
        std::thread::sleep(Duration::from_millis(50));
        let path = monitor
            .strip_prefix(client.base())
            .unwrap_or(&monitor)
            .to_string();
        answer = client.get(&path).expect("task monitor");
    }
    answer
}

/// The MessageIds of an error answer.
pub fn message_ids(answer: &Answer) -> Vec<String> {
    answer.json()["error"]["@Message.ExtendedInfo"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["MessageId"].as_str().map(String::from))
        .collect()
}

/// Asserts `answer` is an error of `status` naming a MessageId that ends with `id`.
#[track_caller]
pub fn assert_error(answer: &Answer, status: u16, id: &str) {
    let ids = message_ids(answer);
    assert!(
        answer.status == status && ids.iter().any(|m| m.ends_with(id)),
        "expected {status} {id}, got {} {ids:?}: {}",
        answer.status,
        answer.json()
    );
}

/// Polls `probe` every 50 ms for up to 20 s.
pub fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
