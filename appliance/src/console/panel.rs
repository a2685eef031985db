//! The front panel: a 2-line by 20-character summary of the appliance, such as
//!
//! ```text
//! GPU 1/4 NVMe 2/6
//! ALARM nvme-3 SMART
//! ```
//!
//! [`PanelFacts`] is what the panel needs, gathered from the service once per state change
//! ([`PanelFacts::of`], which allocates); [`render`] turns the facts and a frame number into the
//! two lines with heapless strings, without allocating, so the display can be refreshed and its
//! pages cycled (the pools two kinds a page, the alarms one a page) as often as wanted.
//! [`PanelDisplay`] is where the lines go: [`SerialPanel`] writes them to a character display
//! on a serial line (the QEMU bench's second serial port, which it writes to a file).

use std::io::Write;

use crate::api::views::{AlarmView, StatusView};
use crate::model::Severity;

/// Characters a line holds.
pub const COLUMNS: usize = 20;
/// Alarms the panel cycles through (the oldest first); more are counted, not shown.
pub const ALARMS_MAX: usize = 8;

/// One line of the panel.
pub type Line = heapless::String<COLUMNS>;

/// The pools in panel order, with the label the panel prints.
const KINDS: [(&str, &str); 4] = [
    ("gpu", "GPU"),
    ("nvme", "NVMe"),
    ("nic", "NIC"),
    ("hba", "HBA"),
];

/// One pool: (label, composed, total).
pub type PoolLine = (&'static str, u32, u32);

/// An alarm as the panel shows it: its device and a word for the fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanelAlarm {
    pub critical: bool,
    pub device: heapless::String<COLUMNS>,
    pub what: &'static str,
}

/// What the panel shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PanelFacts {
    /// The pools that have devices, in panel order.
    pub pools: heapless::Vec<PoolLine, 4>,
    pub systems: u32,
    pub alarms: heapless::Vec<PanelAlarm, ALARMS_MAX>,
    /// Active alarms in all (more than `alarms` holds when there are many).
    pub alarms_total: u32,
}

impl PanelFacts {
    /// The facts of the service's status and active alarms.
    pub fn of(status: &StatusView, alarms: &[AlarmView]) -> PanelFacts {
        let mut facts = PanelFacts {
            systems: clamp(status.systems),
            alarms_total: clamp(alarms.len() as u64),
            ..PanelFacts::default()
        };
        for (kind, label) in KINDS {
            if let Some(pool) = status.pools.get(kind).filter(|p| p.total > 0) {
                let _ = facts
                    .pools
                    .push((label, clamp(pool.composed), clamp(pool.total)));
            }
        }
        // Critical ones first, each group oldest first.
        let ordered = (alarms.iter().filter(|a| a.severity == Severity::Critical))
            .chain(alarms.iter().filter(|a| a.severity != Severity::Critical));
        for alarm in ordered.take(ALARMS_MAX) {
            let mut device = heapless::String::new();
            push_fitting(&mut device, alarm.device.as_str());
            let _ = facts.alarms.push(PanelAlarm {
                critical: alarm.severity == Severity::Critical,
                device,
                what: fault_word(&alarm.message),
            });
        }
        facts
    }
}

fn clamp(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A short word for an alarm's message, as the monitor words them.
pub fn fault_word(message: &str) -> &'static str {
    const WORDS: [(&str, &str); 9] = [
        ("NVMe SMART", "SMART"),
        ("NVMe media errors", "MEDIA ERR"),
        ("NVMe reads fail", "READS"),
        ("PCIe uncorrectable", "PCIe AER"),
        ("removed", "REMOVED"),
        ("fabric port", "PORT DOWN"),
        ("link down", "LINK DOWN"),
        ("md failed", "MIRROR"),
        ("failed out of", "MIRROR"),
    ];
    WORDS
        .iter()
        .find(|(start, _)| message.starts_with(start) || message.contains(start))
        .map_or("FAULT", |(_, word)| word)
}

/// Appends what of `text` fits in `line` (ASCII only; anything else is shown as `?`).
fn push_fitting(line: &mut Line, text: &str) {
    for c in text.chars() {
        let c = if c.is_ascii_graphic() || c == ' ' {
            c
        } else {
            '?'
        };
        if line.push(c).is_err() {
            return;
        }
    }
}

/// Appends a number.
fn push_number(line: &mut Line, n: u32) {
    let mut digits = [0u8; 10];
    let mut len = 0;
    let mut rest = n;
    loop {
        digits[len] = b'0' + (rest % 10) as u8;
        len += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for &digit in digits[..len].iter().rev() {
        if line.push(char::from(digit)).is_err() {
            return;
        }
    }
}

/// How many pages the panel cycles through: the pools' pages times the alarms' (at least 1).
pub fn pages(facts: &PanelFacts) -> usize {
    facts.pools.len().div_ceil(2).max(1) * facts.alarms.len().max(1)
}

/// The two lines of frame `frame`: the first line pages through the pools, two kinds a page
/// ("GPU 1/4 NVMe 2/6"); the second through the alarms ("ALARM nvme-3 SMART", "WARN nic-0 LINK
/// DOWN", with "+N" for the other active alarms where it fits), or says all is well ("OK 3
/// systems").
pub fn render(facts: &PanelFacts, frame: usize) -> [Line; 2] {
    let mut pools = Line::new();
    let pool_pages = facts.pools.len().div_ceil(2).max(1);
    let page = frame % pool_pages;
    for (i, (label, composed, total)) in facts.pools.iter().skip(page * 2).take(2).enumerate() {
        if i > 0 {
            push_fitting(&mut pools, " ");
        }
        push_fitting(&mut pools, label);
        push_fitting(&mut pools, " ");
        push_number(&mut pools, *composed);
        push_fitting(&mut pools, "/");
        push_number(&mut pools, *total);
    }
    if facts.pools.is_empty() {
        push_fitting(&mut pools, "no devices");
    }
    let mut alarm = Line::new();
    match facts
        .alarms
        .get((frame / pool_pages) % facts.alarms.len().max(1))
    {
        None => {
            push_fitting(&mut alarm, "OK ");
            push_number(&mut alarm, facts.systems);
            push_fitting(
                &mut alarm,
                if facts.systems == 1 {
                    " system"
                } else {
                    " systems"
                },
            );
        }
        Some(shown) => {
            let more = facts.alarms_total.saturating_sub(1);
            let mut suffix = Line::new();
            if more > 0 {
                push_fitting(&mut suffix, " +");
                push_number(&mut suffix, more);
            }
            push_fitting(&mut alarm, if shown.critical { "ALARM " } else { "WARN " });
            // The device's name and the fault's word first; the count of the other alarms only
            // where it fits beside them; a name too long gives way to the word.
            let room = COLUMNS.saturating_sub(alarm.len() + 1 + shown.what.len());
            let device = &shown.device[..shown.device.len().min(room)];
            push_fitting(&mut alarm, device);
            push_fitting(&mut alarm, " ");
            push_fitting(&mut alarm, shown.what);
            if alarm.len() + suffix.len() <= COLUMNS {
                push_fitting(&mut alarm, &suffix);
            }
        }
    }
    [pools, alarm]
}

/// Where the panel's lines go.
pub trait PanelDisplay {
    fn show(&mut self, lines: &[Line; 2]) -> std::io::Result<()>;
}

/// A character display on a serial line: each frame is a form feed (clear, on the usual
/// serial LCD backpacks) and the two lines padded to the width, each ended by CR LF; a file
/// standing in for the display keeps every frame, the last two lines being what it shows.
#[derive(Debug)]
pub struct SerialPanel<W: Write> {
    out: W,
    last: Option<[Line; 2]>,
}

impl<W: Write> SerialPanel<W> {
    pub fn new(out: W) -> SerialPanel<W> {
        SerialPanel { out, last: None }
    }
}

impl<W: Write> PanelDisplay for SerialPanel<W> {
    fn show(&mut self, lines: &[Line; 2]) -> std::io::Result<()> {
        if self.last.as_ref() == Some(lines) {
            return Ok(());
        }
        let mut frame = [b' '; 1 + 2 * (COLUMNS + 2)];
        frame[0] = 0x0c;
        for (i, line) in lines.iter().enumerate() {
            let start = 1 + i * (COLUMNS + 2);
            frame[start..start + line.len()].copy_from_slice(line.as_bytes());
            frame[start + COLUMNS..start + COLUMNS + 2].copy_from_slice(b"\r\n");
        }
        self.out.write_all(&frame)?;
        self.out.flush()?;
        self.last = Some(lines.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(pools: &[PoolLine], alarms: &[(bool, &str, &str)], total: u32) -> PanelFacts {
        let mut facts = PanelFacts {
            systems: 3,
            alarms_total: total,
            ..PanelFacts::default()
        };
        for pool in pools {
            facts.pools.push(*pool).unwrap();
        }
        for (critical, device, message) in alarms {
            let mut name = heapless::String::new();
            push_fitting(&mut name, device);
            facts
                .alarms
                .push(PanelAlarm {
                    critical: *critical,
                    device: name,
                    what: fault_word(message),
                })
                .unwrap();
        }
        facts
    }

    fn shown(facts: &PanelFacts, frame: usize) -> [String; 2] {
        let [a, b] = render(facts, frame);
        [a.to_string(), b.to_string()]
    }

    #[test]
    fn every_screen_of_the_panel_fits_its_twenty_columns() {
        let all = [
            ("GPU", 12, 40),
            ("NVMe", 6, 16),
            ("NIC", 1, 4),
            ("HBA", 0, 2),
        ];
        let quiet = facts(&all, &[], 0);
        assert_eq!(pages(&quiet), 2);
        assert_eq!(shown(&quiet, 0), ["GPU 12/40 NVMe 6/16", "OK 3 systems"]);
        assert_eq!(shown(&quiet, 1), ["NIC 1/4 HBA 0/2", "OK 3 systems"]);
        assert_eq!(shown(&quiet, 2), shown(&quiet, 0), "the pages cycle");

        let alarms = [
            (true, "nvme-3", "NVMe SMART critical warning 0x04: ..."),
            (false, "nic-0", "link down"),
            (
                true,
                "a-very-long-device-name-indeed",
                "PCIe uncorrectable fatal errors (AER)",
            ),
        ];
        let alarmed = facts(&all[..2], &alarms, 3);
        assert_eq!(pages(&alarmed), 3);
        assert_eq!(
            shown(&alarmed, 0),
            ["GPU 12/40 NVMe 6/16", "ALARM nvme-3 SMART"]
        );
        assert_eq!(shown(&alarmed, 1)[1], "WARN nic-0 LINK DOWN");
        assert_eq!(shown(&alarmed, 2)[1], "ALARM a-ver PCIe AER");
        let short = facts(&[], &[(false, "nvme-1", "NVMe SMART ...")], 4);
        assert_eq!(shown(&short, 0)[1], "WARN nvme-1 SMART +3");

        let empty = facts(&[], &[], 0);
        assert_eq!(shown(&empty, 0), ["no devices", "OK 3 systems"]);
        let mut one = empty.clone();
        one.systems = 1;
        assert_eq!(shown(&one, 7)[1], "OK 1 system");

        for facts in [quiet, alarmed, empty] {
            for frame in 0..pages(&facts) {
                for line in render(&facts, frame) {
                    assert!(line.len() <= COLUMNS && line.is_ascii(), "{line:?}");
                }
            }
        }
    }

    #[test]
    fn every_fault_the_monitor_words_has_its_word() {
        for (message, word) in [
            (
                "NVMe SMART critical warning 0x04: reliability degraded",
                "SMART",
            ),
            ("NVMe reads fail (media errors or no answer)", "READS"),
            ("NVMe media errors rising (SMART)", "MEDIA ERR"),
            ("PCIe uncorrectable non-fatal errors (AER)", "PCIe AER"),
            ("removed from its slot unexpectedly", "REMOVED"),
            ("fabric port 3 down for more than 3000 ms", "PORT DOWN"),
            ("link down", "LINK DOWN"),
            ("something new", "FAULT"),
        ] {
            assert_eq!(fault_word(message), word, "{message}");
        }
    }

    #[test]
    fn the_serial_panel_writes_a_frame_per_change_only() {
        let mut out = Vec::new();
        {
            let mut panel = SerialPanel::new(&mut out);
            let facts = facts(&[("GPU", 1, 4)], &[], 0);
            panel.show(&render(&facts, 0)).unwrap();
            panel.show(&render(&facts, 0)).unwrap();
        }
        let expected = format!("\x0c{:<20}\r\n{:<20}\r\n", "GPU 1/4", "OK 3 systems");
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }
}
