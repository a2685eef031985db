//! The full-screen console, driven through tmux (send-keys, capture-pane) as a person at a
//! terminal would, against the service on the simulated fabric: the PIN set at the first start,
//! a system created and a GPU composed from the keys, seen on the status screen and journaled as
//! made at the console; five wrong PINs lock it; a 40x10 terminal and a resize keep it
//! readable; noise on the line harms neither the console nor the service.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use appliance::api::control::Client;
use appliance::api::{HistoryOf, Meta, Query, Reply, Request};
use appliance::decide::command::{NewSystem, Selection, Verb};
use appliance::model::{Door, Role};
use appliance::serve::{self, FabricChoice, ServeOptions};

/// One tmux server of this test's own (its socket name), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, dir: &Path, columns: u16, rows: u16) -> Tmux {
        let tmux = Tmux {
            socket: format!("appliance-console-{}-{name}", std::process::id()),
        };
        let console = format!(
            "{} console --data-dir {} --lockout-s 60",
            env!("CARGO_BIN_EXE_appliance"),
            dir.display()
        );
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "c",
            "-x",
            &columns.to_string(),
            "-y",
            &rows.to_string(),
            &console,
        ]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs (tests/run-all.sh installs it)");
        assert!(output.status.success(), "tmux {args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Types `text` literally, then Enter when `enter`.
    fn type_text(&self, text: &str, enter: bool) {
        if !text.is_empty() {
            self.run(&["send-keys", "-t", "c", "-l", text]);
        }
        if enter {
            self.run(&["send-keys", "-t", "c", "Enter"]);
        }
    }

    fn key(&self, key: &str) {
        self.run(&["send-keys", "-t", "c", key]);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "c"])
    }

    /// Waits up to 15 s for the screen to show `text`; the screen.
    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {text:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

fn start(dir: &Path) -> serve::Running {
    let running = serve::start(ServeOptions {
        data_dir: dir.to_path_buf(),
        fabric: FabricChoice::Sim {
            topology: None,
            seed: 9,
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

#[test]
fn the_pin_then_a_gpu_composed_from_the_keys_and_journaled_as_made_at_the_console() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path());
    let tmux = Tmux::start("compose", dir.path(), 80, 24);
    tmux.wait_for("New PIN:");
    tmux.type_text("2580", true);
    tmux.wait_for("The same PIN again");
    tmux.type_text("2580", true);
    tmux.wait_for("PIN set.");
    let screen = tmux.wait_for("c/F2 compose");
    assert!(screen.contains("journal head"), "{screen}");
    tmux.key("n");
    tmux.type_text("ws1 studio workstation", true);
    tmux.wait_for("systems: ws1 (workstation):");
    tmux.key("F2");
    tmux.wait_for("> compose _");
    tmux.type_text("ws1 gpu-0", true);
    let screen = tmux.wait_for("systems: ws1 (workstation): gpu-0");
    assert!(screen.contains("gpu 1/"), "the pools count it:\n{screen}");
    // A destructive one asks first; n cancels.
    tmux.key("d");
    tmux.type_text("ws1 gpu-0", true);
    tmux.wait_for("Release gpu-0 from ws1? (y/n)");
    tmux.key("n");
    let screen = tmux.wait_for("Cancelled.");
    assert!(screen.contains("ws1 (workstation): gpu-0"), "{screen}");
    // Every line fits the terminal.
    for line in screen.lines() {
        assert!(line.chars().count() <= 80, "{line:?}");
    }

    let mut client = Client::connect_unix(running.socket_path()).expect("connect");
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
    // The compose shows in the latest events, from the journal's live tail.
    assert!(screen.contains("compose"), "{screen}");
}

#[test]
fn five_wrong_pins_lock_a_small_terminal_stays_readable_and_noise_harms_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path());
    appliance::console::pin::PinStore::new(dir.path())
        .set("1357")
        .expect("set");
    let tmux = Tmux::start("lock", dir.path(), 40, 10);
    let screen = tmux.wait_for("PIN:");
    for line in screen.lines() {
        assert!(line.chars().count() <= 40, "{line:?}");
    }
    for _ in 0..4 {
        tmux.type_text("0000", true);
    }
    tmux.wait_for("1 tries left");
    tmux.type_text("0000", true);
    tmux.wait_for("locked for 60 s");
    tmux.type_text("1357", true);
    tmux.wait_for("locked for");
    assert!(!tmux.screen().contains("c/F2"), "still locked");

    // A bigger terminal, once unlocked (the PIN set anew ends the lockout), then smaller again.
    appliance::console::pin::PinStore::new(dir.path())
        .set("1357")
        .expect("set");
    tmux.type_text("1357", true);
    tmux.wait_for("Unlocked.");
    tmux.run(&["resize-window", "-t", "c", "-x", "80", "-y", "24"]);
    tmux.wait_for("c/F2 compose  d/F3 decompose");
    tmux.run(&["resize-window", "-t", "c", "-x", "40", "-y", "10"]);
    let screen = tmux.wait_for("c/F2 compose");
    assert_eq!(screen.lines().count(), 10, "{screen}");
    for line in screen.lines() {
        assert!(line.chars().count() <= 40, "{line:?}");
    }

    // Noise: escape sequences cut in half, bytes that are not UTF-8, a flood of keys.
    for chunk in ["1b 5b 31 3b", "1b 1b 4f", "ff fe 00 c3", "1b 5b 32"] {
        let mut args = vec!["send-keys", "-t", "c", "-H"];
        args.extend(chunk.split(' '));
        tmux.run(&args);
    }
    let flood: String = (0..2000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    tmux.type_text(&flood, false);
    tmux.key("Escape");
    tmux.key("Escape");
    tmux.wait_for("c/F2 compose");
    let mut client = Client::connect_unix(running.socket_path()).expect("connect");
    let compose = Verb::Compose {
        system: "rn1".into(),
        selection: Selection::Specific(vec!["gpu-1".into()]),
        create: Some(NewSystem {
            tenant: "studio".into(),
            role: Role::RenderNode,
        }),
        tenant: None,
        reservation: None,
    };
    let answer = client.call(&Request::order(compose, Meta::default()));
    assert!(matches!(answer, Ok(Ok(Reply::Accepted(_)))), "{answer:?}");
    tmux.wait_for("rn1 (render_node): gpu-1");
}
