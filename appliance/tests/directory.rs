//! Directory logins against a real OpenLDAP `slapd` (Debian's package, installed by the
//! README's set-up), started here on a loopback port with an `ldaps` listener whose
//! certificate a test CA signed, seeded with users and groups: the mapped groups give a role
//! and a tenant, a user in no mapped group, a wrong password and an LDAP injection in the name
//! are refused, another CA is refused, and a stopped or silent directory fails within the
//! timeout instead of hanging.

mod support;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use appliance::api::directory::{
    authenticate, DirectoryConfig, DirectoryError, DirectoryKind, GroupMapping,
};
use appliance::model::AccountRole;

const SUFFIX: &str = "dc=studio,dc=test";
const SERVICE_DN: &str = "cn=appliance,dc=studio,dc=test";
const SERVICE_PASSWORD: &str = "service-Password-1";

/// One slapd of this test's own, killed when dropped.
struct Slapd {
    child: Child,
    port: u16,
    ca_pem: String,
}

/// A CA and a certificate for 127.0.0.1 that it signed: (CA PEM, certificate PEM, key PEM).
fn test_pki() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "directory test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    let cert = params.signed_by(&key, &ca).expect("certificate");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn entry(dn: &str, lines: &[&str]) -> String {
    format!("dn: {dn}\n{}\n\n", lines.join("\n"))
}

fn user(uid: &str, password: &str) -> String {
    entry(
        &format!("uid={uid},ou=people,{SUFFIX}"),
        &[
            "objectClass: inetOrgPerson",
            &format!("uid: {uid}"),
            &format!("cn: {uid}"),
            "sn: test",
            &format!("userPassword: {password}"),
        ],
    )
}

fn group(cn: &str, members: &[&str]) -> String {
    let mut lines = vec!["objectClass: groupOfNames".to_string(), format!("cn: {cn}")];
    lines.extend(
        members
            .iter()
            .map(|m| format!("member: uid={m},ou=people,{SUFFIX}")),
    );
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    entry(&format!("cn={cn},ou=groups,{SUFFIX}"), &lines)
}

impl Slapd {
    fn start(dir: &Path) -> Slapd {
        let slapd = tool("slapd");
        let (ca_pem, cert_pem, key_pem) = test_pki();
        for (name, text) in [
            ("ca.pem", &ca_pem),
            ("server.pem", &cert_pem),
            ("server.key", &key_pem),
        ] {
            std::fs::write(dir.join(name), text).expect("write the PKI");
        }
        std::fs::create_dir_all(dir.join("db")).expect("db dir");
        let d = dir.display();
        let schema = "/etc/ldap/schema";
        let conf = format!(
            "include {schema}/core.schema\ninclude {schema}/cosine.schema\n\
             include {schema}/inetorgperson.schema\ninclude {schema}/nis.schema\n\
             modulepath /usr/lib/ldap\nmoduleload back_mdb\n\
             pidfile {d}/slapd.pid\nargsfile {d}/slapd.args\n\
             TLSCACertificateFile {d}/ca.pem\nTLSCertificateFile {d}/server.pem\n\
             TLSCertificateKeyFile {d}/server.key\n\
             database mdb\nmaxsize 10485760\nsuffix \"{SUFFIX}\"\n\
             rootdn \"cn=root,{SUFFIX}\"\nrootpw root-Password-1\ndirectory {d}/db\n"
        );
        std::fs::write(dir.join("slapd.conf"), conf).expect("slapd.conf");
        let mut seed = entry(
            SUFFIX,
            &[
                "objectClass: dcObject",
                "objectClass: organization",
                "o: studio",
                "dc: studio",
            ],
        );
        seed += &entry(
            SERVICE_DN,
            &[
                "objectClass: simpleSecurityObject",
                "objectClass: organizationalRole",
                "cn: appliance",
                &format!("userPassword: {SERVICE_PASSWORD}"),
            ],
        );
        seed += &entry(
            &format!("ou=people,{SUFFIX}"),
            &["objectClass: organizationalUnit", "ou: people"],
        );
        seed += &entry(
            &format!("ou=groups,{SUFFIX}"),
            &["objectClass: organizationalUnit", "ou: groups"],
        );
        for (uid, password) in [
            ("ana", "ana-Password-1"),
            ("ola", "ola-Password-1"),
            ("tia", "tia-Password-1"),
            ("nog", "nog-Password-1"),
        ] {
            seed += &user(uid, password);
        }
        seed += &group("appliance-admins", &["ana"]);
        seed += &group("appliance-readonly", &["ola"]);
        seed += &group("show-a-artists", &["tia"]);
        seed += &group("canteen", &["nog", "ana"]);
        std::fs::write(dir.join("seed.ldif"), seed).expect("seed");
        let slapadd = slapd.with_file_name("slapadd");
        let added = Command::new(&slapadd)
            .arg("-f")
            .arg(dir.join("slapd.conf"))
            .arg("-l")
            .arg(dir.join("seed.ldif"))
            .output()
            .expect("run slapadd");
        assert!(
            added.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&added.stderr)
        );
        let port = free_port();
        let child = Command::new(&slapd)
            .arg("-f")
            .arg(dir.join("slapd.conf"))
            .arg("-h")
            .arg(format!("ldaps://127.0.0.1:{port}/"))
            .args(["-d", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("slapd.log")).expect("log"),
            ))
            .spawn()
            .expect("start slapd");
        let mut slapd = Slapd {
            child,
            port,
            ca_pem,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "slapd did not listen: {}",
                log(dir)
            );
            if let Ok(Some(status)) = slapd.child.try_wait() {
                panic!("slapd exited {status}: {}", log(dir));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        slapd
    }

    fn config(&self) -> DirectoryConfig {
        DirectoryConfig {
            kind: DirectoryKind::Ldap,
            uri: format!("ldaps://127.0.0.1:{}", self.port),
            starttls: false,
            allow_plain: false,
            ca_pem: self.ca_pem.clone(),
            bind_dn: SERVICE_DN.into(),
            bind_password: SERVICE_PASSWORD.into(),
            base: SUFFIX.into(),
            user_attribute: "uid".into(),
            mappings: vec![
                GroupMapping {
                    group: "appliance-admins".into(),
                    role: AccountRole::Administrator,
                    tenant: None,
                },
                GroupMapping {
                    group: format!("cn=appliance-readonly,ou=groups,{SUFFIX}"),
                    role: AccountRole::ReadOnly,
                    tenant: None,
                },
                GroupMapping {
                    group: "show-a-artists".into(),
                    role: AccountRole::Operator,
                    tenant: Some("show-a".into()),
                },
            ],
            timeout_ms: 2_000,
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("slapd.log")).unwrap_or_default()
}

/// Debian puts slapd in /usr/sbin; the set-up installs it.
fn tool(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin", "/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} is not installed: run `cargo run --release -p qemu -- setup` (the README's set-up installs Debian's slapd)"))
}

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
        Err(DirectoryError::BadCredentials)
    );
    assert_eq!(
        authenticate(&config, "nobody", "ana-Password-1"),
        Err(DirectoryError::BadCredentials),
        "an unknown user reads as a wrong password"
    );
    for injection in ["*)(uid=*", "*", "ana)(|(uid=*", "ana\0"] {
        assert_eq!(
            authenticate(&config, injection, "ana-Password-1"),
            Err(DirectoryError::BadCredentials),
            "{injection:?}"
        );
    }
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
        .find(|e| e.kind == "directory_set")
        .expect("journaled");
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
            settings: Some(settings.with_password(password)),
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

    let Ok(Reply::History(events)) = admin
        .request(&Request::query(Query::Events {
            after: 0,
            wait_ms: 0,
            limit: None,
        }))
        .expect("events")
    else {
        panic!("the events")
    };
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
    let (done, finished) = std::sync::mpsc::channel();
    let (url, cert) = (served.url.clone(), served.cert.clone());
    std::thread::spawn(move || {
        let mut client = appliance::api::client::Client::new(
            &url,
            &appliance::api::client::Trust::Pinned(cert),
            Duration::from_secs(60),
        )
        .expect("client");
        let _ = done.send(client.login("ana", "ana-Password-1", None));
    });
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
