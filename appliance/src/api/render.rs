//! Replies as people read them: aligned tables and short lines, roles and kinds printed as they
//! are typed (`render_node`, `gpu`), sizes in GiB or TB, times in RFC 3339. One renderer for the
//! CLI and the console. Every rendering ends with a newline.

use std::fmt::Write;

use super::time::rfc3339;
use super::views::{
    AcceptedView, AlarmView, DeviceView, DirectoryView, HistoryEntryView, JournalCheckView,
    MountSourceView, OperationState, OperationView, PortView, StateAtView, StatusView, SystemView,
    TenantView,
};
use super::{ApiError, Reply};
use crate::model::DeviceKind;

/// A reply as text for people.
pub fn reply(reply: &Reply) -> String {
    match reply {
        Reply::Status(status) => self::status(status),
        Reply::Devices(devices) => self::devices(devices),
        Reply::Device(device) => self::devices(std::slice::from_ref(device)),
        Reply::Ports(ports) => self::ports(ports),
        Reply::Systems(systems) => self::systems(systems),
        Reply::System(system) => self::system(system),
        Reply::Tenants(tenants) => self::tenants(tenants),
        Reply::Operation(operation) => format!("{}\n", self::operation(operation)),
        Reply::Accepted(accepted) => self::accepted(accepted),
        Reply::History(entries) => self::history(entries),
        Reply::StateAt(state) => self::state_at(state),
        Reply::Alarms(alarms) => self::alarms(alarms),
        Reply::JournalCheck(check) => self::journal_check(check),
        Reply::Directory(None) => "no directory: local accounts only\n".to_string(),
        Reply::Directory(Some(view)) => self::directory(view),
    }
}

/// The directory's settings and the directory users kept.
fn directory(view: &DirectoryView) -> String {
    let d = &view.settings;
    let groups = match d.groups_from() {
        Some(attribute) => format!("the user's {attribute}"),
        None => "groupOfNames member".to_string(),
    };
    let mut out = format!(
        "directory {} at {} (StartTLS {}, plain allowed {}), base {}, users by {}, groups by {groups} named by {}, service account {}, timeout {} ms\n",
        d.kind.name(), d.uri, d.starttls, d.allow_plain, d.base, d.user_attribute, d.group_name_attribute, d.bind_dn, d.timeout_ms
    );
    let rows: Vec<Vec<String>> = d
        .mappings
        .iter()
        .map(|m| {
            vec![
                m.group.clone(),
                m.role.name().to_string(),
                or_dash(m.tenant.as_ref().map(|t| t.to_string())),
            ]
        })
        .collect();
    out.push_str(&table(&["GROUP", "ROLE", "TENANT"], &rows));
    if !view.users.is_empty() {
        let rows: Vec<Vec<String>> = view
            .users
            .iter()
            .map(|u| {
                vec![
                    u.name.clone(),
                    or_dash(u.locked_until_ms.map(rfc3339)),
                    if u.totp { "on" } else { "off" }.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(&["DIRECTORY USER", "LOCKED UNTIL", "TOTP"], &rows));
    }
    out
}

fn journal_check(check: &JournalCheckView) -> String {
    let mut out = String::new();
    let verdict = match check.problems.is_empty() {
        true => "journal intact",
        false => "JOURNAL DAMAGED",
    };
    let _ = writeln!(
        out,
        "{verdict}: {} records read, sequences {} to {}, every checksum and link checked in {} ms",
        check.records, check.first_sequence, check.last_sequence, check.ms
    );
    let _ = match check.snapshot {
        Some(sequence) => writeln!(out, "newest valid snapshot at sequence {sequence}"),
        None => writeln!(
            out,
            "no valid snapshot (a start replays from the first record)"
        ),
    };
    for problem in &check.problems {
        let _ = writeln!(out, "problem: {problem}");
    }
    out
}

/// An error as text for people: the message and its code.
pub fn error(error: &ApiError) -> String {
    format!("refused ({}): {}\n", error.code, error.message)
}

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<width$}  ", width = widths[i]);
            }
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    }
    out
}

/// GPU memory in GiB, NVMe capacity in TB, nothing for kinds without a size.
pub fn size(kind: DeviceKind, bytes: u64) -> String {
    match kind {
        DeviceKind::Gpu => format!("{:.0}GiB", bytes as f64 / (1u64 << 30) as f64),
        DeviceKind::Nvme => format!("{:.1}TB", bytes as f64 / 1e12),
        _ => String::new(),
    }
}

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".into())
}

fn status(s: &StatusView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "appliance {} at {}: journal head {}",
        or_dash((!s.identity.appliance_id.is_empty()).then(|| s.identity.appliance_id.clone())),
        or_dash((!s.identity.site.is_empty()).then(|| s.identity.site.clone())),
        s.journal_head
    );
    let _ = writeln!(
        out,
        "health {}, firmware {}, up {}",
        s.health,
        s.firmware,
        uptime(s.uptime_s)
    );
    out.push_str(&management(s));
    let _ = writeln!(out, "start: {}", s.start);
    let rows: Vec<Vec<String>> = s
        .pools
        .iter()
        .map(|(kind, u)| {
            vec![
                kind.clone(),
                u.total.to_string(),
                u.composed.to_string(),
                u.free.to_string(),
                u.unavailable.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["POOL", "TOTAL", "COMPOSED", "FREE", "UNAVAILABLE"],
        &rows,
    ));
    let _ = writeln!(
        out,
        "ports {}/{} free, {} systems, {} tenants, {} operations pending",
        s.ports_free, s.ports_total, s.systems, s.tenants, s.operations_pending
    );
    if s.alarms_critical + s.alarms_warning > 0 {
        let _ = writeln!(
            out,
            "ALARMS: {} critical, {} warning (appliance ctl alarms)",
            s.alarms_critical, s.alarms_warning
        );
    }
    let _ = writeln!(
        out,
        "compose latency p50={}us p99={}us (n={}); append p99={}us",
        s.compose_latency.p50_us,
        s.compose_latency.p99_us,
        s.compose_latency.count,
        s.append_latency.p99_us
    );
    out
}

/// The management port (as the kernel has it), the operator's setting of it, the API's URL.
pub fn management(s: &StatusView) -> String {
    let mut out = String::new();
    if let Some(port) = &s.management {
        let address = match port.address {
            Some((ip, prefix)) => format!("{ip}/{prefix}"),
            None => "no address".into(),
        };
        let gateway = or_dash(port.gateway.map(|g| g.to_string()));
        let _ = writeln!(
            out,
            "management {} ({}) {address} gateway {gateway}",
            port.interface, port.mac
        );
    }
    if let Some(setting) = &s.management_setting {
        let how = match (&setting.applied_to, &setting.error) {
            (Some(interface), _) => format!("applied to {interface}"),
            (None, Some(error)) => format!("not applied: {error}"),
            (None, None) => "not applied yet".into(),
        };
        let _ = writeln!(out, "management setting {}: {how}", setting.network);
    }
    if let Some(url) = &s.api_url {
        let _ = writeln!(out, "api {url}");
    }
    out
}

/// Seconds as `3d 4h`, `2h 5m`, `7m 3s`.
pub fn uptime(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3_600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn devices(devices: &[DeviceView]) -> String {
    let rows: Vec<Vec<String>> = devices
        .iter()
        .map(|d| {
            let health = match &d.health.reason {
                Some(reason) => format!("{}({reason})", d.health.state),
                None => d.health.state.clone(),
            };
            vec![
                d.id.to_string(),
                d.kind.to_string(),
                size(d.kind, d.capacity_bytes),
                d.state.name().to_string(),
                or_dash(d.system.as_ref().map(|s| s.to_string())),
                or_dash(d.port.map(|p| p.to_string())),
                d.switch.to_string(),
                health,
                match (d.in_service, d.draining) {
                    (true, _) => "in",
                    (false, true) => "draining",
                    (false, false) => "out",
                }
                .to_string(),
                if d.rdma { "rdma" } else { "" }.to_string(),
                d.serial.clone(),
                d.model.clone(),
            ]
        })
        .collect();
    table(
        &[
            "DEVICE", "KIND", "SIZE", "STATE", "SYSTEM", "PORT", "SWITCH", "HEALTH", "SERVICE",
            "RDMA", "SERIAL", "MODEL",
        ],
        &rows,
    )
}

fn ports(ports: &[PortView]) -> String {
    let rows: Vec<Vec<String>> = ports
        .iter()
        .map(|p| {
            vec![
                p.id.to_string(),
                p.switch.to_string(),
                p.slot.to_string(),
                or_dash(p.device.as_ref().map(|d| d.to_string())),
            ]
        })
        .collect();
    table(&["PORT", "SWITCH", "SLOT", "DEVICE"], &rows)
}

fn members(system: &SystemView) -> String {
    system
        .devices
        .iter()
        .map(|m| match m.state.as_str() {
            "attached" => format!("{}@{}", m.id, m.port),
            other => format!("{}@{}({other})", m.id, m.port),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn mounts(system: &SystemView) -> String {
    system
        .mounts
        .iter()
        .map(|m| match &m.source {
            MountSourceView::Namespace { device, namespace } => {
                format!("{device}n{namespace}:{}", m.target)
            }
            MountSourceView::Export { server, path } => format!("{server}:{path}:{}", m.target),
            MountSourceView::Mirror { devices } => {
                let members: Vec<&str> = devices.iter().map(|d| d.as_str()).collect();
                let condition = m.condition.as_deref().unwrap_or("unseen");
                format!("mirror({}):{}({condition})", members.join("+"), m.target)
            }
            MountSourceView::Disk { hba, uuid } => {
                let condition = m.condition.as_deref().unwrap_or("unseen");
                format!("{hba}/uuid={uuid}:{}({condition})", m.target)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn systems(systems: &[SystemView]) -> String {
    let rows: Vec<Vec<String>> = systems
        .iter()
        .map(|s| {
            vec![
                s.name.to_string(),
                s.tenant.to_string(),
                s.role.to_string(),
                s.version.to_string(),
                or_dash(s.pending.map(|op| format!("op {op}"))),
                members(s),
                mounts(s),
            ]
        })
        .collect();
    table(
        &[
            "SYSTEM", "TENANT", "ROLE", "VERSION", "PENDING", "DEVICES", "MOUNTS",
        ],
        &rows,
    )
}

fn system(s: &SystemView) -> String {
    let mut out = format!(
        "{} tenant={} role={} version={} devices=[{}] mounts=[{}]",
        s.name,
        s.tenant,
        s.role,
        s.version,
        members(s),
        mounts(s)
    );
    if let Some(op) = s.pending {
        let _ = write!(out, " pending=op{op}");
    }
    if let Some(failure) = &s.last_failure {
        let _ = write!(out, " last_failure={failure:?}");
    }
    out.push('\n');
    out
}

fn tenants(tenants: &[TenantView]) -> String {
    let rows: Vec<Vec<String>> = tenants
        .iter()
        .map(|t| {
            vec![
                t.name.to_string(),
                t.systems.to_string(),
                t.version.to_string(),
            ]
        })
        .collect();
    table(&["TENANT", "SYSTEMS", "VERSION"], &rows)
}

/// One operation in a line.
fn operation(o: &OperationView) -> String {
    let state = match (&o.state, &o.failure) {
        (OperationState::Failed, Some(f)) => format!("failed ({}): {}", f.code, f.message),
        (OperationState::Pending, _) => "pending".into(),
        (OperationState::Completed, _) => "completed".into(),
        (OperationState::Failed, None) => "failed".into(),
    };
    let mut what: Vec<String> = o
        .attaches
        .iter()
        .map(|(d, p)| format!("+{d}@{p}"))
        .collect();
    what.extend(o.detaches.iter().map(|d| format!("-{d}")));
    what.extend(o.mount.iter().cloned());
    format!(
        "op {} {} {} [{}] by {}: {state}",
        o.id,
        o.kind,
        o.system,
        what.join(" "),
        o.by
    )
}

fn alarms(alarms: &[AlarmView]) -> String {
    if alarms.is_empty() {
        return "no active alarms\n".into();
    }
    let mut out = String::new();
    for a in alarms {
        let _ = writeln!(
            out,
            "alarm {} {} {} {}: {}",
            a.id,
            a.severity.name(),
            a.raised,
            a.device,
            a.message
        );
        let _ = writeln!(
            out,
            "  system: {}",
            or_dash(a.system.as_ref().map(|s| s.to_string()))
        );
        let _ = writeln!(out, "  evidence: {}", a.evidence);
        let failover = match (&a.failover, a.failover_op) {
            (Some(op), _) => operation(op),
            (None, Some(op)) => format!("op {op} (finished long ago: see the history)"),
            (None, None) => "none".into(),
        };
        let _ = writeln!(out, "  failover: {failover}");
    }
    out
}

fn accepted(a: &AcceptedView) -> String {
    let mut out = format!("accepted at sequence {}", a.sequence);
    if a.repeated {
        out.push_str(" (repeated request: nothing new journaled)");
    }
    match &a.operation {
        Some(operation) => {
            out.push('\n');
            out.push_str(&self::operation(operation));
        }
        None => {
            if let Some(op) = a.op {
                let _ = write!(out, "; op {op}");
            }
        }
    }
    out.push('\n');
    out
}

fn history(entries: &[HistoryEntryView]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.time.clone(),
                e.sequence.to_string(),
                e.kind.clone(),
                or_dash(e.by.as_ref().map(|b| b.to_string())),
                e.summary.clone(),
            ]
        })
        .collect();
    table(&["TIME", "SEQUENCE", "EVENT", "BY", "WHAT"], &rows)
}

fn state_at(state: &StateAtView) -> String {
    format!(
        "state at sequence {}\n{}",
        state.sequence,
        systems(&state.systems)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_aligns_its_columns_and_ends_every_line() {
        let text = table(
            &["A", "LONGER"],
            &[
                vec!["wide cell".into(), "x".into()],
                vec!["b".into(), "y".into()],
            ],
        );
        assert_eq!(text, "A          LONGER\nwide cell  x\nb          y\n");
    }

    #[test]
    fn sizes_are_in_the_units_operators_use() {
        assert_eq!(size(DeviceKind::Gpu, 24 << 30), "24GiB");
        assert_eq!(size(DeviceKind::Nvme, 3_840_000_000_000), "3.8TB");
        assert_eq!(size(DeviceKind::Nic, 0), "");
    }
}
