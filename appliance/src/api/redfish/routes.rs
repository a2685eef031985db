//! The Redfish URI space: every resource the service serves, parsed from a path, and the
//! methods each one allows (the `Allow` header; anything else is 405).

use http::Method;

use super::directory::kind_of;
use crate::model::directory::DirectoryKind;

/// The root of every Redfish URI.
pub const ROOT: &str = "/redfish/v1";
/// The one composition zone (every block of the fabric can compose with every other).
pub const ZONE: &str = "1";
/// The appliance's own chassis and manager.
pub const APPLIANCE: &str = "Appliance";
/// The chassis of the PCIe fabric enclosure (switches and pool devices).
pub const ENCLOSURE: &str = "FabricEnclosure";
/// The fabric.
pub const FABRIC: &str = "PCIe";
/// The journal's log service.
pub const JOURNAL: &str = "Journal";
/// The appliance server's endpoint on the fabric.
pub const HOST_ENDPOINT: &str = "Host";
/// The switch port toward the appliance server.
pub const UPSTREAM_PORT: &str = "Up";

/// One resource (or action) of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Versions,
    Root,
    Odata,
    Metadata,
    /// One of the appliance's OEM schemas (CSDL), by file name.
    Schema(String),
    Systems,
    SystemCapabilities,
    System(String),
    SystemProcessors(String),
    SystemStorage(String),
    /// The storage of a system's composed NVMe drives.
    SystemDrives(String),
    SystemNetworkInterfaces(String),
    SystemAction(String, String),
    CompositionService,
    ComposeActionInfo,
    ComposeAction,
    ResourceBlocks,
    ActivePool,
    FreePool,
    Block(String),
    BlockProcessor(String),
    BlockDrive(String),
    BlockNetworkInterface(String),
    BlockStorage(String),
    BlockControllers(String),
    BlockController(String),
    Zones,
    Zone(String),
    Reservations,
    Reservation(String),
    ChassisCollection,
    Chassis(String),
    NetworkAdapters,
    NetworkAdapter(String),
    Managers,
    Manager,
    ManagerReset,
    LogServices,
    LogService,
    LogEntries,
    LogEntry(u64),
    Fabrics,
    Fabric,
    Switches,
    Switch(String),
    Ports(String),
    Port(String, String),
    Endpoints,
    Endpoint(String),
    FabricZones,
    FabricZone(String),
    TaskService,
    Tasks,
    Task(u64),
    TaskMonitor(u64),
    EventService,
    Subscriptions,
    Subscription(String),
    EventStream,
    SubmitTestEvent,
    SessionService,
    Sessions,
    /// `Sessions/Members`: POST there creates a session too (DSP0266).
    SessionsMembers,
    Session(String),
    AccountService,
    Accounts,
    Account(String),
    AccountAction(String, String),
    Roles,
    Role(String),
    /// `AccountService/LDAP/Certificates` or `.../ActiveDirectory/Certificates`: the CA bundle.
    DirectoryCertificates(DirectoryKind),
    DirectoryCertificate(DirectoryKind, String),
    /// The appliance's own door for its CLI: one `api::Request` per POST.
    ApplianceRequests,
    /// An authenticated liveness check (a fixed body; the API benchmark's baseline).
    AppliancePing,
    /// Prometheus metrics (outside the Redfish tree).
    Metrics,
}

fn owned(segment: &str) -> String {
    segment.to_string()
}

impl Route {
    /// The resource at `path` (without its query), if there is one.
    pub fn parse(path: &str) -> Option<Route> {
        if path == "/metrics" {
            return Some(Route::Metrics);
        }
        if path == "/redfish" || path == "/redfish/" {
            return Some(Route::Versions);
        }
        let rest = path.strip_prefix(ROOT)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        if rest.contains("//") || parts.iter().any(|p| *p == "." || *p == "..") {
            return None;
        }
        use Route as R;
        Some(match parts.as_slice() {
            [] => R::Root,
            ["odata"] => R::Odata,
            ["$metadata"] => R::Metadata,
            ["Schemas", file] => R::Schema(owned(file)),
            ["Systems"] => R::Systems,
            ["Systems", "Capabilities"] => R::SystemCapabilities,
            ["Systems", s] => R::System(owned(s)),
            ["Systems", s, "Processors"] => R::SystemProcessors(owned(s)),
            ["Systems", s, "Storage"] => R::SystemStorage(owned(s)),
            ["Systems", s, "Storage", "NVMe"] => R::SystemDrives(owned(s)),
            ["Systems", s, "NetworkInterfaces"] => R::SystemNetworkInterfaces(owned(s)),
            ["Systems", s, "Actions", a] => R::SystemAction(owned(s), owned(a)),
            ["CompositionService"] => R::CompositionService,
            ["CompositionService", "ComposeActionInfo"] => R::ComposeActionInfo,
            ["CompositionService", "Actions", "CompositionService.Compose"] => R::ComposeAction,
            ["CompositionService", "ResourceBlocks"] => R::ResourceBlocks,
            ["CompositionService", "ActivePool"] => R::ActivePool,
            ["CompositionService", "FreePool"] => R::FreePool,
            ["CompositionService", "ResourceBlocks", b] => R::Block(owned(b)),
            ["CompositionService", "ResourceBlocks", b, "Processors", d] if b == d => {
                R::BlockProcessor(owned(b))
            }
            ["CompositionService", "ResourceBlocks", b, "Drives", d] if b == d => {
                R::BlockDrive(owned(b))
            }
            ["CompositionService", "ResourceBlocks", b, "NetworkInterfaces", d] if b == d => {
                R::BlockNetworkInterface(owned(b))
            }
            ["CompositionService", "ResourceBlocks", b, "Storage", d] if b == d => {
                R::BlockStorage(owned(b))
            }
            ["CompositionService", "ResourceBlocks", b, "Storage", d, "Controllers"] if b == d => {
                R::BlockControllers(owned(b))
            }
            ["CompositionService", "ResourceBlocks", b, "Storage", d, "Controllers", "0"]
                if b == d =>
            {
                R::BlockController(owned(b))
            }
            ["CompositionService", "ResourceZones"] => R::Zones,
            ["CompositionService", "ResourceZones", z] => R::Zone(owned(z)),
            ["CompositionService", "CompositionReservations"] => R::Reservations,
            ["CompositionService", "CompositionReservations", r] => R::Reservation(owned(r)),
            ["Chassis"] => R::ChassisCollection,
            ["Chassis", c] => R::Chassis(owned(c)),
            ["Chassis", c, "NetworkAdapters"] if *c == ENCLOSURE => R::NetworkAdapters,
            ["Chassis", c, "NetworkAdapters", n] if *c == ENCLOSURE => R::NetworkAdapter(owned(n)),
            ["Managers"] => R::Managers,
            ["Managers", m] if *m == APPLIANCE => R::Manager,
            ["Managers", m, "Actions", "Manager.Reset"] if *m == APPLIANCE => R::ManagerReset,
            ["Managers", m, "LogServices"] if *m == APPLIANCE => R::LogServices,
            ["Managers", m, "LogServices", l] if *m == APPLIANCE && *l == JOURNAL => R::LogService,
            ["Managers", m, "LogServices", l, "Entries"] if *m == APPLIANCE && *l == JOURNAL => {
                R::LogEntries
            }
            ["Managers", m, "LogServices", l, "Entries", e] if *m == APPLIANCE && *l == JOURNAL => {
                R::LogEntry(e.parse().ok()?)
            }
            ["Fabrics"] => R::Fabrics,
            ["Fabrics", f] if *f == FABRIC => R::Fabric,
            ["Fabrics", f, "Switches"] if *f == FABRIC => R::Switches,
            ["Fabrics", f, "Switches", s] if *f == FABRIC => R::Switch(owned(s)),
            ["Fabrics", f, "Switches", s, "Ports"] if *f == FABRIC => R::Ports(owned(s)),
            ["Fabrics", f, "Switches", s, "Ports", p] if *f == FABRIC => {
                R::Port(owned(s), owned(p))
            }
            ["Fabrics", f, "Endpoints"] if *f == FABRIC => R::Endpoints,
            ["Fabrics", f, "Endpoints", e] if *f == FABRIC => R::Endpoint(owned(e)),
            ["Fabrics", f, "Zones"] if *f == FABRIC => R::FabricZones,
            ["Fabrics", f, "Zones", z] if *f == FABRIC => R::FabricZone(owned(z)),
            ["TaskService"] => R::TaskService,
            ["TaskService", "Tasks"] => R::Tasks,
            ["TaskService", "Tasks", t] => R::Task(t.parse().ok()?),
            ["TaskService", "TaskMonitors", t] => R::TaskMonitor(t.parse().ok()?),
            ["EventService"] => R::EventService,
            ["EventService", "Subscriptions"] => R::Subscriptions,
            ["EventService", "Subscriptions", s] => R::Subscription(owned(s)),
            ["EventService", "SSE"] => R::EventStream,
            ["EventService", "Actions", "EventService.SubmitTestEvent"] => R::SubmitTestEvent,
            ["SessionService"] => R::SessionService,
            ["SessionService", "Sessions"] => R::Sessions,
            ["SessionService", "Sessions", "Members"] => R::SessionsMembers,
            ["SessionService", "Sessions", s] => R::Session(owned(s)),
            ["AccountService"] => R::AccountService,
            ["AccountService", "Accounts"] => R::Accounts,
            ["AccountService", "Accounts", a] => R::Account(owned(a)),
            ["AccountService", "Accounts", a, "Actions", x] => R::AccountAction(owned(a), owned(x)),
            ["AccountService", "Roles"] => R::Roles,
            ["AccountService", "Roles", r] => R::Role(owned(r)),
            ["AccountService", p, "Certificates"] => R::DirectoryCertificates(kind_of(p)?),
            ["AccountService", p, "Certificates", c] => {
                R::DirectoryCertificate(kind_of(p)?, owned(c))
            }
            ["Oem", "Appliance", "Requests"] => R::ApplianceRequests,
            ["Oem", "Appliance", "Ping"] => R::AppliancePing,
            _ => return None,
        })
    }

    /// Readable without credentials (DSP0266): the version document, the service root, the
    /// metadata documents; and logging in.
    pub fn is_public(&self, method: &Method) -> bool {
        match self {
            Route::Versions | Route::Root | Route::Odata | Route::Metadata | Route::Schema(_) => {
                method == Method::GET || method == Method::HEAD
            }
            Route::Sessions | Route::SessionsMembers => method == Method::POST,
            _ => false,
        }
    }

    /// The methods the resource allows, in `Allow` order.
    pub fn allowed(&self) -> &'static [Method] {
        const READ: &[Method] = &[Method::GET, Method::HEAD];
        const CREATE: &[Method] = &[Method::GET, Method::HEAD, Method::POST];
        const REMOVE: &[Method] = &[Method::GET, Method::HEAD, Method::DELETE];
        const ALL: &[Method] = &[Method::GET, Method::HEAD, Method::PATCH, Method::DELETE];
        const CHANGE: &[Method] = &[Method::GET, Method::HEAD, Method::PATCH];
        const POST: &[Method] = &[Method::POST];
        use Route as R;
        match self {
            R::Systems
            | R::Accounts
            | R::Sessions
            | R::Subscriptions
            | R::DirectoryCertificates(_) => CREATE,
            R::AccountService => CHANGE,
            R::DirectoryCertificate(..) => REMOVE,
            R::SessionsMembers => POST,
            R::System(_) | R::Account(_) => ALL,
            R::Session(_) | R::Subscription(_) | R::Reservation(_) => REMOVE,
            R::SystemAction(..)
            | R::AccountAction(..)
            | R::ComposeAction
            | R::ManagerReset
            | R::SubmitTestEvent
            | R::ApplianceRequests => POST,
            _ => READ,
        }
    }

    /// The `Allow` header's value.
    pub fn allow_header(&self) -> String {
        self.allowed()
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `/redfish/v1/` followed by `rest`.
pub fn uri(rest: &str) -> String {
    format!("{ROOT}/{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_to_their_resources() {
        let cases = [
            ("/redfish", Some(Route::Versions)),
            ("/redfish/v1", Some(Route::Root)),
            ("/redfish/v1/", Some(Route::Root)),
            (
                "/redfish/v1/Systems/ws1/",
                Some(Route::System("ws1".into())),
            ),
            (
                "/redfish/v1/CompositionService/ResourceBlocks/gpu-0/Processors/gpu-0",
                Some(Route::BlockProcessor("gpu-0".into())),
            ),
            (
                "/redfish/v1/CompositionService/ResourceBlocks/gpu-0/Processors/gpu-1",
                None,
            ),
            (
                "/redfish/v1/Managers/Appliance/LogServices/Journal/Entries/42",
                Some(Route::LogEntry(42)),
            ),
            (
                "/redfish/v1/Managers/Appliance/LogServices/Journal/Entries/x",
                None,
            ),
            ("/redfish/v1/Systems//ws1", None),
            ("/redfish/v1/../v1/Systems", None),
            ("/redfish/v2", None),
            ("/etc/passwd", None),
            ("/metrics", Some(Route::Metrics)),
            (
                "/redfish/v1/AccountService/LDAP/Certificates/1",
                Some(Route::DirectoryCertificate(DirectoryKind::Ldap, "1".into())),
            ),
            (
                "/redfish/v1/AccountService/ActiveDirectory/Certificates",
                Some(Route::DirectoryCertificates(DirectoryKind::ActiveDirectory)),
            ),
            ("/redfish/v1/AccountService/Kerberos/Certificates", None),
        ];
        for (path, route) in cases {
            assert_eq!(Route::parse(path), route, "{path}");
        }
    }

    #[test]
    fn only_the_documents_and_the_login_are_public() {
        assert!(Route::Root.is_public(&Method::GET));
        assert!(Route::Sessions.is_public(&Method::POST));
        assert!(!Route::Sessions.is_public(&Method::GET));
        assert!(!Route::Systems.is_public(&Method::GET));
        assert_eq!(
            Route::System("a".into()).allow_header(),
            "GET, HEAD, PATCH, DELETE"
        );
    }
}
