//! Directory logins against a real OpenLDAP `slapd` (Debian's package, installed by the
//! README's set-up), started here on a loopback port with an `ldaps` listener whose
//! certificate a test CA signed, seeded with users and groups: the mapped groups give a role
//! and a tenant, a user in no mapped group, a wrong password and an LDAP injection in the name
//! are refused, another CA is refused, and a stopped or silent directory fails within the
//! timeout instead of hanging.

mod support;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use appliance::api::directory::{authenticate, DirectoryConfig, DirectoryError};
use appliance::model::AccountRole;
use appliance::testing::slapd::{test_pki, Slapd, SERVICE_DN, SERVICE_PASSWORD, SUFFIX};

#[test]
fn mapped_groups_log_in_and_everyone_else_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slapd = Slapd::start(dir.path());
    let config = slapd.config();

    let ana = authenticate(&config, "ana", "ana-Password-1").expect("ana logs in");
    assert_eq!(
        (ana.role, ana.tenant.clone()),
        (AccountRole::Administrator, None)
    );
    assert_eq!(ana.dn, format!("uid=ana,ou=people,{SUFFIX}"));
    assert_eq!(
        ana.groups.len(),
        2,
        "admins and the canteen: {:?}",
        ana.groups
    );
    let ola = authenticate(&config, "ola", "ola-Password-1").expect("ola logs in");
    assert_eq!(ola.role, AccountRole::ReadOnly, "a mapping by DN");
    let tia = authenticate(&config, "tia", "tia-Password-1").expect("tia logs in");
    assert_eq!(
        (tia.role, tia.tenant.as_ref().map(|t| t.to_string())),
        (AccountRole::Operator, Some("show-a".to_string()))
    );

    assert_eq!(
        authenticate(&config, "nog", "nog-Password-1"),
        Err(DirectoryError::NotMapped { user: "nog".into() })
    );
    assert_eq!(
        authenticate(&config, "ana", "wrong-Password-1"),
        Err(DirectoryError::WrongPassword)
    );
    assert_eq!(
        authenticate(&config, "nobody", "ana-Password-1"),
        Err(DirectoryError::UnknownUser),
        "an unknown user (told apart inside the appliance only: both say the same)"
    );
    assert_eq!(
        DirectoryError::UnknownUser.to_string(),
        DirectoryError::WrongPassword.to_string()
    );
    for injection in ["*)(uid=*", "*", "ana)(|(uid=*", "ana\0"] {
        assert_eq!(
            authenticate(&config, injection, "ana-Password-1"),
            Err(DirectoryError::UnknownUser),
            "{injection:?}"
        );
    }
    // The groups where the settings say: max's are in its entry's seeAlso.
    assert_eq!(
        authenticate(&config, "max", "max-Password-1"),
        Err(DirectoryError::NotMapped { user: "max".into() }),
        "max is in no groupOfNames"
    );
    let by_attribute = DirectoryConfig {
        groups_attribute: Some("seeAlso".into()),
        ..config.clone()
    };
    let max = authenticate(&by_attribute, "max", "max-Password-1").expect("max logs in");
    assert_eq!(
        (max.role, max.tenant.as_ref().map(|t| t.to_string())),
        (AccountRole::Operator, Some("show-a".to_string()))
    );
    let by_ou = DirectoryConfig {
        group_name_attribute: "ou".into(),
        ..config.clone()
    };
    assert_eq!(
        authenticate(&by_ou, "tia", "tia-Password-1"),
        Err(DirectoryError::NotMapped { user: "tia".into() }),
        "tia's group is named by its cn, not by ou"
    );
    let bad_service = DirectoryConfig {
        bind_password: "not-the-Password-1".into(),
        ..config.clone()
    };
    assert!(matches!(
        authenticate(&bad_service, "ana", "ana-Password-1"),
        Err(DirectoryError::ServiceBind { .. })
    ));

    // A directory whose certificate another CA signed is not trusted.
    let (other_ca, _, _) = test_pki();
    let other = DirectoryConfig {
        ca_pem: other_ca,
        ..config.clone()
    };
    match authenticate(&other, "ana", "ana-Password-1") {
        Err(DirectoryError::Unreachable { reason, .. }) => {
            assert!(reason.to_lowercase().contains("certificate"), "{reason}")
        }
        other => panic!("another CA: {other:?}"),
    }
}

#[test]
fn a_stopped_or_silent_directory_fails_within_the_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut slapd = Slapd::start(dir.path());
    let config = slapd.config();
    slapd.stop();
    match authenticate(&config, "ana", "ana-Password-1") {
        Err(DirectoryError::Unreachable { uri, .. }) => assert_eq!(uri, config.uri),
        other => panic!("a stopped directory: {other:?}"),
    }
    // A listener that accepts and never answers: the TLS handshake waits for nothing.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_config = DirectoryConfig {
        uri: format!("ldaps://{}", silent.local_addr().expect("addr")),
        timeout_ms: 500,
        ..config
    };
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(authenticate(&silent_config, "ana", "ana-Password-1"));
    });
    // Bounded by the timeout: it answers at all (no hang), and with the directory's fault.
    let answer = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("the login returned instead of hanging");
    assert!(
        matches!(answer, Err(DirectoryError::Unreachable { .. })),
        "{answer:?}"
    );
    drop(silent);
}

/// The directory's settings through the doors: `ctl set-directory --file` (TOML) over the
/// control socket, journaled as who set them with the bind password sealed (never in the
/// journal in plain text, opened back by the appliance's key), shown without the password;
/// settings that are not safe are refused with nothing journaled; `--off` turns it off.
#[test]
fn the_directory_is_set_from_the_command_line_journaled_sealed_and_shown_without_its_password() {
    use appliance::api::control::Client;
    use appliance::api::{Query, Reply, Request};
    let dir = tempfile::tempdir().expect("tempdir");
    let running = appliance::serve::start(appliance::serve::ServeOptions {
        data_dir: dir.path().to_path_buf(),
        fabric: appliance::serve::FabricChoice::Sim {
            topology: None,
            seed: 3,
        },
        api: None,
        identity: None,
        snapshots: true,
        machine: None,
    })
    .expect("start");
    let (ca_pem, _, _) = test_pki();
    let settings = format!(
        "kind = \"ldap\"\nuri = \"ldaps://dir.studio.test:636\"\nca_pem = '''\n{ca_pem}'''\n\
         bind_dn = \"{SERVICE_DN}\"\nbind_password = \"{SERVICE_PASSWORD}\"\nbase = \"{SUFFIX}\"\n\
         user_attribute = \"uid\"\ntimeout_ms = 3000\n\
         [[mappings]]\ngroup = \"appliance-admins\"\nrole = \"Administrator\"\n\
         [[mappings]]\ngroup = \"show-a-artists\"\nrole = \"Operator\"\ntenant = \"show-a\"\n"
    );
    let file = dir.path().join("directory.toml");
    std::fs::write(&file, &settings).expect("write");
    let ctl = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_appliance"))
            .args(["ctl", "--data-dir"])
            .arg(dir.path())
            .args(args)
            .output()
            .expect("run ctl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let file_arg = file.display().to_string();
    let (code, out, err) = ctl(&["set-directory", "--file", &file_arg]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, shown, _) = ctl(&["directory"]);
    assert_eq!(code, Some(0));
    assert!(
        shown.starts_with("directory ldap at ldaps://dir.studio.test:636"),
        "{shown}"
    );
    assert!(
        shown.contains("show-a-artists    Operator       show-a"),
        "{shown}"
    );
    assert!(!shown.contains(SERVICE_PASSWORD), "{shown}");

    let core = running.core().expect("core");
    let sealed = core.state().directory.clone().expect("set").bind_password;
    let keyring = appliance::api::auth::Keyring::open_or_create(dir.path()).expect("key");
    assert_eq!(
        keyring.open(&sealed).as_deref(),
        Some(SERVICE_PASSWORD.as_bytes()),
        "the appliance's key opens it"
    );
    let mut client = Client::connect_unix(running.socket_path()).expect("connect");
    let events = Query::Events {
        after: 0,
        wait_ms: 0,
        limit: None,
    };
    let Ok(Ok(Reply::History(entries))) = client.call(&Request::query(events.clone())) else {
        panic!("the events")
    };
    let set = entries
        .iter()
        .find(|e| e.kind == "directory_configured")
        .expect("journaled (kind 43; kind 41 is the first layout, replayed only)");
    assert_eq!(
        set.by.as_ref().map(|b| b.door),
        Some(appliance::model::Door::Local)
    );
    let journal = std::fs::read_dir(dir.path().join("journal")).expect("journal dir");
    for file in journal.flatten().filter(|f| f.path().is_file()) {
        let bytes = std::fs::read(file.path()).unwrap_or_default();
        assert!(
            !bytes
                .windows(SERVICE_PASSWORD.len())
                .any(|w| w == SERVICE_PASSWORD.as_bytes()),
            "the bind password is in {} in plain text",
            file.path().display()
        );
    }

    // Plain LDAP is refused unless allowed; nothing is journaled.
    let plain = settings.replace("ldaps://dir.studio.test:636", "ldap://dir.studio.test:389");
    std::fs::write(&file, plain).expect("write");
    let (code, _, err) = ctl(&["set-directory", "--file", &file_arg]);
    assert_ne!(code, Some(0));
    assert!(err.contains("plain LDAP"), "{err}");
    let (code, _, _) = ctl(&["set-directory", "--off"]);
    assert_eq!(code, Some(0));
    assert_eq!(core.state().directory, None);
    let (_, shown, _) = ctl(&["directory"]);
    assert_eq!(shown, "no directory: local accounts only\n");
}

/// Logins through the HTTPS door with the directory set: local accounts first, then the
/// directory. The admins' group composes, the read-only group is refused a change (403), the
/// tenant's group sees its tenant's systems only, everyone else gets 401; the session is
/// journaled with the role and tenant the groups gave; with slapd stopped the local admin still
/// logs in and a directory login answers 503 saying the directory did not answer.
#[test]
fn directory_users_log_in_through_the_https_door_with_their_groups_roles_and_tenants() {
    use appliance::api::{Meta, Query, Reply, Request};
    use appliance::decide::command::{NewSystem, Selection, Verb};
    use appliance::model::directory::BindPassword;
    use appliance::model::Secret;
    use support::*;

    let ldap_dir = tempfile::tempdir().expect("tempdir");
    let mut slapd = Slapd::start(ldap_dir.path());
    let served = serve();
    let admin = served.admin();
    let order = |client: &appliance::api::client::Client, verb: Verb| {
        client
            .request(&Request::order(verb, Meta::default()))
            .expect("request")
    };
    let settings = slapd.config();
    let password = BindPassword::Plain(Secret(settings.bind_password.clone()));
    let set = order(
        &admin,
        Verb::SetDirectory {
            settings: Some(Box::new(settings.with_password(password))),
        },
    );
    assert!(set.is_ok(), "{set:?}");
    for tenant in ["show-a", "show-b"] {
        let made = order(
            &admin,
            Verb::CreateTenant {
                name: tenant.into(),
            },
        );
        assert!(made.is_ok(), "{made:?}");
    }
    for (system, tenant) in [("a1", "show-a"), ("b1", "show-b")] {
        let made = order(
            &admin,
            Verb::CreateSystem {
                name: system.into(),
                tenant: tenant.into(),
                role: appliance::model::Role::RenderNode,
            },
        );
        assert!(made.is_ok(), "{made:?}");
    }

    let ana = served.session("ana", "ana-Password-1");
    let compose = Verb::Compose {
        system: "ws-ana".into(),
        selection: Selection::Specific(vec!["gpu-0".into()]),
        create: Some(NewSystem {
            tenant: "show-a".into(),
            role: appliance::model::Role::Workstation,
        }),
        tenant: None,
        reservation: None,
    };
    let composed = order(&ana, compose);
    assert!(matches!(composed, Ok(Reply::Accepted(_))), "{composed:?}");

    let ola = served.session("ola", "ola-Password-1");
    let (status, _) = ola.get_json("/redfish/v1/Systems").expect("get");
    assert_eq!(status, 200, "read-only reads");
    match order(
        &ola,
        Verb::CreateTenant {
            name: "show-c".into(),
        },
    ) {
        Err(answer) => assert_eq!(answer.status, 403, "{}", answer.json()),
        other => panic!("a read-only directory user changed something: {other:?}"),
    }

    let tia = served.session("tia", "tia-Password-1");
    let Ok(Reply::Systems(seen)) = tia
        .request(&Request::query(Query::Systems))
        .expect("request")
    else {
        panic!("tia's systems")
    };
    let mut names: Vec<String> = seen.iter().map(|s| s.name.to_string()).collect();
    names.sort();
    assert_eq!(names, ["a1", "ws-ana"], "only show-a's systems");

    for (user, password) in [
        ("nog", "nog-Password-1"),
        ("ana", "wrong-Password-1"),
        ("*)(uid=*", "ana-Password-1"),
        ("nobody", "ana-Password-1"),
    ] {
        let answer = served
            .anonymous()
            .login(user, password, None)
            .expect("login");
        assert_eq!(answer.status, 401, "{user}: {}", answer.json());
    }

    let events = served.events(&admin);
    let tia_login = events
        .iter()
        .find(|e| e.kind == "directory_session_opened" && e.summary.starts_with("tia "))
        .expect("tia's session is journaled");
    assert!(
        tia_login.summary.contains("as Operator of tenant show-a"),
        "{}",
        tia_login.summary
    );

    slapd.stop();
    let again = served.admin();
    let (status, _) = again.get_json("/redfish/v1/Systems").expect("get");
    assert_eq!(
        status, 200,
        "the local admin logs in with the directory down"
    );
    let finished = login_elsewhere(&served, "ana", "ana-Password-1");
    let answer = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("the login answered instead of hanging")
        .expect("login");
    assert_eq!(answer.status, 503, "{}", answer.json());
    let text = answer.json().to_string();
    assert!(
        text.contains("the directory could not check this login"),
        "{text}"
    );
}

/// A session login of `user` on a thread of its own: its answer, when it comes.
fn login_elsewhere(
    served: &support::Served,
    user: &'static str,
    password: &'static str,
) -> std::sync::mpsc::Receiver<
    Result<appliance::api::client::Answer, appliance::api::client::ClientError>,
> {
    let (done, finished) = std::sync::mpsc::channel();
    let (url, cert) = (served.url.clone(), served.cert.clone());
    std::thread::spawn(move || {
        let mut client = appliance::api::client::Client::new(
            &url,
            &appliance::api::client::Trust::Pinned(cert),
            Duration::from_secs(60),
        )
        .expect("client");
        let _ = done.send(client.login(user, password, None));
    });
    finished
}

/// A series' value in `/metrics`.
fn metric(client: &appliance::api::client::Client, series: &str) -> f64 {
    let answer = client.get("/metrics").expect("metrics");
    assert_eq!(answer.status, 200);
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// The directory through Redfish's AccountService (DSP0268's `LDAP`, `RemoteRoleMapping`,
/// the provider's `Certificates`), with what a first configuration lacks named, then the
/// directory users' lockout and TOTP second factor.
#[test]
fn the_directory_is_set_through_account_service_and_its_users_are_locked_out_and_asked_for_totp() {
    use appliance::api::{Meta, Query, Reply, Request};
    use appliance::decide::command::Verb;
    use appliance::model::directory::DirectoryUserChange;
    use serde_json::{json, Value};
    use support::*;

    let ldap_dir = tempfile::tempdir().expect("tempdir");
    let slapd = Slapd::start(ldap_dir.path());
    let served = serve_with(|config| config.lockout_threshold = 3);
    let admin = served.admin();
    let service = "/redfish/v1/AccountService";
    let ldap = json!({
        "ServiceEnabled": true,
        "ServiceAddresses": [format!("127.0.0.1:{}", slapd.port)],
        "Authentication": {
            "AuthenticationType": "UsernameAndPassword",
            "Username": SERVICE_DN,
            "Password": SERVICE_PASSWORD,
        },
        "LDAPService": {"SearchSettings": {
            "BaseDistinguishedNames": [SUFFIX],
            "UsernameAttribute": "uid",
            "GroupNameAttribute": "cn",
        }},
        "RemoteRoleMapping": [
            {"RemoteGroup": "appliance-admins", "LocalRole": "Administrator"},
            {"RemoteGroup": "show-a-artists", "LocalRole": "Operator",
             "Oem": {"Appliance": {"Tenant": "show-a"}}},
        ],
        "TimeoutSeconds": 2,
    });

    // A first configuration names what it lacks; nothing is journaled.
    let head = served.head();
    let answer = admin
        .patch(service, &json!({"LDAP": ldap}), None)
        .expect("patch");
    assert_error(&answer, 400, "PropertyMissing");
    assert!(
        answer
            .json()
            .to_string()
            .contains("Oem/Appliance/DirectoryCertificateAuthority"),
        "{}",
        answer.json()
    );
    let mut plain = ldap.clone();
    plain["ServiceAddresses"] = json!([format!("ldap://127.0.0.1:{}", slapd.port)]);
    let answer = admin
        .patch(service, &json!({"LDAP": plain}), None)
        .expect("patch");
    assert_eq!(answer.status, 400, "{}", answer.json());
    assert!(
        answer.json().to_string().contains("plain LDAP"),
        "{}",
        answer.json()
    );
    let mut two = ldap.clone();
    two["ServiceEnabled"] = json!(true);
    let answer = admin
        .patch(
            service,
            &json!({"LDAP": ldap, "ActiveDirectory": two,
                    "Oem": {"Appliance": {"DirectoryCertificateAuthority": slapd.ca_pem}}}),
            None,
        )
        .expect("patch");
    assert_error(&answer, 400, "PropertyValueConflict");
    let answer = admin
        .patch(
            service,
            &json!({"LDAP": ldap, "Oem": {"Appliance": {"DirectoryCertificateAuthority": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}}}),
            None,
        )
        .expect("patch");
    assert_eq!(
        answer.status,
        400,
        "a CA that does not parse: {}",
        answer.json()
    );
    assert_eq!(served.head(), head, "refusals journal nothing");

    // The configuration, shown back without its password.
    let answer = admin
        .patch(
            service,
            &json!({"LDAP": ldap, "Oem": {"Appliance": {"DirectoryCertificateAuthority": slapd.ca_pem}}}),
            None,
        )
        .expect("patch");
    assert_eq!(answer.status, 200, "{}", answer.json());
    let shown = answer.json();
    assert!(!shown.to_string().contains(SERVICE_PASSWORD), "{shown}");
    assert_eq!(shown["LocalAccountAuth"], "LocalFirst");
    let provider = &shown["LDAP"];
    assert_eq!(provider["ServiceEnabled"], true);
    assert_eq!(
        provider["ServiceAddresses"],
        json!([format!("ldaps://127.0.0.1:{}", slapd.port)]),
        "no scheme reads as ldaps://"
    );
    assert_eq!(provider["Authentication"]["Username"], SERVICE_DN);
    assert_eq!(provider["Authentication"]["Password"], Value::Null);
    assert_eq!(provider["PasswordSet"], true);
    assert_eq!(
        provider["RemoteRoleMapping"][1]["Oem"]["Appliance"]["Tenant"],
        "show-a"
    );
    assert_eq!(
        provider["LDAPService"]["SearchSettings"]["GroupsAttribute"],
        Value::Null
    );
    assert_eq!(shown["ActiveDirectory"]["ServiceEnabled"], false);
    served.session("ana", "ana-Password-1");
    served.session("tia", "tia-Password-1");

    // Who set it is in the history.
    let events = served.events(&admin);
    let set = events
        .iter()
        .find(|e| e.kind == "directory_configured")
        .expect("journaled");
    assert_eq!(
        set.by.as_ref().and_then(|b| b.account.as_deref()),
        Some(ADMIN)
    );
    assert!(set.summary.contains("ldaps://127.0.0.1"), "{}", set.summary);

    // Only ConfigureUsers changes it.
    served.account(&admin, "viewer", "ReadOnly", None);
    let viewer = served.session("viewer", PASSWORD);
    let answer = viewer
        .patch(service, &json!({"LDAP": {"ServiceEnabled": false}}), None)
        .expect("patch");
    assert_eq!(answer.status, 403, "{}", answer.json());
    let (_, seen) = viewer.get_json(service).expect("get");
    assert_eq!(seen["LDAP"]["ServiceEnabled"], true);
    assert!(
        seen["LDAP"].get("ServiceAddresses").is_none()
            && seen["LDAP"].get("RemoteRoleMapping").is_none(),
        "how it is set is ConfigureUsers': {seen}"
    );

    // A partial PATCH keeps the rest, the sealed bind password with it.
    let answer = admin
        .patch(
            service,
            &json!({"LDAP": {"RemoteRoleMapping": [{"RemoteGroup": "appliance-admins", "LocalRole": "Administrator"}]}}),
            None,
        )
        .expect("patch");
    assert_eq!(answer.status, 200, "{}", answer.json());
    let answer = served
        .anonymous()
        .login("tia", "tia-Password-1", None)
        .expect("login");
    assert_eq!(answer.status, 401, "show-a is no longer mapped");
    served.session("ana", "ana-Password-1");

    // Basic: a script's requests ask the directory once, then within the TTL not again; a
    // wrong password is not taken from what was remembered.
    let asked = || metric(&admin, "appliance_directory_login_duration_seconds_count");
    let before = asked();
    let basic = served.anonymous().with_basic("ana", "ana-Password-1");
    for _ in 0..5 {
        assert_eq!(basic.get("/redfish/v1/Systems").expect("get").status, 200);
    }
    assert_eq!(asked(), before + 1.0, "the directory was asked once");
    let wrong = served.anonymous().with_basic("ana", "wrong-Password-1");
    assert_eq!(wrong.get("/redfish/v1/Systems").expect("get").status, 401);
    assert_eq!(asked(), before + 2.0);

    // The CA bundle as the provider's certificates: one more, then back to one; the last
    // cannot go.
    let certificates = "/redfish/v1/AccountService/LDAP/Certificates";
    let (status, listed) = admin.get_json(certificates).expect("get");
    assert_eq!(
        (status, listed["Members@odata.count"].clone()),
        (200, json!(1))
    );
    let (status, first) = admin.get_json(&format!("{certificates}/1")).expect("get");
    assert_eq!(status, 200);
    assert_eq!(first["Subject"]["CommonName"], "directory test CA");
    assert_eq!(first["CertificateType"], "PEM");
    let (other_ca, _, _) = test_pki();
    let answer = admin
        .post(
            certificates,
            &json!({"CertificateString": other_ca, "CertificateType": "PEM"}),
        )
        .expect("post");
    assert_eq!(answer.status, 201, "{}", answer.json());
    assert_eq!(
        answer.header("location"),
        Some(&*format!("{certificates}/2"))
    );
    let answer = admin
        .post(
            certificates,
            &json!({"CertificateString": "not a certificate"}),
        )
        .expect("post");
    assert_eq!(answer.status, 400, "{}", answer.json());
    served.session("ana", "ana-Password-1");
    assert_eq!(
        admin
            .delete(&format!("{certificates}/2"))
            .expect("delete")
            .status,
        204
    );
    let answer = admin.delete(&format!("{certificates}/1")).expect("delete");
    assert_eq!(answer.status, 409, "the last CA: {}", answer.json());
    let answer = admin
        .post(
            "/redfish/v1/AccountService/ActiveDirectory/Certificates",
            &json!({"CertificateString": other_ca}),
        )
        .expect("post");
    assert_eq!(
        answer.status,
        409,
        "no Active Directory is set: {}",
        answer.json()
    );

    // Lockout: the threshold-th wrong password locks the directory user, journaled; then even
    // the right password is refused, without asking the directory; an administrator unlocks.
    for _ in 0..3 {
        let answer = served
            .anonymous()
            .login("ana", "wrong-Password-1", None)
            .expect("login");
        assert_eq!(answer.status, 401);
    }
    let core = served.running.core().expect("core");
    wait_for("ana locked", || {
        let state = core.state();
        state
            .directory_users
            .get("ana")
            .and_then(|u| u.locked_until_ms)
            .map(|_| ())
    });
    let answer = served
        .anonymous()
        .login("ana", "ana-Password-1", None)
        .expect("login");
    assert_eq!(answer.status, 401, "locked");
    let Ok(Reply::Directory(Some(view))) = admin
        .request(&Request::query(Query::Directory))
        .expect("directory")
    else {
        panic!("the directory")
    };
    assert!(
        view.users
            .iter()
            .any(|u| u.name == "ana" && u.locked_until_ms.is_some()),
        "{view:?}"
    );
    let unlocked = admin
        .request(&Request::order(
            Verb::ChangeDirectoryUser {
                name: "ana".into(),
                change: DirectoryUserChange::Locked { until_ms: None },
            },
            Meta::default(),
        ))
        .expect("unlock");
    assert!(unlocked.is_ok(), "{unlocked:?}");
    let mut ana = served.session("ana", "ana-Password-1");

    // TOTP: ana sets her own key at her name's URI; then she logs in with a code only.
    let answer = ana
        .post(
            "/redfish/v1/AccountService/Accounts/ana/Actions/ManagerAccount.GenerateSecretKey",
            &json!({}),
        )
        .expect("generate");
    assert_eq!(answer.status, 200, "{}", answer.json());
    let secret = secret_key(&answer);
    let answer = ana.login("ana", "ana-Password-1", None).expect("login");
    assert_eq!(answer.status, 401, "no code");
    let basic = served.anonymous().with_basic("ana", "ana-Password-1");
    assert_eq!(basic.get("/redfish/v1/Systems").expect("get").status, 401);
    let code = totp_now(&secret);
    let answer = served
        .anonymous()
        .login("ana", "ana-Password-1", Some(&code))
        .expect("login");
    assert_eq!(answer.status, 201, "{}", answer.json());
    // An administrator clears a directory user's key (a lost phone).
    let answer = admin
        .post(
            "/redfish/v1/AccountService/Accounts/ana/Actions/ManagerAccount.ClearSecretKey",
            &json!({}),
        )
        .expect("clear");
    assert_eq!(answer.status, 204, "{}", answer.json());
    served.session("ana", "ana-Password-1");
    let answer = viewer
        .post(
            "/redfish/v1/AccountService/Accounts/ana/Actions/ManagerAccount.GenerateSecretKey",
            &json!({}),
        )
        .expect("generate");
    assert_eq!(answer.status, 403, "another's key: {}", answer.json());

    // The logins as an operator graphs them.
    let count = |series: &str| metric(&admin, series);
    assert!(count(r#"appliance_logins_total{source="directory",result="ok"}"#) >= 5.0);
    assert!(count(r#"appliance_logins_total{source="directory",result="refused"}"#) >= 4.0);
    assert!(count(r#"appliance_logins_total{source="directory",result="locked"}"#) >= 1.0);
    assert!(count(r#"appliance_logins_total{source="local",result="ok"}"#) >= 1.0);
    let checks = count("appliance_directory_login_duration_seconds_count");
    assert!(checks >= 9.0);
    // A figure for the note, not a check.
    eprintln!(
        "directory logins: {checks} asked of slapd, {:.2} ms each on average",
        count("appliance_directory_login_duration_seconds_sum") / checks * 1000.0
    );

    // Turned off and changed in one PATCH: refused, nothing journaled.
    let head = served.head();
    let answer = admin
        .patch(
            service,
            &json!({"LDAP": {"ServiceEnabled": false}, "Oem": {"Appliance": {"DirectoryStartTLS": true}}}),
            None,
        )
        .expect("patch");
    assert_error(&answer, 400, "PropertyValueConflict");
    assert_eq!(served.head(), head);

    // Off through Redfish: directory users are refused again.
    let answer = admin
        .patch(service, &json!({"LDAP": {"ServiceEnabled": false}}), None)
        .expect("patch");
    assert_eq!(answer.status, 200, "{}", answer.json());
    assert_eq!(answer.json()["LDAP"]["ServiceEnabled"], false);
    assert_eq!(answer.json()["LocalAccountAuth"], "Enabled");
    let answer = served
        .anonymous()
        .login("ana", "ana-Password-1", None)
        .expect("login");
    assert_eq!(answer.status, 401);
}

/// A line with `latency` each way in front of `upstream` (a slow WAN to the studio's
/// directory): every chunk is passed on `latency` after it arrived, in order.
fn slow_line(upstream: u16, latency: Duration) -> u16 {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    fn pump(mut from: TcpStream, mut to: TcpStream, latency: Duration) {
        let (chunks, arrived) = std::sync::mpsc::channel::<(std::time::Instant, Vec<u8>)>();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 16 << 10];
            while let Ok(n @ 1..) = from.read(&mut buffer) {
                if chunks
                    .send((std::time::Instant::now(), buffer[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for (at, bytes) in arrived {
                std::thread::sleep(
                    (at + latency).saturating_duration_since(std::time::Instant::now()),
                );
                if to.write_all(&bytes).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (client_in, server_in) = match (client.try_clone(), server.try_clone()) {
                (Ok(c), Ok(s)) => (c, s),
                _ => continue,
            };
            pump(client_in, server, latency);
            pump(server_in, client, latency);
        }
    });
    port
}

/// A directory that answers every step, each slowly (0.6 s each way in front of slapd, under a
/// 2 s timeout, so no step times out): the door gives the login up at its deadline, three
/// timeouts, with a 503 that says so, instead of waiting out every step; the local admin logs
/// in meanwhile.
#[test]
fn a_slow_directory_is_given_up_on_at_the_logins_deadline() {
    use appliance::api::{Meta, Request};
    use appliance::decide::command::Verb;
    use appliance::model::directory::BindPassword;
    use appliance::model::Secret;
    use support::*;

    let ldap_dir = tempfile::tempdir().expect("tempdir");
    let slapd = Slapd::start(ldap_dir.path());
    let line = slow_line(slapd.port, Duration::from_millis(600));
    let served = serve();
    let admin = served.admin();
    let mut settings = slapd.config();
    settings.uri = format!("ldaps://127.0.0.1:{line}");
    settings.timeout_ms = 2_000;
    let password = BindPassword::Plain(Secret(settings.bind_password.clone()));
    let set = admin
        .request(&Request::order(
            Verb::SetDirectory {
                settings: Some(Box::new(settings.with_password(password))),
            },
            Meta::default(),
        ))
        .expect("request");
    assert!(set.is_ok(), "{set:?}");
    let finished = login_elsewhere(&served, "ana", "ana-Password-1");
    std::thread::sleep(Duration::from_millis(500));
    let (status, _) = served.admin().get_json("/redfish/v1/Systems").expect("get");
    assert_eq!(
        status, 200,
        "the local admin logs in while the directory is slow"
    );
    let answer = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("the login answered")
        .expect("login");
    assert_eq!(answer.status, 503, "{}", answer.json());
    let text = answer.json().to_string();
    assert!(
        text.contains("no answer to the whole login within 6000 ms"),
        "{text}"
    );
}
