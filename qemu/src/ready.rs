//! The appliance's ready line on the serial console, as PID 1 prints it:
//! `APPLIANCE READY api=https://0.0.0.0:443 journal_head=<seq> replayed=<n> boot_ms=<ms>`.

/// The prefix that makes a console line the ready line.
pub const READY_PREFIX: &str = "APPLIANCE READY";

/// The fields of a ready line (absent ones are None).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadyLine {
    /// The API's URL as the guest sees it (`https://0.0.0.0:443`).
    pub api: Option<String>,
    pub journal_head: Option<u64>,
    pub replayed: Option<u64>,
    pub boot_ms: Option<u64>,
    /// Other `key=value` fields, in order (later issues add theirs).
    pub other: Vec<(String, String)>,
}

impl ReadyLine {
    /// Parses a console line; None when it is not a ready line. The prefix may follow other
    /// text on the line (kernel messages interleave on a shared console).
    pub fn parse(line: &str) -> Option<ReadyLine> {
        let at = line.find(READY_PREFIX)?;
        let mut ready = ReadyLine::default();
        for field in line[at + READY_PREFIX.len()..].split_whitespace() {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            match key {
                "api" => ready.api = Some(value.to_string()),
                "journal_head" => ready.journal_head = value.parse().ok(),
                "replayed" => ready.replayed = value.parse().ok(),
                "boot_ms" => ready.boot_ms = value.parse().ok(),
                _ => ready.other.push((key.to_string(), value.to_string())),
            }
        }
        Some(ready)
    }

    /// A field by name, numeric or not, as text.
    pub fn field(&self, key: &str) -> Option<String> {
        match key {
            "api" => self.api.clone(),
            "journal_head" => self.journal_head.map(|v| v.to_string()),
            "replayed" => self.replayed.map(|v| v.to_string()),
            "boot_ms" => self.boot_ms.map(|v| v.to_string()),
            _ => self
                .other
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_agreed_fields() {
        let line = "APPLIANCE READY api=https://0.0.0.0:443 journal_head=100000 replayed=100000 boot_ms=4321 replay_ms=812";
        let ready = ReadyLine::parse(line).unwrap();
        assert_eq!(ready.api.as_deref(), Some("https://0.0.0.0:443"));
        assert_eq!(ready.journal_head, Some(100_000));
        assert_eq!(ready.replayed, Some(100_000));
        assert_eq!(ready.boot_ms, Some(4321));
        assert_eq!(ready.field("replay_ms").as_deref(), Some("812"));
    }

    #[test]
    fn other_lines_are_not_ready_lines() {
        assert_eq!(ReadyLine::parse("[    1.0] nvme nvme0: 1/0/0 queues"), None);
        let noisy =
            ReadyLine::parse("[  3.1] random: crng init done APPLIANCE READY boot_ms=x").unwrap();
        assert_eq!(noisy.boot_ms, None);
    }
}
