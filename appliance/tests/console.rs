//! The console's line mode against the service on the simulated fabric, through the console's
//! socket: the PIN set at the first start, a system created and composed at the console and
//! journaled as made there, a destructive command that waits for its confirmation, the journal's
//! live tail, five wrong PINs that lock; and noise on the line that harms neither the console
//! nor the service. The panel follows the journal's tail.

use std::io::Cursor;
use std::time::Duration;

use appliance::api::control::Client;
use appliance::api::{HistoryOf, Meta, Query, Reply, Request};
use appliance::console::line::LineMode;
use appliance::console::panel::{Line, PanelDisplay};
use appliance::console::pin::PinStore;
use appliance::console::{self, Service};
use appliance::decide::command::{Selection, Verb};
use appliance::model::Door;
use appliance::serve::{self, FabricChoice, ServeOptions};

fn start(dir: &std::path::Path) -> serve::Running {
    let running = serve::start(ServeOptions {
        data_dir: dir.to_path_buf(),
        fabric: FabricChoice::Sim {
            topology: None,
            seed: 5,
        },
        api: None,
        identity: None,
        snapshots: true,
        machine: None,
    })
    .expect("start");
    let mut client = Client::connect_unix(running.socket_path()).expect("connect");
    let tenant = Verb::CreateTenant {
        name: "studio".into(),
    };
    let answer = client.call(&Request::order(tenant, Meta::default()));
    assert!(matches!(answer, Ok(Ok(_))), "{answer:?}");
    running
}

/// Runs line mode over `script`; what it printed.
fn session(dir: &std::path::Path, script: &[u8], lockout: Duration) -> String {
    let mut output = Vec::new();
    let mode = LineMode {
        input: Cursor::new(script.to_vec()),
        output: &mut output,
        service: Service::of(dir),
        pins: PinStore::new(dir).with_lockout(lockout),
        idle: Duration::from_secs(300),
    };
    mode.run().expect("the session runs to its end");
    String::from_utf8(output).expect("text")
}

#[test]
fn a_pin_set_at_first_start_then_a_compose_journaled_as_made_at_the_console() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path());
    let script = b"1234\n12345\n4711\n4711\n4711\n\
        create ws1 studio workstation\n\
        compose ws1 gpu-0 nvme-0\n\
        decompose ws1 gpu-0\nno\n\
        systems\n\
        events 3\n\
        melt ws1\n\
        quit\n\
        status\n";
    let out = session(dir.path(), script, Duration::from_secs(60));
    for expected in [
        "No console PIN is set.",
        "the two PINs differ; again",
        "PIN set",
        "appliance ",
        "unlocked",
        "Release gpu-0 from ws1? Type yes to confirm: cancelled",
        "no command \"melt\"; `help` lists them",
    ] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }
    assert!(!out.contains("refused"), "{out}");
    // After quit nothing more ran: no status table after the last prompt.
    assert!(out.trim_end().ends_with('>'), "{out}");

    let mut client = Client::connect_unix(running.socket_path()).expect("connect");
    let Ok(Ok(Reply::System(ws1))) =
        client.call(&Request::query(Query::System { name: "ws1".into() }))
    else {
        panic!("ws1 exists")
    };
    let mut devices: Vec<String> = ws1.devices.iter().map(|d| d.id.to_string()).collect();
    devices.sort();
    assert_eq!(
        devices,
        ["gpu-0", "nvme-0"],
        "the cancelled decompose did nothing"
    );
    let history = Query::History {
        of: HistoryOf::System("ws1".into()),
        limit: None,
    };
    let Ok(Ok(Reply::History(entries))) = client.call(&Request::query(history)) else {
        panic!("ws1's history")
    };
    let compose = entries
        .iter()
        .find(|e| e.kind == "compose_requested")
        .expect("the compose in the history");
    assert_eq!(
        compose.by.as_ref().map(|b| b.door),
        Some(Door::Console),
        "{compose:?}"
    );
    let pin_file = std::fs::read_to_string(dir.path().join("console-pin")).expect("pin file");
    assert!(!pin_file.contains("4711"), "the PIN is kept hashed");
}

#[test]
fn five_wrong_pins_lock_the_console_and_noise_harms_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path());
    PinStore::new(dir.path()).set("2468").expect("set");
    let out = session(
        dir.path(),
        b"0000\n1111\n2222\n3333\n4444\n2468\n",
        Duration::from_secs(60),
    );
    assert!(out.contains("wrong PIN (4 tries left"), "{out}");
    assert!(
        out.contains("the console is locked for 60 s more after 5 wrong PINs"),
        "{out}"
    );
    assert!(
        out.contains("locked for 60 s") && !out.contains("unlocked"),
        "even the right PIN waits: {out}"
    );
    assert!(
        out.contains("journal head"),
        "the summary shows while locked: {out}"
    );

    // Noise at an unlocked console (the PIN set anew ends the lockout): bytes that are not
    // UTF-8, escape sequences cut in half, a flood of keys.
    PinStore::new(dir.path()).set("2468").expect("set");
    let mut noise: Vec<u8> = b"2468\n".to_vec();
    noise.extend_from_slice(b"\xff\xfe\x00\x1b[1;\n\x1b\x1bOP\x1b[2\n");
    let mut seed = 7u64;
    for _ in 0..20_000 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        noise.push((seed >> 56) as u8);
    }
    noise.extend(std::iter::repeat_n(b'x', 10_000));
    noise.extend_from_slice(b"\nquit\n");
    let noisy = session(dir.path(), &noise, Duration::from_secs(60));
    assert!(
        noisy.contains("unlocked") && noisy.contains("no command"),
        "{noisy}"
    );
    // The service is unaffected: a compose through another door still works.
    let mut client = Client::connect_unix(running.socket_path()).expect("connect");
    let compose = Verb::Compose {
        system: "rn1".into(),
        selection: Selection::Specific(vec!["gpu-1".into()]),
        create: Some(appliance::decide::command::NewSystem {
            tenant: "studio".into(),
            role: appliance::model::Role::RenderNode,
        }),
        tenant: None,
        reservation: None,
    };
    let answer = client.call(&Request::order(compose, Meta::default()));
    assert!(matches!(answer, Ok(Ok(Reply::Accepted(_)))), "{answer:?}");
}

/// Records what the panel shows.
#[derive(Default)]
struct Recorded(Vec<[String; 2]>);

impl PanelDisplay for Recorded {
    fn show(&mut self, lines: &[Line; 2]) -> std::io::Result<()> {
        self.0.push([lines[0].to_string(), lines[1].to_string()]);
        Ok(())
    }
}

#[test]
fn the_panel_follows_the_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path());
    let mut service = Service::of(dir.path());
    let mut recorded = Recorded::default();
    let mut client = Client::connect_unix(running.socket_path()).expect("connect");
    let mut rounds = 0;
    console::run_panel(
        &mut service,
        &mut recorded,
        Duration::from_millis(200),
        || {
            rounds += 1;
            if rounds == 2 {
                let compose = Verb::Compose {
                    system: "rn1".into(),
                    selection: Selection::Specific(vec!["gpu-0".into(), "nvme-0".into()]),
                    create: Some(appliance::decide::command::NewSystem {
                        tenant: "studio".into(),
                        role: appliance::model::Role::RenderNode,
                    }),
                    tenant: None,
                    reservation: None,
                };
                let answer = client.call(&Request::order(compose, Meta::default()));
                assert!(matches!(answer, Ok(Ok(_))), "{answer:?}");
            }
            rounds <= 3
        },
    )
    .expect("the panel runs");
    let first = &recorded.0[0];
    assert!(first[0].starts_with("GPU 0/"), "{first:?}");
    assert_eq!(first[1], "OK 0 systems");
    assert!(
        (recorded.0.iter()).any(|f| f[0].starts_with("GPU 1/") && f[1] == "OK 1 system"),
        "the compose shows: {:?}",
        recorded.0
    );
    assert!(
        recorded.0.iter().any(|f| f[0].starts_with("NIC ")),
        "the pages cycle: {:?}",
        recorded.0
    );
}

/// The machine's actions at the console, on a service outside the image: the management port's
/// setting is journaled as made at the console and its application says why it was not applied
/// (the host's network is not the service's); the journal checks intact; admin's password is
/// reset (journaled as a hash, kept root-only, shown) and works; reboot and power off are
/// refused before anything is journaled, since this service cannot do them.
#[test]
fn the_network_the_journal_check_the_password_and_the_power_at_the_console() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path());
    let mut client = Client::connect_unix(running.socket_path()).expect("connect");
    let admin = Verb::CreateAccount {
        name: "admin".into(),
        role: appliance::model::AccountRole::Administrator,
        tenant: None,
        password: appliance::model::Password::Plain(appliance::model::Secret(
            "first-Password-1".into(),
        )),
        password_change_required: false,
    };
    let answer = client.call(&Request::order(admin, Meta::default()));
    assert!(matches!(answer, Ok(Ok(_))), "{answer:?}");
    let script = b"4711\n4711\n4711\n\
        network 10.0.2.20/24 10.0.2.2\nyes\n\
        network\n\
        network 10.0.2.20/24 10.0.3.1\n\
        verify\n\
        password show\n\
        password reset\nyes\n\
        password show\n\
        reboot\nyes\n\
        poweroff\nyes\n\
        quit\n";
    let out = session(dir.path(), script, Duration::from_secs(60));
    for expected in [
        "Set the management port to 10.0.2.20/24 gateway 10.0.2.2 (connections to the old address drop)? Type yes to confirm:",
        "management setting 10.0.2.20/24 gateway 10.0.2.2: not applied: this service runs outside the appliance's image",
        "network: gateway 10.0.3.1 is outside 10.0.2.0/24",
        "journal intact: ",
        "no password is kept for admin",
        "admin's new password: ",
        "refused (not_supported): this service runs outside the appliance's image (appliance serve): it cannot reboot the host",
        "refused (not_supported): this service runs inside another program: it cannot power off",
    ] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }
    let kept = std::fs::read_to_string(dir.path().join("admin-password")).expect("kept");
    let password = kept.trim();
    assert!(
        out.contains(&format!("admin's new password: {password}")),
        "{out}"
    );
    let core = running.core().expect("core");
    let state = core.state();
    let hash = &state.accounts["admin"].password_hash;
    assert!(appliance::api::auth::verify_password(hash, password));
    assert!(!appliance::api::auth::verify_password(
        hash,
        "first-Password-1"
    ));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("admin-password"))
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "root only: {mode:o}");
    assert_eq!(
        state.management_network.map(|n| n.to_string()).as_deref(),
        Some("10.0.2.20/24 gateway 10.0.2.2")
    );

    let mut kinds = Vec::new();
    let all = Request::query(Query::Events {
        after: 0,
        wait_ms: 0,
        limit: None,
    });
    let Ok(Ok(Reply::History(entries))) = client.call(&all) else {
        panic!("the events")
    };
    for entry in &entries {
        kinds.push(entry.kind.as_str());
        let text = serde_json::to_string(entry).expect("json");
        assert!(
            !text.contains(password),
            "the password is journaled: {text}"
        );
    }
    let set = entries
        .iter()
        .find(|e| e.kind == "management_network_set")
        .expect("the setting is journaled");
    assert_eq!(set.by.as_ref().map(|b| b.door), Some(Door::Console));
    assert!(kinds.contains(&"management_network_applied"), "{kinds:?}");
    assert!(
        !kinds.contains(&"power_requested"),
        "refused orders journal nothing"
    );
}

/// The directory at the console: its settings shown read only (without the bind password), and
/// the directory users it keeps a lockout or a key for.
#[test]
fn the_directory_is_shown_read_only_at_the_console() {
    use appliance::model::directory::{
        BindPassword, DirectoryKind, DirectorySettings, DirectoryUserChange, GroupMapping,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path());
    let mut client = Client::connect_unix(running.socket_path()).expect("connect");
    let ca = rcgen::generate_simple_self_signed(vec!["dir.studio.test".to_string()])
        .expect("certificate");
    let settings = DirectorySettings {
        kind: DirectoryKind::Ldap,
        uri: "ldaps://dir.studio.test".into(),
        starttls: false,
        allow_plain: false,
        ca_pem: ca.cert.pem(),
        bind_dn: "cn=appliance,dc=studio,dc=test".into(),
        bind_password: BindPassword::Plain(appliance::model::Secret("bind-Password-1".into())),
        base: "dc=studio,dc=test".into(),
        user_attribute: "uid".into(),
        groups_attribute: Some("memberOf".into()),
        group_name_attribute: "cn".into(),
        mappings: vec![GroupMapping {
            group: "appliance-admins".into(),
            role: appliance::model::AccountRole::Administrator,
            tenant: None,
        }],
        timeout_ms: 3000,
    };
    for verb in [
        Verb::SetDirectory {
            settings: Some(Box::new(settings)),
        },
        Verb::ChangeDirectoryUser {
            name: "ana".into(),
            change: DirectoryUserChange::Locked {
                until_ms: Some(appliance::time::now_ms() + 600_000),
            },
        },
    ] {
        let answer = client.call(&Request::order(verb, Meta::default()));
        assert!(matches!(answer, Ok(Ok(_))), "{answer:?}");
    }
    let out = session(
        dir.path(),
        b"4711\n4711\n4711\ndirectory\ndirectory off\nquit\n",
        Duration::from_secs(60),
    );
    for expected in [
        "directory ldap at ldaps://dir.studio.test",
        "groups by the user's memberOf named by cn",
        "appliance-admins  Administrator  -",
        "DIRECTORY USER  LOCKED UNTIL",
    ] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }
    assert!(out.contains("ana "), "{out}");
    assert!(!out.contains("bind-Password-1"), "{out}");
    assert!(
        running.core().expect("core").state().directory.is_some(),
        "the console changes nothing of it"
    );
}
