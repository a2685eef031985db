//! The full-screen console: ratatui over crossterm on the terminal the console runs on (the
//! serial line, under PID 1). One status screen (the appliance at a glance, the systems, the
//! active alarms, the latest events from the journal's live tail, the last command's answer)
//! and the actions as keys: each opens the command line pre-filled with its command (the same
//! commands as line mode, `commands.rs`), and a destructive one asks y/n first. Keys are plain
//! letters and function keys both (serial terminals often lack F-keys); Esc goes back; no
//! colour is needed (emphasis is bold and reverse video).
//!
//! The terminal's size: a serial line has none the kernel knows (crossterm's `size()` is 0x0),
//! so the console moves the cursor to the far corner and asks where it is (a cursor-position
//! report), falling back to 80x24; it asks again on Ctrl-L and redraws on a resize event.
//!
//! [`App`] is the screen's state and its key handling, without a terminal: `App::key` turns
//! a key into an [`Effect`] the loop carries out, and [`draw`] renders `App` on any backend
//! (the tests render on ratatui's `TestBackend` at 80x24 and 40x10).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph};
use ratatui::{Frame, Terminal, TerminalOptions, Viewport};

use super::commands::{Command, HELP};
use super::pin::PinStore;
use super::{summary, Service};
use crate::api::views::{AlarmView, HistoryEntryView, SystemView};
use crate::api::Reply;
use crate::time::now_ms;

/// The size used when the terminal does not say.
pub const FALLBACK_SIZE: (u16, u16) = (80, 24);
/// Events the screen keeps.
const EVENTS_KEPT: usize = 64;
/// The keys of the status screen, shown on it.
/// Help first: on a small terminal the line is cut, and `?` lists every command.
const KEYS: &str = "?/F1 help  c/F2 compose  d/F3 decompose  f/F4 failover  s/F5 service  \
    n new system  t tenant  x clear alarm  w/F6 network  p/F7 password  v/F8 verify journal  \
    r reboot  o power off  : command  l/F10 lock  ^L redraw  q quit";

/// What the screen is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// No PIN is set: the first entry, then the same again (`first` holds the first).
    SetPin {
        first: Option<String>,
        entry: String,
    },
    /// Locked: only the summary shows, and the PIN is asked.
    Locked {
        entry: String,
    },
    Status,
    /// The command line, with what is typed so far.
    Prompt {
        text: String,
    },
    /// A destructive command waits for y or n.
    Confirm {
        command: Command,
        question: String,
    },
}

/// What the loop does after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    None,
    /// Check this PIN (in Locked).
    CheckPin(String),
    /// Set this PIN (in SetPin, both entries agreed).
    SetPin(String),
    /// Send the command's request.
    Run(Command),
    /// Ask the terminal its size again and redraw everything.
    Redraw,
    Quit,
}

/// The screen's state.
#[derive(Debug)]
pub struct App {
    pub mode: Mode,
    /// The summary lines (`console::summary`).
    pub summary: Vec<String>,
    pub systems: Vec<SystemView>,
    pub alarms: Vec<AlarmView>,
    /// The latest events, oldest first.
    pub events: VecDeque<HistoryEntryView>,
    /// The free devices, offered on the command line.
    pub free: Vec<String>,
    /// The last answer or note, as lines.
    pub answer: Vec<String>,
}

impl App {
    pub fn new(pin_set: bool) -> App {
        App {
            mode: match pin_set {
                true => Mode::Locked {
                    entry: String::new(),
                },
                false => Mode::SetPin {
                    first: None,
                    entry: String::new(),
                },
            },
            summary: Vec::new(),
            systems: Vec::new(),
            alarms: Vec::new(),
            events: VecDeque::new(),
            free: Vec::new(),
            answer: vec!["Enter the PIN (digits), then Enter.".into()],
        }
    }

    /// Sets the answer shown under the status.
    pub fn say(&mut self, text: &str) {
        self.answer = text.lines().map(str::to_string).collect();
    }

    /// Handles one key press.
    pub fn key(&mut self, key: KeyEvent) -> Effect {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('l') {
            return Effect::Redraw;
        }
        match &mut self.mode {
            Mode::SetPin { first, entry } => match key.code {
                KeyCode::Esc => {
                    *first = None;
                    entry.clear();
                    Effect::None
                }
                KeyCode::Enter => {
                    let typed = std::mem::take(entry);
                    match first.take() {
                        None if super::pin::well_formed(&typed) => {
                            *first = Some(typed);
                            self.say("The same PIN again, then Enter.");
                            Effect::None
                        }
                        None => {
                            self.say("A PIN is 4 to 12 digits.");
                            Effect::None
                        }
                        Some(earlier) if earlier == typed => Effect::SetPin(typed),
                        Some(_) => {
                            self.say("The two PINs differ; the first again.");
                            Effect::None
                        }
                    }
                }
                code => edit_pin(entry, code),
            },
            Mode::Locked { entry } => match key.code {
                KeyCode::Esc => {
                    entry.clear();
                    Effect::None
                }
                KeyCode::Enter => Effect::CheckPin(std::mem::take(entry)),
                code => edit_pin(entry, code),
            },
            Mode::Status => {
                let prefill = match key.code {
                    KeyCode::Char('c') | KeyCode::F(2) => "compose ",
                    KeyCode::Char('d') | KeyCode::F(3) => "decompose ",
                    KeyCode::Char('f') | KeyCode::F(4) => "failover ",
                    KeyCode::Char('s') | KeyCode::F(5) => "service ",
                    KeyCode::Char('n') => "create ",
                    KeyCode::Char('t') => "tenant ",
                    KeyCode::Char('x') => "clear ",
                    KeyCode::Char('w') | KeyCode::F(6) => "network ",
                    KeyCode::Char('p') | KeyCode::F(7) => "password ",
                    KeyCode::Char('v') | KeyCode::F(8) => "verify",
                    KeyCode::Char('r') => "reboot",
                    KeyCode::Char('o') => "poweroff",
                    KeyCode::Char(':') => "",
                    KeyCode::Char('?') | KeyCode::F(1) => {
                        self.answer = HELP.iter().map(|l| l.to_string()).collect();
                        return Effect::None;
                    }
                    KeyCode::Char('l') | KeyCode::F(10) => {
                        self.lock("Locked.");
                        return Effect::None;
                    }
                    KeyCode::Char('q') => return Effect::Quit,
                    _ => return Effect::None,
                };
                self.mode = Mode::Prompt {
                    text: prefill.to_string(),
                };
                Effect::None
            }
            Mode::Prompt { text } => match key.code {
                KeyCode::Char(c)
                    if !ctrl && text.len() < 200 && (c == ' ' || c.is_ascii_graphic()) =>
                {
                    text.push(c);
                    Effect::None
                }
                KeyCode::Backspace => {
                    text.pop();
                    Effect::None
                }
                KeyCode::Tab => {
                    complete_device(text, &self.free);
                    Effect::None
                }
                KeyCode::Esc => {
                    self.mode = Mode::Status;
                    Effect::None
                }
                KeyCode::Enter => {
                    let typed = std::mem::take(text);
                    self.mode = Mode::Status;
                    match Command::parse(&typed) {
                        Ok(None) => Effect::None,
                        Ok(Some(Command::Lock)) => {
                            self.lock("Locked.");
                            Effect::None
                        }
                        Ok(Some(Command::Quit)) => Effect::Quit,
                        Ok(Some(command)) => match command.confirmation() {
                            Some(question) => {
                                self.mode = Mode::Confirm { command, question };
                                Effect::None
                            }
                            None => Effect::Run(command),
                        },
                        Err(error) => {
                            self.say(&error);
                            Effect::None
                        }
                    }
                }
                _ => Effect::None,
            },
            Mode::Confirm { command, .. } => match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => {
                    let command = command.clone();
                    self.mode = Mode::Status;
                    Effect::Run(command)
                }
                KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc => {
                    self.mode = Mode::Status;
                    self.say("Cancelled.");
                    Effect::None
                }
                _ => Effect::None,
            },
        }
    }

    /// Locks the screen, saying `why`.
    pub fn lock(&mut self, why: &str) {
        self.mode = Mode::Locked {
            entry: String::new(),
        };
        self.say(why);
    }

    fn unlocked(&self) -> bool {
        matches!(
            self.mode,
            Mode::Status | Mode::Prompt { .. } | Mode::Confirm { .. }
        )
    }
}

/// Renders `app` on `frame`.
pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    let title = app
        .summary
        .first()
        .cloned()
        .unwrap_or_else(|| "appliance console".into());
    let outer =
        Block::bordered().title(Line::from(title).style(Style::new().add_modifier(Modifier::BOLD)));
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    let width = usize::from(inner.width.max(1));
    let (entry_text, key_text) = entry_and_keys(app);
    // The key line wraps onto as many rows as it needs, up to a third of the screen.
    let key_lines = wrap(&key_text, width);
    let key_rows = key_lines
        .len()
        .clamp(1, usize::from(inner.height / 3).max(1));
    let [body, entry, keys] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(u16::try_from(key_rows).unwrap_or(1)),
    ])
    .areas(inner);
    let wrapped = |text: &str| wrap(text, width).into_iter().map(Line::from);
    let mut lines: Vec<Line> = app
        .summary
        .iter()
        .skip(1)
        .flat_map(|l| wrapped(l))
        .collect();
    if app.unlocked() {
        let systems: Vec<String> = app
            .systems
            .iter()
            .map(|s| {
                let devices: Vec<&str> = s.devices.iter().map(|d| d.id.as_str()).collect();
                format!("{} ({}): {}", s.name, s.role, devices.join(" "))
            })
            .collect();
        lines.extend(wrapped(&match systems.is_empty() {
            true => "systems: none".to_string(),
            false => format!("systems: {}", systems.join("; ")),
        }));
        lines.push(Line::from("latest events:").style(Style::new().add_modifier(Modifier::BOLD)));
        let answer_rows: usize = app
            .answer
            .iter()
            .take(6)
            .map(|l| wrap(l, width).len())
            .sum();
        let room = usize::from(body.height).saturating_sub(lines.len() + answer_rows);
        // The newest events that fit, whole, oldest of them first.
        let mut events: Vec<Vec<String>> = Vec::new();
        let mut used = 0;
        for event in app.events.iter().rev() {
            let time = event.time.get(11..19).unwrap_or(&event.time);
            let rows = wrap(
                &format!("{time} #{} {}", event.sequence, event.summary),
                width,
            );
            used += rows.len();
            if used > room {
                break;
            }
            events.push(rows);
        }
        lines.extend(events.into_iter().rev().flatten().map(Line::from));
    }
    for line in app.answer.iter().take(6) {
        let bold = Style::new().add_modifier(Modifier::BOLD);
        lines.extend(wrapped(line).map(|l| l.style(bold)));
    }
    // What does not fit is cut at the top of the events, never the answer.
    let overflow = lines.len().saturating_sub(usize::from(body.height));
    let shown: Vec<Line> = lines.into_iter().skip(overflow).collect();
    frame.render_widget(Paragraph::new(shown), body);
    frame.render_widget(
        Paragraph::new(entry_text).style(Style::new().add_modifier(Modifier::REVERSED)),
        entry,
    );
    let keys_shown: Vec<Line> = key_lines
        .into_iter()
        .take(key_rows)
        .map(Line::from)
        .collect();
    frame.render_widget(Paragraph::new(keys_shown), keys);
}

/// The entry line and the keys line of the screen's mode.
fn entry_and_keys(app: &App) -> (String, String) {
    match &app.mode {
        Mode::SetPin { first: None, entry } => (
            format!("New PIN: {}", mask(entry)),
            "digits, Enter; Esc clears".to_string(),
        ),
        Mode::SetPin { entry, .. } => (
            format!("Again: {}", mask(entry)),
            "digits, Enter; Esc starts over".to_string(),
        ),
        Mode::Locked { entry } => (
            format!("PIN: {}", mask(entry)),
            "digits, Enter; Esc clears".to_string(),
        ),
        Mode::Status => (String::new(), KEYS.to_string()),
        Mode::Prompt { text } => (
            format!("> {text}_"),
            match app.free.is_empty() {
                true => "Enter runs, Esc goes back; no free devices".to_string(),
                false => format!("Enter runs, Esc back; free: {}", app.free.join(" ")),
            },
        ),
        Mode::Confirm { question, .. } => (
            format!("{question} (y/n)"),
            "y confirms, n or Esc cancels".to_string(),
        ),
    }
}

/// `text` cut into lines of at most `width` characters, at spaces where it can be (a word
/// longer than a line is cut where the line ends). Never empty: a blank text is one blank line.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word = word.to_string();
        loop {
            let used = line.chars().count();
            let needed = word.chars().count() + usize::from(used > 0);
            if used + needed <= width {
                if used > 0 {
                    line.push(' ');
                }
                line.push_str(&word);
                break;
            }
            if used > 0 {
                lines.push(std::mem::take(&mut line));
                continue;
            }
            let cut: String = word.chars().take(width).collect();
            word = word.chars().skip(width).collect();
            lines.push(cut);
            if word.is_empty() {
                break;
            }
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Tab on the command line: the last word becomes the next free device whose name starts with
/// it (or, after a full name or a space, the next free device after it, round the list).
fn complete_device(text: &mut String, free: &[String]) {
    if free.is_empty() {
        return;
    }
    let start = text.rfind(' ').map_or(0, |i| i + 1);
    let word = text[start..].to_string();
    let next = match free.iter().position(|d| *d == word) {
        Some(i) => free[(i + 1) % free.len()].clone(),
        None => match free.iter().find(|d| d.starts_with(&word)) {
            Some(found) => found.clone(),
            None => return,
        },
    };
    text.truncate(start);
    text.push_str(&next);
}

/// A digit or Backspace typed into a PIN being entered (at most 12 digits); other keys do
/// nothing.
fn edit_pin(entry: &mut String, code: KeyCode) -> Effect {
    match code {
        KeyCode::Char(c) if c.is_ascii_digit() && entry.len() < 12 => entry.push(c),
        KeyCode::Backspace => {
            entry.pop();
        }
        _ => {}
    }
    Effect::None
}

fn mask(entry: &str) -> String {
    "*".repeat(entry.len())
}

/// Asks the terminal its size: crossterm's (the kernel's) when it knows one, else where the
/// cursor lands when sent to the far corner, else [`FALLBACK_SIZE`].
pub fn terminal_size(out: &mut impl Write) -> (u16, u16) {
    if let Ok((columns, rows)) = terminal::size() {
        if columns > 0 && rows > 0 {
            return (columns, rows);
        }
    }
    if execute!(out, cursor::MoveTo(998, 998)).is_ok() {
        if let Ok((column, row)) = cursor::position() {
            if column > 0 && row > 0 {
                return (column + 1, row + 1);
            }
        }
    }
    FALLBACK_SIZE
}

/// Runs the full screen on this process's terminal until `q` (PID 1 starts it again).
pub fn run(mut service: Service, pins: PinStore, idle: Duration) -> std::io::Result<()> {
    terminal::enable_raw_mode()?;
    let mut out = std::io::stdout();
    let _ = execute!(out, terminal::EnterAlternateScreen, cursor::Hide);
    let result = run_raw(&mut service, &pins, idle);
    let _ = execute!(out, terminal::LeaveAlternateScreen, cursor::Show);
    let _ = terminal::disable_raw_mode();
    result
}

fn run_raw(service: &mut Service, pins: &PinStore, idle: Duration) -> std::io::Result<()> {
    let (columns, rows) = terminal_size(&mut std::io::stdout());
    let mut screen = open_screen(columns, rows)?;
    let mut app = App::new(pins.is_set());
    refresh(&mut app, service, true);
    let tail = follow(service.again());
    let mut last_key = Instant::now();
    // Drawn only after something changed: on a serial line even an empty redraw costs bytes.
    let mut dirty = true;
    loop {
        if dirty {
            screen.draw(|frame| draw(frame, &app))?;
            dirty = false;
        }
        if event::poll(Duration::from_millis(250))? {
            dirty = true;
            match event::read()? {
                Event::Key(key) if key.kind == KeyEventKind::Press => {
                    last_key = Instant::now();
                    match app.key(key) {
                        Effect::None => {}
                        Effect::Quit => return Ok(()),
                        Effect::Redraw => {
                            let (columns, rows) = terminal_size(&mut std::io::stdout());
                            screen = open_screen(columns, rows)?;
                        }
                        Effect::CheckPin(pin) => match pins.check(&pin, now_ms()) {
                            Ok(()) => {
                                app.mode = Mode::Status;
                                app.say("Unlocked. ? lists the commands.");
                                refresh(&mut app, service, false);
                            }
                            Err(error) => app.say(&error.to_string()),
                        },
                        Effect::SetPin(pin) => match pins.set(&pin) {
                            Ok(()) => {
                                app.mode = Mode::Status;
                                app.say("PIN set. ? lists the commands.");
                                refresh(&mut app, service, false);
                            }
                            Err(error) => app.say(&error.to_string()),
                        },
                        Effect::Run(command) => {
                            let text = service.answer(&command);
                            app.say(&text);
                            refresh(&mut app, service, false);
                        }
                    }
                }
                Event::Resize(columns, rows) => screen = open_screen(columns, rows)?,
                _ => {}
            }
        }
        let mut changed = false;
        while let Ok(entry) = tail.try_recv() {
            app.events.push_back(entry);
            changed = true;
        }
        while app.events.len() > EVENTS_KEPT {
            app.events.pop_front();
        }
        if changed {
            refresh(&mut app, service, false);
            dirty = true;
        }
        if app.unlocked() && last_key.elapsed() >= idle {
            app.lock("Locked after idle time.");
            dirty = true;
        }
    }
}

/// A cleared screen of `columns` x `rows`, drawn whole at its first draw. (Not ratatui's own
/// clear, which asks the terminal where its cursor is: a serial line may never answer.)
fn open_screen(
    columns: u16,
    rows: u16,
) -> std::io::Result<Terminal<ratatui::backend::CrosstermBackend<std::io::Stdout>>> {
    let mut out = std::io::stdout();
    execute!(out, terminal::Clear(terminal::ClearType::All))?;
    let backend = ratatui::backend::CrosstermBackend::new(out);
    let options = TerminalOptions {
        viewport: Viewport::Fixed(Rect::new(0, 0, columns, rows)),
    };
    Terminal::with_options(backend, options)
}

/// Reads the facts the screen shows again (the latest events too, when `events`).
fn refresh(app: &mut App, service: &mut Service, events: bool) {
    match (service.status(), service.alarms()) {
        (Ok(status), Ok(alarms)) => {
            app.summary = summary(&status, &alarms);
            app.alarms = alarms;
        }
        (Err(e), _) | (_, Err(e)) => {
            app.summary = vec![format!("the service does not answer: {e}")];
        }
    }
    if let Ok(Ok(Reply::Systems(systems))) =
        service.call(&crate::api::Request::query(crate::api::Query::Systems))
    {
        app.systems = systems;
    }
    if let Ok(Ok(Reply::Devices(devices))) =
        service.call(&crate::api::Request::query(crate::api::Query::Devices))
    {
        app.free = devices
            .iter()
            .filter(|d| d.state == crate::api::views::DeviceState::Free)
            .map(|d| d.id.to_string())
            .collect();
    }
    if events {
        if let Ok(entries) = service.latest_events(EVENTS_KEPT) {
            app.events = entries.into();
        }
    }
}

/// Follows the journal's live tail on a connection of its own, from its head now; the events
/// come out of the receiver as they are journaled.
fn follow(mut service: Service) -> mpsc::Receiver<HistoryEntryView> {
    let (events, receiver) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("console-tail".into())
        .spawn(move || {
            let mut after = None;
            loop {
                let Some(from) = after else {
                    match service.status() {
                        Ok(status) => after = Some(status.journal_head),
                        Err(_) => std::thread::sleep(Duration::from_secs(1)),
                    }
                    continue;
                };
                match service.events_after(from, Duration::from_secs(10)) {
                    Ok(entries) => {
                        for entry in entries {
                            after = Some(entry.sequence);
                            if events.send(entry).is_err() {
                                return;
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_secs(1)),
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "the console's live tail did not start");
    }
    receiver
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wrap_at_spaces_and_long_words_are_cut() {
        assert_eq!(wrap("a bc def", 4), ["a bc", "def"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 10), [""]);
        assert_eq!(wrap("x yyyyyy", 3), ["x", "yyy", "yyy"]);
        for line in wrap("compose ws1 gpu:2:24 nvme:1:2TB and more words", 7) {
            assert!(line.chars().count() <= 7, "{line:?}");
        }
    }

    #[test]
    fn tab_picks_the_free_devices_in_turn() {
        let free = vec!["gpu-0".to_string(), "gpu-1".into(), "nvme-0".into()];
        let mut text = "compose ws1 ".to_string();
        complete_device(&mut text, &free);
        assert_eq!(text, "compose ws1 gpu-0");
        complete_device(&mut text, &free);
        assert_eq!(text, "compose ws1 gpu-1");
        let mut text = "compose ws1 gpu-0 nv".to_string();
        complete_device(&mut text, &free);
        assert_eq!(text, "compose ws1 gpu-0 nvme-0");
        complete_device(&mut text, &free);
        assert_eq!(text, "compose ws1 gpu-0 gpu-0", "round the list");
        let mut text = "compose ws1 hba".to_string();
        complete_device(&mut text, &free);
        assert_eq!(text, "compose ws1 hba", "nothing starts so: unchanged");
    }
}
