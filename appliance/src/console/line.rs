//! Line mode: one command per line in, plain lines out, for dumb terminals and scripts; what the
//! console falls back to when the terminal cannot do full screen. The same commands, the same
//! confirmations (a question, then `yes`), the same PIN as the full screen.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use super::commands::{Command, HELP};
use super::pin::{PinError, PinStore};
use super::{summary, Service};
use crate::time::now_ms;

/// What a line-mode session needs.
#[derive(Debug)]
pub struct LineMode<R, W> {
    pub input: R,
    pub output: W,
    pub service: Service,
    pub pins: PinStore,
    /// Idle time after which the console locks.
    pub idle: Duration,
}

/// Why a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// `quit`, or the input ended.
    Quit,
}

impl<R: BufRead, W: Write> LineMode<R, W> {
    /// Runs until `quit` or the end of the input.
    pub fn run(mut self) -> std::io::Result<Ended> {
        let banner = match self.service.status() {
            Ok(status) => format!(
                "appliance {} console (line mode); `help` lists the commands",
                status.identity.appliance_id
            ),
            Err(e) => format!("appliance console (line mode): the service does not answer: {e}"),
        };
        self.say(&banner)?;
        if !self.pins.is_set() && !self.set_pin()? {
            return Ok(Ended::Quit);
        }
        if !self.unlock()? {
            return Ok(Ended::Quit);
        }
        let mut active = Instant::now();
        loop {
            self.prompt("> ")?;
            let Some(line) = self.read_line()? else {
                return Ok(Ended::Quit);
            };
            if active.elapsed() >= self.idle {
                self.say(&format!(
                    "locked after {} s idle; that line was not run",
                    self.idle.as_secs()
                ))?;
                if !self.unlock()? {
                    return Ok(Ended::Quit);
                }
                active = Instant::now();
                continue;
            }
            active = Instant::now();
            let command = match Command::parse(&line) {
                Ok(Some(command)) => command,
                Ok(None) => continue,
                Err(error) => {
                    self.say(&error)?;
                    continue;
                }
            };
            if let Some(question) = command.confirmation() {
                self.prompt(&format!("{question} Type yes to confirm: "))?;
                let answer = self.read_line()?;
                if answer.as_deref().map(str::trim) != Some("yes") {
                    self.say("cancelled")?;
                    continue;
                }
            }
            match command {
                Command::Quit => return Ok(Ended::Quit),
                Command::Lock => {
                    self.say("locked")?;
                    if !self.unlock()? {
                        return Ok(Ended::Quit);
                    }
                }
                Command::Help => {
                    for line in HELP {
                        self.say(line)?;
                    }
                }
                other => {
                    let text = self.service.answer(&other);
                    self.write(&text)?;
                }
            }
        }
    }

    /// Asks for a new PIN twice until both agree and it is well formed; false if the input
    /// ended first.
    fn set_pin(&mut self) -> std::io::Result<bool> {
        loop {
            self.prompt("No console PIN is set. New PIN (4 to 12 digits): ")?;
            let Some(first) = self.read_line()? else {
                return Ok(false);
            };
            self.prompt("The same PIN again: ")?;
            let Some(second) = self.read_line()? else {
                return Ok(false);
            };
            if first.trim() != second.trim() {
                self.say("the two PINs differ; again")?;
                continue;
            }
            match self.pins.set(first.trim()) {
                Ok(()) => {
                    self.say("PIN set")?;
                    return Ok(true);
                }
                Err(e) => self.say(&e.to_string())?,
            }
        }
    }

    /// Shows the status summary and asks for the PIN until it is right; false if the input
    /// ended first.
    fn unlock(&mut self) -> std::io::Result<bool> {
        self.show_summary()?;
        loop {
            self.prompt("PIN: ")?;
            let Some(pin) = self.read_line()? else {
                return Ok(false);
            };
            match self.pins.check(pin.trim(), now_ms()) {
                Ok(()) => {
                    self.say("unlocked")?;
                    return Ok(true);
                }
                Err(error @ PinError::Locked { .. }) => {
                    self.say(&error.to_string())?;
                    self.show_summary()?;
                }
                Err(error) => self.say(&error.to_string())?,
            }
        }
    }

    fn show_summary(&mut self) -> std::io::Result<()> {
        let lines = match (self.service.status(), self.service.alarms()) {
            (Ok(status), Ok(alarms)) => summary(&status, &alarms),
            (Err(e), _) | (_, Err(e)) => vec![format!("the service does not answer: {e}")],
        };
        for line in lines {
            self.say(&line)?;
        }
        Ok(())
    }

    /// The next line, bytes that are not UTF-8 shown as U+FFFD (a line of noise is an unknown
    /// command, not the end of the session); at most 4 KiB of it, so a flood is cut, not held.
    fn read_line(&mut self) -> std::io::Result<Option<String>> {
        let mut line = Vec::new();
        let read = std::io::Read::take(&mut self.input, 4096).read_until(b'\n', &mut line)?;
        Ok((read > 0).then(|| String::from_utf8_lossy(&line).into_owned()))
    }

    fn prompt(&mut self, text: &str) -> std::io::Result<()> {
        self.output.write_all(text.as_bytes())?;
        self.output.flush()
    }

    fn say(&mut self, line: &str) -> std::io::Result<()> {
        self.output.write_all(line.as_bytes())?;
        self.output.write_all(b"\n")?;
        self.output.flush()
    }

    fn write(&mut self, text: &str) -> std::io::Result<()> {
        self.output.write_all(text.as_bytes())?;
        self.output.flush()
    }
}
