//! Every Redfish resource, built from State in one place: composed systems, the composition
//! service with a resource block per pool device, its zone and reservations, the chassis, the
//! manager with the journal as a log service, the PCIe fabric (switches, ports, endpoints,
//! zones), tasks (one per operation), the event, session and account services. Then the GET
//! pipeline: `only`, `$expand`, `$select`, ETags (`If-None-Match`), `Allow` and `Link`.

use std::collections::BTreeSet;

use http::{header, HeaderValue, Method, Response, StatusCode};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::messages::RfError;
use super::query::{select, Expand};
use super::routes::{
    uri, Route, APPLIANCE, ENCLOSURE, FABRIC, HOST_ENDPOINT, JOURNAL, UPSTREAM_PORT, ZONE,
};
use super::{empty_response, json_response, Asked, Body, Service};
use crate::api::auth::Principal;
use crate::api::time::rfc3339;
use crate::core::log::Logged;
use crate::model::directory::DirectoryKind;
use crate::model::{
    Account, AttachState, Device, DeviceId, DeviceKind, Event, Health, Operation, OperationKind,
    Outcome, Privilege, Severity, State, System,
};

/// Schema versions (from ../shared/redfish/csdl, DSP8010 2025.4): one place, also for
/// `$metadata`.
pub mod types {
    pub const SERVICE_ROOT: &str = "#ServiceRoot.v1_20_0.ServiceRoot";
    pub const SYSTEM: &str = "#ComputerSystem.v1_27_0.ComputerSystem";
    pub const COMPOSITION_SERVICE: &str = "#CompositionService.v1_2_3.CompositionService";
    pub const RESOURCE_BLOCK: &str = "#ResourceBlock.v1_4_3.ResourceBlock";
    pub const ZONE: &str = "#Zone.v1_6_3.Zone";
    pub const RESERVATION: &str = "#CompositionReservation.v1_0_2.CompositionReservation";
    pub const ACTION_INFO: &str = "#ActionInfo.v1_5_0.ActionInfo";
    pub const CHASSIS: &str = "#Chassis.v1_28_0.Chassis";
    pub const MANAGER: &str = "#Manager.v1_24_0.Manager";
    pub const LOG_SERVICE: &str = "#LogService.v1_9_0.LogService";
    pub const LOG_ENTRY: &str = "#LogEntry.v1_21_0.LogEntry";
    pub const FABRIC: &str = "#Fabric.v1_4_0.Fabric";
    pub const SWITCH: &str = "#Switch.v1_11_0.Switch";
    pub const PORT: &str = "#Port.v1_18_0.Port";
    pub const ENDPOINT: &str = "#Endpoint.v1_8_2.Endpoint";
    pub const TASK_SERVICE: &str = "#TaskService.v1_3_0.TaskService";
    pub const TASK: &str = "#Task.v1_7_4.Task";
    pub const EVENT_SERVICE: &str = "#EventService.v1_12_0.EventService";
    pub const EVENT_DESTINATION: &str = "#EventDestination.v1_16_0.EventDestination";
    pub const SESSION_SERVICE: &str = "#SessionService.v1_2_0.SessionService";
    pub const SESSION: &str = "#Session.v1_8_0.Session";
    pub const ACCOUNT_SERVICE: &str = "#AccountService.v1_18_1.AccountService";
    pub const ACCOUNT: &str = "#ManagerAccount.v1_14_1.ManagerAccount";
    pub const ROLE: &str = "#Role.v1_3_3.Role";
    pub const PROCESSOR: &str = "#Processor.v1_22_0.Processor";
    pub const DRIVE: &str = "#Drive.v1_22_0.Drive";
    pub const STORAGE: &str = "#Storage.v1_21_0.Storage";
    pub const STORAGE_CONTROLLER: &str = "#StorageController.v1_11_0.StorageController";
    pub const NETWORK_INTERFACE: &str = "#NetworkInterface.v1_2_3.NetworkInterface";
    pub const NETWORK_ADAPTER: &str = "#NetworkAdapter.v1_14_0.NetworkAdapter";
    pub const COLLECTION_CAPABILITIES: &str =
        "#CollectionCapabilities.v1_4_1.CollectionCapabilities";
    pub const MESSAGE: &str = "#Message.v1_3_0.Message";
    pub const CERTIFICATE: &str = "#Certificate.v1_11_0.Certificate";
    pub const OEM_ACCOUNT_SERVICE: &str = "#ApplianceAccountService.v1_0_0.ApplianceAccountService";
    pub const OEM_ROLE_MAPPING: &str = "#ApplianceAccountService.v1_0_0.ApplianceRoleMapping";
}

/// A link.
pub fn link(target: &str) -> Value {
    json!({ "@odata.id": target })
}

fn links(targets: impl IntoIterator<Item = String>) -> Value {
    Value::Array(targets.into_iter().map(|t| link(&t)).collect())
}

fn resource(id_uri: &str, type_: &str, id: &str, name: &str) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("@odata.id".into(), id_uri.into());
    map.insert("@odata.type".into(), type_.into());
    map.insert("Id".into(), id.into());
    map.insert("Name".into(), name.into());
    map
}

fn collection(id_uri: &str, type_name: &str, name: &str, members: Vec<String>) -> Value {
    json!({
        "@odata.id": id_uri,
        "@odata.type": format!("#{type_name}.{type_name}"),
        "Name": name,
        "Members@odata.count": members.len(),
        "Members": links(members),
    })
}

fn enabled() -> Value {
    json!({"State": "Enabled", "Health": "OK"})
}

pub fn system_uri(name: &str) -> String {
    uri(&format!("Systems/{name}"))
}

pub fn block_uri(device: &str) -> String {
    uri(&format!("CompositionService/ResourceBlocks/{device}"))
}

fn endpoint_uri(id: &str) -> String {
    uri(&format!("Fabrics/{FABRIC}/Endpoints/{id}"))
}

fn switch_uri(switch: &str) -> String {
    uri(&format!("Fabrics/{FABRIC}/Switches/{switch}"))
}

fn port_uri(switch: &str, port: &str) -> String {
    uri(&format!("Fabrics/{FABRIC}/Switches/{switch}/Ports/{port}"))
}

pub fn account_uri(name: &str) -> String {
    uri(&format!("AccountService/Accounts/{name}"))
}

pub fn session_uri(id: &str) -> String {
    uri(&format!("SessionService/Sessions/{id}"))
}

pub fn task_uri(op: u64) -> String {
    uri(&format!("TaskService/Tasks/{op}"))
}

pub fn monitor_uri(op: u64) -> String {
    uri(&format!("TaskService/TaskMonitors/{op}"))
}

/// The URI of a device's own resource under its block (a GPU's Processor, ...).
fn device_uri(device: &Device) -> Option<String> {
    let block = block_uri(&device.id);
    let id = &device.id;
    Some(match device.kind {
        DeviceKind::Gpu => format!("{block}/Processors/{id}"),
        DeviceKind::Nvme => format!("{block}/Drives/{id}"),
        DeviceKind::Nic => format!("{block}/NetworkInterfaces/{id}"),
        DeviceKind::Hba => format!("{block}/Storage/{id}"),
        DeviceKind::Other => return None,
    })
}

/// Redfish's health and state of a device.
fn device_status(device: &Device) -> Value {
    let health = match &device.health {
        Health::Ok => "OK",
        Health::Degraded(_) => "Warning",
        Health::Failed(_) => "Critical",
    };
    let state = if !device.present {
        "Absent"
    } else if !device.in_service {
        "Disabled"
    } else {
        "Enabled"
    };
    json!({"State": state, "Health": health})
}

/// The vendor's name for well-known PCI vendor ids.
fn vendor(id: u16) -> String {
    match id {
        0x10de => "NVIDIA".into(),
        0x1002 => "AMD".into(),
        0x8086 => "Intel".into(),
        0x15b3 => "Mellanox".into(),
        0x144d => "Samsung".into(),
        0x1000 => "Broadcom / LSI".into(),
        0x1af4 => "Red Hat (virtio)".into(),
        0x1b36 | 0x1234 => "QEMU".into(),
        other => format!("PCI vendor {other:04x}"),
    }
}

/// What the principal may see (its tenant's systems, or every tenant's).
pub(crate) struct Lens<'a> {
    pub state: &'a State,
    pub principal: Option<&'a Principal>,
    pub service: &'a Service,
}

impl<'a> Lens<'a> {
    pub fn new(
        state: &'a State,
        principal: Option<&'a Principal>,
        service: &'a Service,
    ) -> Lens<'a> {
        Lens {
            state,
            principal,
            service,
        }
    }

    fn scope(&self) -> Option<&crate::model::TenantName> {
        self.principal.and_then(|p| p.scope.as_ref())
    }

    pub fn sees_system(&self, system: &System) -> bool {
        self.scope().is_none_or(|t| system.tenant == *t)
    }

    pub fn system(&self, name: &str) -> Option<&System> {
        self.state.systems.get(name).filter(|s| self.sees_system(s))
    }

    /// Free blocks are everyone's; a composed one is its system's tenant's.
    pub fn sees_device(&self, device: &Device) -> bool {
        match &device.holder {
            Some(holder) => self.system(holder).is_some(),
            None => true,
        }
    }

    pub fn device(&self, id: &str) -> Option<&Device> {
        self.state.devices.get(id).filter(|d| self.sees_device(d))
    }

    fn systems(&self) -> impl Iterator<Item = &System> {
        self.state.systems.values().filter(|s| self.sees_system(s))
    }

    fn devices(&self) -> impl Iterator<Item = &Device> {
        self.state.devices.values().filter(|d| self.sees_device(d))
    }

    /// An operation the principal may see.
    fn operation(&self, op: u64) -> Option<&Operation> {
        let operation = self.state.operation(op.into())?;
        match self.scope() {
            None => Some(operation),
            Some(_) => self.system(&operation.system).map(|_| operation),
        }
    }
}

/// A resource and its version (the ETag of versioned resources; others hash their body).
pub(crate) struct Built {
    pub value: Value,
    pub version: Option<u64>,
}

fn plain(value: Value) -> Result<Built, RfError> {
    Ok(Built {
        value,
        version: None,
    })
}

/// Builds the resource at `route` for `lens`; 404 when it is not there (or not the
/// principal's to see).
pub(crate) fn build(lens: &Lens, route: &Route, path: &str) -> Result<Built, RfError> {
    let missing = || RfError::not_found(path);
    use Route as R;
    match route {
        R::Root => plain(service_root(lens)),
        R::Odata => plain(super::metadata::odata()),
        R::Systems => plain(systems(lens)),
        R::SystemCapabilities => plain(system_capabilities()),
        R::System(name) => {
            let system = lens.system(name).ok_or_else(missing)?;
            Ok(Built {
                value: system_resource(lens, system),
                version: Some(system.version),
            })
        }
        R::SystemProcessors(name) | R::SystemNetworkInterfaces(name) => {
            let system = lens.system(name).ok_or_else(missing)?;
            plain(system_devices(lens, system, route))
        }
        R::SystemStorage(name) => {
            let system = lens.system(name).ok_or_else(missing)?;
            plain(system_storage(lens, system))
        }
        R::SystemDrives(name) => {
            let system = lens.system(name).ok_or_else(missing)?;
            plain(system_drives(lens, system))
        }
        R::CompositionService => plain(composition_service(lens)),
        R::ComposeActionInfo => plain(compose_action_info()),
        R::ResourceBlocks | R::ActivePool | R::FreePool => plain(blocks(lens, route)),
        R::Block(id) => {
            let device = lens.device(id).ok_or_else(missing)?;
            Ok(Built {
                value: block(lens, device),
                version: Some(device.version),
            })
        }
        R::BlockProcessor(id)
        | R::BlockDrive(id)
        | R::BlockNetworkInterface(id)
        | R::BlockStorage(id)
        | R::BlockControllers(id)
        | R::BlockController(id) => {
            let device = lens.device(id).ok_or_else(missing)?;
            let value = block_part(device, route).ok_or_else(missing)?;
            Ok(Built {
                value,
                version: Some(device.version),
            })
        }
        R::Zones => plain(collection(
            &uri("CompositionService/ResourceZones"),
            "ZoneCollection",
            "Resource Zone Collection",
            vec![uri(&format!("CompositionService/ResourceZones/{ZONE}"))],
        )),
        R::Zone(id) if id == ZONE => plain(zone(lens)),
        R::Reservations => plain(reservations(lens)),
        R::Reservation(id) => plain(reservation(lens, id).ok_or_else(missing)?),
        R::ChassisCollection => plain(collection(
            &uri("Chassis"),
            "ChassisCollection",
            "Chassis Collection",
            vec![
                uri(&format!("Chassis/{APPLIANCE}")),
                uri(&format!("Chassis/{ENCLOSURE}")),
            ],
        )),
        R::Chassis(id) if id == APPLIANCE => plain(appliance_chassis(lens)),
        R::Chassis(id) if id == ENCLOSURE => plain(enclosure_chassis(lens)),
        R::NetworkAdapters => plain(network_adapters(lens)),
        R::NetworkAdapter(id) => {
            let device = lens
                .device(id)
                .filter(|d| d.kind == DeviceKind::Nic)
                .ok_or_else(missing)?;
            Ok(Built {
                value: network_adapter(device),
                version: Some(device.version),
            })
        }
        R::Managers => plain(collection(
            &uri("Managers"),
            "ManagerCollection",
            "Manager Collection",
            vec![uri(&format!("Managers/{APPLIANCE}"))],
        )),
        R::Manager => plain(manager(lens)),
        R::LogServices => plain(collection(
            &uri(&format!("Managers/{APPLIANCE}/LogServices")),
            "LogServiceCollection",
            "Log Service Collection",
            vec![uri(&format!("Managers/{APPLIANCE}/LogServices/{JOURNAL}"))],
        )),
        R::LogService => plain(log_service(lens)),
        R::LogEntry(sequence) => plain(log_entry_at(lens, *sequence).ok_or_else(missing)?),
        R::Fabrics => plain(collection(
            &uri("Fabrics"),
            "FabricCollection",
            "Fabric Collection",
            vec![uri(&format!("Fabrics/{FABRIC}"))],
        )),
        R::Fabric => plain(fabric()),
        R::Switches => plain(collection(
            &uri(&format!("Fabrics/{FABRIC}/Switches")),
            "SwitchCollection",
            "Switch Collection",
            switches(lens.state).iter().map(|s| switch_uri(s)).collect(),
        )),
        R::Switch(id) if switches(lens.state).contains(id.as_str()) => plain(switch(lens, id)),
        R::Ports(id) if switches(lens.state).contains(id.as_str()) => plain(ports(lens, id)),
        R::Port(switch, port) => plain(port_resource(lens, switch, port).ok_or_else(missing)?),
        R::Endpoints => plain(endpoints(lens)),
        R::Endpoint(id) => plain(endpoint(lens, id).ok_or_else(missing)?),
        R::FabricZones => plain(collection(
            &uri(&format!("Fabrics/{FABRIC}/Zones")),
            "ZoneCollection",
            "Fabric Zone Collection",
            lens.systems()
                .map(|s| uri(&format!("Fabrics/{FABRIC}/Zones/{}", s.name)))
                .collect(),
        )),
        R::FabricZone(name) => {
            let system = lens.system(name).ok_or_else(missing)?;
            plain(fabric_zone(lens, system))
        }
        R::TaskService => plain(task_service()),
        R::Tasks => plain(tasks(lens)),
        R::Task(op) => {
            let operation = lens.operation(*op).ok_or_else(missing)?;
            plain(task(operation))
        }
        R::EventService => plain(event_service()),
        R::Subscriptions => plain(subscriptions(lens)),
        R::Subscription(id) => plain(subscription(lens, id).ok_or_else(missing)?),
        R::SessionService => plain(session_service(lens)),
        R::Sessions => plain(sessions(lens)),
        R::Session(id) => plain(session(lens, id).ok_or_else(missing)?),
        R::AccountService => plain(account_service(lens)),
        R::Accounts => plain(accounts(lens)),
        R::Account(name) => {
            let account = visible_account(lens, name).ok_or_else(missing)?;
            Ok(Built {
                value: account_resource(lens, account),
                version: Some(account.version),
            })
        }
        R::Roles => plain(collection(
            &uri("AccountService/Roles"),
            "RoleCollection",
            "Role Collection",
            crate::model::AccountRole::ALL
                .iter()
                .map(|r| uri(&format!("AccountService/Roles/{}", r.name())))
                .collect(),
        )),
        R::Role(name) => {
            let role: crate::model::AccountRole = name.parse().map_err(|_| missing())?;
            if role.name() != name {
                return Err(missing());
            }
            plain(role_resource(role))
        }
        R::DirectoryCertificates(kind) => plain(super::directory::certificates(lens, *kind)),
        R::DirectoryCertificate(kind, id) => {
            plain(super::directory::certificate(lens, *kind, id).ok_or_else(missing)?)
        }
        R::AppliancePing => plain(json!({"Ping": "pong"})),
        _ => Err(missing()),
    }
}

fn service_root(lens: &Lens) -> Value {
    let mut root = resource(
        "/redfish/v1/",
        types::SERVICE_ROOT,
        "RootService",
        "Root Service",
    );
    let extra = json!({
        "RedfishVersion": "1.20.0",
        "UUID": lens.service.uuid,
        "Vendor": "Composable-infrastructure appliance",
        "Product": "Composable-infrastructure appliance",
        "ProtocolFeaturesSupported": super::query::features(),
        "Systems": link(&uri("Systems")),
        "Chassis": link(&uri("Chassis")),
        "Managers": link(&uri("Managers")),
        "CompositionService": link(&uri("CompositionService")),
        "Fabrics": link(&uri("Fabrics")),
        "Tasks": link(&uri("TaskService")),
        "EventService": link(&uri("EventService")),
        "SessionService": link(&uri("SessionService")),
        "AccountService": link(&uri("AccountService")),
        "Links": {"Sessions": link(&uri("SessionService/Sessions"))},
    });
    merge(&mut root, extra);
    Value::Object(root)
}

fn merge(into: &mut Map<String, Value>, extra: Value) {
    if let Value::Object(extra) = extra {
        into.extend(extra);
    }
}

/// The capabilities clients read before they compose (`@Redfish.CollectionCapabilities`).
fn collection_capabilities() -> Value {
    json!({
        "@odata.type": types::COLLECTION_CAPABILITIES,
        "Capabilities": [{
            "CapabilitiesObject": link(&uri("Systems/Capabilities")),
            "UseCase": "ComputerSystemComposition",
            "Links": {
                "TargetCollection": link(&uri("Systems")),
                "RelatedItem": [link(&uri(&format!("CompositionService/ResourceZones/{ZONE}")))],
            },
        }],
    })
}

fn systems(lens: &Lens) -> Value {
    let mut value = collection(
        &uri("Systems"),
        "ComputerSystemCollection",
        "Computer System Collection",
        lens.systems().map(|s| system_uri(&s.name)).collect(),
    );
    value["@Redfish.CollectionCapabilities"] = collection_capabilities();
    value
}

fn system_capabilities() -> Value {
    json!({
        "@odata.id": uri("Systems/Capabilities"),
        "@odata.type": types::SYSTEM,
        "Id": "Capabilities",
        "Name": "Capabilities for composing a system",
        "Name@Redfish.RequiredOnCreate": true,
        "Name@Redfish.SetOnlyOnCreate": true,
        "Description@Redfish.OptionalOnCreate": true,
        "Description@Redfish.SetOnlyOnCreate": true,
        "Links@Redfish.RequiredOnCreate": true,
        "Links": {
            "ResourceBlocks@Redfish.RequiredOnCreate": true,
            "ResourceBlocks@Redfish.UpdatableAfterCreate": true,
        },
        "@Redfish.ResourceBlockLimits": {
            "MinProcessor": 0,
            "MaxProcessor": crate::model::domain::SYSTEM_GPUS_MAX,
            "MaxStorage": crate::model::domain::SYSTEM_DEVICES_MAX,
            "MaxNetwork": crate::model::domain::SYSTEM_DEVICES_MAX,
        },
    })
}

/// A system's state: `Starting` while an operation adds devices, `Enabled` when all are
/// attached, health the worst of its devices'.
fn system_status(lens: &Lens, system: &System) -> Value {
    let busy = system
        .devices
        .values()
        .any(|a| a.state != AttachState::Attached);
    let health = system
        .devices
        .keys()
        .filter_map(|id| lens.state.devices.get(id))
        .map(|d| match d.health {
            Health::Ok => 0,
            Health::Degraded(_) => 1,
            Health::Failed(_) => 2,
        })
        .max()
        .unwrap_or(0);
    let conditions = system
        .devices
        .keys()
        .flat_map(|id| conditions(lens, id, Some(&block_uri(id))))
        .collect();
    let status = json!({
        "State": if busy { "Starting" } else { "Enabled" },
        "Health": (["OK", "Warning", "Critical"][health]),
    });
    with_conditions(status, conditions)
}

/// The active alarms of `device` as Redfish Conditions (DSP0268 Resource.Condition), each with
/// the journal entry that raised it; `origin` when the resource shown is not the device itself.
fn conditions(lens: &Lens, device: &DeviceId, origin: Option<&str>) -> Vec<Value> {
    lens.state
        .alarms_of(device)
        .map(|alarm| {
            let (severity, message_id) = match alarm.severity {
                Severity::Critical => ("Critical", "ResourceEvent.1.4.ResourceStatusChangedCritical"),
                Severity::Warning => ("Warning", "ResourceEvent.1.4.ResourceStatusChangedWarning"),
            };
            let failover = match alarm.failover {
                Some(op) => format!("; failover: operation {op}"),
                None => String::new(),
            };
            let mut condition = json!({
                "MessageId": message_id,
                "MessageArgs": [alarm.device.as_str(), severity],
                "Message": format!("alarm {} on {}: {} (evidence: {}){failover}", alarm.id, alarm.device, alarm.message, alarm.evidence),
                "Severity": severity,
                "Timestamp": rfc3339(alarm.at_ms),
                "LogEntry": link(&uri(&format!("Managers/{APPLIANCE}/LogServices/{JOURNAL}/Entries/{}", alarm.raised_at))),
                "Resolution": "Replace or repair the device, then return it to service (appliance ctl service DEVICE --in) or clear the alarm (appliance ctl clear-alarm ID).",
            });
            if let Some(origin) = origin {
                condition["OriginOfCondition"] = link(origin);
            }
            condition
        })
        .collect()
}

fn with_conditions(mut status: Value, conditions: Vec<Value>) -> Value {
    if !conditions.is_empty() {
        status["Conditions"] = Value::Array(conditions);
    }
    status
}

/// A stable UUID for a name, from the service's UUID (RFC 4122 version 8 layout, name-based).
pub fn derived_uuid(base: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{base}/{name}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = crate::api::auth::hex(&bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

pub(crate) fn system_resource(lens: &Lens, system: &System) -> Value {
    let self_uri = system_uri(&system.name);
    let mut value = resource(&self_uri, types::SYSTEM, &system.name, &system.name);
    let kinds: BTreeSet<DeviceKind> = system
        .devices
        .keys()
        .filter_map(|id| lens.state.devices.get(id))
        .map(|d| d.kind)
        .collect();
    let mut extra = json!({
        "Description": format!("Composed system {} (tenant {}, role {})", system.name, system.tenant, system.role),
        "SystemType": "Composed",
        "UUID": derived_uuid(&lens.service.uuid, &system.name),
        "PowerState": "On",
        "Status": system_status(lens, system),
        "Links": {
            "ResourceBlocks": links(system.devices.keys().map(|d| block_uri(d))),
            "Chassis": [link(&uri(&format!("Chassis/{ENCLOSURE}")))],
            "ManagedBy": [link(&uri(&format!("Managers/{APPLIANCE}")))],
        },
        "Actions": {
            "#ComputerSystem.AddResourceBlock": {
                "target": format!("{self_uri}/Actions/ComputerSystem.AddResourceBlock"),
            },
            "#ComputerSystem.RemoveResourceBlock": {
                "target": format!("{self_uri}/Actions/ComputerSystem.RemoveResourceBlock"),
            },
        },
    });
    if let Some(object) = extra.as_object_mut() {
        if kinds.contains(&DeviceKind::Gpu) {
            object.insert("Processors".into(), link(&format!("{self_uri}/Processors")));
        }
        if kinds.contains(&DeviceKind::Nvme) || kinds.contains(&DeviceKind::Hba) {
            object.insert("Storage".into(), link(&format!("{self_uri}/Storage")));
        }
        if kinds.contains(&DeviceKind::Nic) {
            object.insert(
                "NetworkInterfaces".into(),
                link(&format!("{self_uri}/NetworkInterfaces")),
            );
        }
    }
    merge(&mut value, extra);
    Value::Object(value)
}

fn members_of<'a>(
    lens: &'a Lens,
    system: &'a System,
    kind: DeviceKind,
) -> impl Iterator<Item = &'a Device> {
    system
        .devices
        .keys()
        .filter_map(|id| lens.state.devices.get(id))
        .filter(move |d| d.kind == kind)
}

fn system_devices(lens: &Lens, system: &System, route: &Route) -> Value {
    let (kind, what, type_name, name) = match route {
        Route::SystemProcessors(_) => (
            DeviceKind::Gpu,
            "Processors",
            "ProcessorCollection",
            "Processor Collection",
        ),
        _ => (
            DeviceKind::Nic,
            "NetworkInterfaces",
            "NetworkInterfaceCollection",
            "Network Interface Collection",
        ),
    };
    collection(
        &format!("{}/{what}", system_uri(&system.name)),
        type_name,
        name,
        members_of(lens, system, kind)
            .filter_map(device_uri)
            .collect(),
    )
}

fn system_storage(lens: &Lens, system: &System) -> Value {
    let base = system_uri(&system.name);
    let mut members = Vec::new();
    if members_of(lens, system, DeviceKind::Nvme).next().is_some() {
        members.push(format!("{base}/Storage/NVMe"));
    }
    members.extend(members_of(lens, system, DeviceKind::Hba).filter_map(device_uri));
    collection(
        &format!("{base}/Storage"),
        "StorageCollection",
        "Storage Collection",
        members,
    )
}

fn system_drives(lens: &Lens, system: &System) -> Value {
    let drives: Vec<String> = members_of(lens, system, DeviceKind::Nvme)
        .filter_map(device_uri)
        .collect();
    json!({
        "@odata.id": format!("{}/Storage/NVMe", system_uri(&system.name)),
        "@odata.type": types::STORAGE,
        "Id": "NVMe",
        "Name": format!("Composed NVMe drives of {}", system.name),
        "Status": enabled(),
        "Drives@odata.count": drives.len(),
        "Drives": links(drives),
    })
}

fn composition_service(lens: &Lens) -> Value {
    json!({
        "@odata.id": uri("CompositionService"),
        "@odata.type": types::COMPOSITION_SERVICE,
        "Id": "CompositionService",
        "Name": "Composition Service",
        "Status": enabled(),
        "ServiceEnabled": true,
        "AllowOverprovisioning": true,
        "AllowZoneAffinity": true,
        "ResourceBlocks": link(&uri("CompositionService/ResourceBlocks")),
        "ResourceZones": link(&uri("CompositionService/ResourceZones")),
        "ActivePool": link(&uri("CompositionService/ActivePool")),
        "FreePool": link(&uri("CompositionService/FreePool")),
        "CompositionReservations": link(&uri("CompositionService/CompositionReservations")),
        "ReservationDuration": format!("PT{}S", lens.service.config.reservation_s),
        "Actions": {
            "#CompositionService.Compose": {
                "target": uri("CompositionService/Actions/CompositionService.Compose"),
                "@Redfish.ActionInfo": uri("CompositionService/ComposeActionInfo"),
            },
        },
    })
}

fn compose_action_info() -> Value {
    json!({
        "@odata.id": uri("CompositionService/ComposeActionInfo"),
        "@odata.type": types::ACTION_INFO,
        "Id": "ComposeActionInfo",
        "Name": "Compose Action Info",
        "Parameters": [
            {"Name": "RequestFormat", "Required": true, "DataType": "String", "AllowableValues": ["Manifest"]},
            {"Name": "RequestType", "Required": true, "DataType": "String", "AllowableValues": ["Preview", "PreviewReserve", "Apply"]},
            {"Name": "Manifest", "Required": false, "DataType": "Object", "ObjectDataType": "#Manifest.v1_1_2.Manifest"},
            {"Name": "ReservationId", "Required": false, "DataType": "String"},
        ],
    })
}

fn blocks(lens: &Lens, route: &Route) -> Value {
    let (path, name) = match route {
        Route::ActivePool => ("CompositionService/ActivePool", "Active Pool"),
        Route::FreePool => ("CompositionService/FreePool", "Free Pool"),
        _ => (
            "CompositionService/ResourceBlocks",
            "Resource Block Collection",
        ),
    };
    let members = lens
        .devices()
        .filter(|d| match route {
            Route::ActivePool => d.holder.is_some(),
            Route::FreePool => d.holder.is_none(),
            _ => true,
        })
        .map(|d| block_uri(&d.id))
        .collect();
    collection(&uri(path), "ResourceBlockCollection", name, members)
}

fn block_type(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Gpu => "Processor",
        DeviceKind::Nvme | DeviceKind::Hba => "Storage",
        DeviceKind::Nic => "Network",
        DeviceKind::Other => "Expansion",
    }
}

fn device_name(device: &Device) -> String {
    let what = match device.kind {
        DeviceKind::Gpu => "GPU",
        DeviceKind::Nvme => "NVMe drive",
        DeviceKind::Nic if device.rdma => "RDMA NIC",
        DeviceKind::Nic => "NIC",
        DeviceKind::Hba => "SAS HBA",
        DeviceKind::Other => "PCIe device",
    };
    format!("{what} {} ({})", device.id, device.model)
}

/// A block's composition state, from its device.
fn composition_state(lens: &Lens, device: &Device) -> &'static str {
    let attachment = device
        .holder
        .as_ref()
        .and_then(|h| lens.state.systems.get(h))
        .and_then(|s| s.devices.get(&device.id));
    match attachment.map(|a| a.state) {
        Some(AttachState::Attached) => "Composed",
        Some(AttachState::Attaching | AttachState::Detaching) => "Composing",
        None if matches!(device.health, Health::Failed(_)) => "Failed",
        None if device.is_available() || device.reservation.is_some() => "Unused",
        None => "Unavailable",
    }
}

pub(crate) fn block(lens: &Lens, device: &Device) -> Value {
    let self_uri = block_uri(&device.id);
    let mut value = resource(
        &self_uri,
        types::RESOURCE_BLOCK,
        &device.id,
        &device_name(device),
    );
    let part = match device.kind {
        DeviceKind::Gpu => Some("Processors"),
        DeviceKind::Nvme => Some("Drives"),
        DeviceKind::Nic => Some("NetworkInterfaces"),
        DeviceKind::Hba => Some("Storage"),
        DeviceKind::Other => None,
    };
    merge(
        &mut value,
        json!({
            "ResourceBlockType": [block_type(device.kind)],
            "Status": with_conditions(device_status(device), conditions(lens, &device.id, None)),
            "CompositionStatus": {
                "Reserved": device.reservation.is_some(),
                "CompositionState": composition_state(lens, device),
                "SharingCapable": false,
                "MaxCompositions": 1,
                "NumberOfCompositions": usize::from(device.holder.is_some()),
            },
            "Pool": if device.holder.is_some() { "Active" } else { "Free" },
            "Links": {
                "ComputerSystems": links(device.holder.iter().map(|h| system_uri(h))),
                "Chassis": [link(&uri(&format!("Chassis/{ENCLOSURE}")))],
                "Zones": [link(&uri(&format!("CompositionService/ResourceZones/{ZONE}")))],
            },
        }),
    );
    if let (Some(part), Some(target)) = (part, device_uri(device)) {
        value.insert(part.into(), json!([link(&target)]));
    }
    Value::Object(value)
}

fn device_links(device: &Device) -> Value {
    json!({
        "Chassis": link(&uri(&format!("Chassis/{ENCLOSURE}"))),
        "Endpoints": [link(&endpoint_uri(&device.id))],
    })
}

fn block_part(device: &Device, route: &Route) -> Option<Value> {
    let id = device.id.as_str();
    let name = device_name(device);
    let status = device_status(device);
    let own = device_uri(device)?;
    Some(match (route, device.kind) {
        (Route::BlockProcessor(_), DeviceKind::Gpu) => json!({
            "@odata.id": own, "@odata.type": types::PROCESSOR, "Id": id, "Name": name,
            "ProcessorType": "GPU",
            "Manufacturer": vendor(device.vendor_id),
            "Model": device.model, "SerialNumber": device.serial, "FirmwareVersion": device.firmware,
            "ProcessorMemory": [{"MemoryType": "GDDR", "IntegratedMemory": true, "CapacityMiB": device.capacity_bytes >> 20}],
            "Status": status, "Links": device_links(device),
        }),
        (Route::BlockDrive(_), DeviceKind::Nvme) => json!({
            "@odata.id": own, "@odata.type": types::DRIVE, "Id": id, "Name": name,
            "Protocol": "NVMe", "MediaType": "SSD", "CapacityBytes": device.capacity_bytes,
            "Manufacturer": vendor(device.vendor_id), "Model": device.model,
            "SerialNumber": device.serial, "Revision": device.firmware,
            "Status": status, "Links": device_links(device),
        }),
        (Route::BlockNetworkInterface(_), DeviceKind::Nic) => json!({
            "@odata.id": own, "@odata.type": types::NETWORK_INTERFACE, "Id": id, "Name": name,
            "Status": status,
            "Links": {"NetworkAdapter": link(&uri(&format!("Chassis/{ENCLOSURE}/NetworkAdapters/{id}")))},
        }),
        (Route::BlockStorage(_), DeviceKind::Hba) => json!({
            "@odata.id": own, "@odata.type": types::STORAGE, "Id": id, "Name": name,
            "Status": status, "Controllers": link(&format!("{own}/Controllers")),
        }),
        (Route::BlockControllers(_), DeviceKind::Hba) => collection(
            &format!("{own}/Controllers"),
            "StorageControllerCollection",
            "Storage Controller Collection",
            vec![format!("{own}/Controllers/0")],
        ),
        (Route::BlockController(_), DeviceKind::Hba) => json!({
            "@odata.id": format!("{own}/Controllers/0"), "@odata.type": types::STORAGE_CONTROLLER,
            "Id": "0", "Name": format!("{name} controller"),
            "Manufacturer": vendor(device.vendor_id), "Model": device.model,
            "SerialNumber": device.serial, "FirmwareVersion": device.firmware,
            "SupportedControllerProtocols": ["PCIe"], "SupportedDeviceProtocols": ["SAS", "SATA"],
            "Status": status,
        }),
        _ => return None,
    })
}

fn zone(lens: &Lens) -> Value {
    json!({
        "@odata.id": uri(&format!("CompositionService/ResourceZones/{ZONE}")),
        "@odata.type": types::ZONE,
        "Id": ZONE,
        "Name": "The PCIe fabric's pool",
        "ZoneType": "ZoneOfResourceBlocks",
        "Status": enabled(),
        "Links": {"ResourceBlocks": links(lens.devices().map(|d| block_uri(&d.id)))},
        "@Redfish.CollectionCapabilities": collection_capabilities(),
    })
}

fn reservations(lens: &Lens) -> Value {
    collection(
        &uri("CompositionService/CompositionReservations"),
        "CompositionReservationCollection",
        "Composition Reservation Collection",
        lens.state
            .reservations
            .keys()
            .map(|id| uri(&format!("CompositionService/CompositionReservations/{id}")))
            .collect(),
    )
}

/// A reservation, with its manifest cut to each stanza's type and id (the validator refuses
/// the open types of a full manifest).
fn reservation(lens: &Lens, id: &str) -> Option<Value> {
    let reservation = lens.state.reservations.get(id)?;
    let manifest: Value = serde_json::from_str(&reservation.manifest).unwrap_or(Value::Null);
    let stanzas: Vec<Value> = manifest["Stanzas"]
        .as_array()
        .map(|stanzas| {
            stanzas
                .iter()
                .map(|s| json!({"StanzaType": s["StanzaType"], "StanzaId": s["StanzaId"]}))
                .collect()
        })
        .unwrap_or_default();
    Some(json!({
        "@odata.id": uri(&format!("CompositionService/CompositionReservations/{id}")),
        "@odata.type": types::RESERVATION,
        "Id": id,
        "Name": format!("Composition reservation {id}"),
        "ReservationTime": rfc3339(reservation.created_ms),
        "Client": reservation.client.as_str(),
        "ReservedResourceBlocks": links(reservation.devices.iter().map(|d| block_uri(d))),
        "Manifest": {
            "Description": format!("held until {}", rfc3339(reservation.expires_ms)),
            "Timestamp": rfc3339(reservation.created_ms),
            "Expand": "None",
            "Stanzas": stanzas,
        },
    }))
}

fn appliance_chassis(lens: &Lens) -> Value {
    let identity = &lens.state.identity;
    json!({
        "@odata.id": uri(&format!("Chassis/{APPLIANCE}")),
        "@odata.type": types::CHASSIS,
        "Id": APPLIANCE,
        "Name": format!("Appliance {}", identity.appliance_id),
        "ChassisType": "RackMount",
        "Manufacturer": "Composable-infrastructure appliance",
        "Model": "Composition appliance",
        "SerialNumber": identity.appliance_id,
        "Location": {"PostalAddress": {"Name": identity.site}},
        "PowerState": "On",
        "Status": enabled(),
        "Links": {
            "ManagedBy": [link(&uri(&format!("Managers/{APPLIANCE}")))],
            "ManagersInChassis": [link(&uri(&format!("Managers/{APPLIANCE}")))],
        },
    })
}

fn enclosure_chassis(lens: &Lens) -> Value {
    json!({
        "@odata.id": uri(&format!("Chassis/{ENCLOSURE}")),
        "@odata.type": types::CHASSIS,
        "Id": ENCLOSURE,
        "Name": "PCIe fabric enclosure",
        "ChassisType": "Enclosure",
        "PowerState": "On",
        "Status": enabled(),
        "NetworkAdapters": link(&uri(&format!("Chassis/{ENCLOSURE}/NetworkAdapters"))),
        "Links": {
            "ManagedBy": [link(&uri(&format!("Managers/{APPLIANCE}")))],
            "ComputerSystems": links(lens.systems().map(|s| system_uri(&s.name))),
            "Switches": links(switches(lens.state).iter().map(|s| switch_uri(s))),
            "ResourceBlocks": links(lens.devices().map(|d| block_uri(&d.id))),
        },
    })
}

fn network_adapters(lens: &Lens) -> Value {
    collection(
        &uri(&format!("Chassis/{ENCLOSURE}/NetworkAdapters")),
        "NetworkAdapterCollection",
        "Network Adapter Collection",
        lens.devices()
            .filter(|d| d.kind == DeviceKind::Nic)
            .map(|d| uri(&format!("Chassis/{ENCLOSURE}/NetworkAdapters/{}", d.id)))
            .collect(),
    )
}

fn network_adapter(device: &Device) -> Value {
    json!({
        "@odata.id": uri(&format!("Chassis/{ENCLOSURE}/NetworkAdapters/{}", device.id)),
        "@odata.type": types::NETWORK_ADAPTER,
        "Id": device.id.as_str(),
        "Name": device_name(device),
        "Manufacturer": vendor(device.vendor_id),
        "Model": device.model,
        "SerialNumber": device.serial,
        "Status": device_status(device),
    })
}

fn manager(lens: &Lens) -> Value {
    let metrics = lens.service.context.core.metrics();
    let start = &lens.service.context.start;
    let state = lens.state;
    json!({
        "@odata.id": uri(&format!("Managers/{APPLIANCE}")),
        "@odata.type": types::MANAGER,
        "Id": APPLIANCE,
        "Name": format!("Appliance {} at {}", state.identity.appliance_id, state.identity.site),
        "ManagerType": "Service",
        "Manufacturer": "Composable-infrastructure appliance",
        "Model": "Composition appliance",
        "FirmwareVersion": lens.service.config.firmware_version,
        "UUID": lens.service.uuid,
        "ServiceEntryPointUUID": lens.service.uuid,
        "PowerState": "On",
        "Status": enabled(),
        "LogServices": link(&uri(&format!("Managers/{APPLIANCE}/LogServices"))),
        "Links": {
            "ManagerForChassis": [link(&uri(&format!("Chassis/{APPLIANCE}"))), link(&uri(&format!("Chassis/{ENCLOSURE}")))],
            "ManagerInChassis": link(&uri(&format!("Chassis/{APPLIANCE}"))),
            "ManagerForSwitches": links(switches(state).iter().map(|s| switch_uri(s))),
            "ManagerForServers": links(lens.systems().map(|s| system_uri(&s.name))),
        },
        "Actions": {
            "#Manager.Reset": {
                "target": uri(&format!("Managers/{APPLIANCE}/Actions/Manager.Reset")),
                "ResetType@Redfish.AllowableValues": ["GracefulRestart"],
            },
        },
        "Oem": {"Appliance": {
            "@odata.type": "#ApplianceManager.v1_0_0.ApplianceManager",
            "JournalHead": state.head,
            "EventsReplayedAtStart": start.events_replayed,
            "ReplayMilliseconds": start.replay_ms,
            "Batches": metrics.batches,
            "EventsAppended": metrics.events_appended,
            "AppendLatencyP99Microseconds": metrics.append.summary().p99_us,
        }},
    })
}

fn log_service(lens: &Lens) -> Value {
    json!({
        "@odata.id": uri(&format!("Managers/{APPLIANCE}/LogServices/{JOURNAL}")),
        "@odata.type": types::LOG_SERVICE,
        "Id": JOURNAL,
        "Name": "The appliance's journal",
        "Description": format!("Every event of the appliance's durable journal ({} events)", lens.state.head),
        "ServiceEnabled": true,
        "OverWritePolicy": "NeverOverWrites",
        "LogEntryType": "Event",
        "LogPurposes": ["Operations"],
        "Status": enabled(),
        "Entries": link(&uri(&format!("Managers/{APPLIANCE}/LogServices/{JOURNAL}/Entries"))),
    })
}

/// The ResourceEvent message that fits an event: created, removed or changed.
fn event_message(event: &Event) -> &'static str {
    match event {
        Event::TenantCreated { .. }
        | Event::SystemCreated { .. }
        | Event::AccountCreated { .. }
        | Event::SessionOpened { .. }
        | Event::SubscriptionCreated { .. }
        | Event::ReservationMade { .. }
        | Event::DeviceDiscovered { .. } => "ResourceEvent.1.4.ResourceCreated",
        Event::SystemDeleted { .. }
        | Event::AccountDeleted { .. }
        | Event::SessionClosed { .. }
        | Event::SubscriptionDeleted { .. }
        | Event::ReservationEnded { .. }
        | Event::DeviceVanished { .. } => "ResourceEvent.1.4.ResourceRemoved",
        Event::AlarmRaised { severity, .. } => match severity {
            Severity::Critical => "ResourceEvent.1.4.ResourceStatusChangedCritical",
            Severity::Warning => "ResourceEvent.1.4.ResourceStatusChangedWarning",
        },
        Event::AlarmEnded { .. } => "ResourceEvent.1.4.ResourceStatusChangedOK",
        _ => "ResourceEvent.1.4.ResourceChanged",
    }
}

fn event_severity(event: &Event) -> &'static str {
    match event {
        Event::AlarmRaised { severity, .. } => match severity {
            Severity::Critical => "Critical",
            Severity::Warning => "Warning",
        },
        Event::HealthChanged { health, .. } => match health {
            Health::Ok => "OK",
            Health::Degraded(_) => "Warning",
            Health::Failed(_) => "Critical",
        },
        Event::DeviceVanished { .. } => "Warning",
        other if other.failure().is_some() => "Warning",
        _ => "OK",
    }
}

/// The resource an event is about, when it still exists.
pub(crate) fn event_origin(lens: &Lens, event: &Event) -> Option<String> {
    if let Some(system) = event.system() {
        return lens.system(system).map(|_| system_uri(system));
    }
    if let Some(device) = event.devices().first() {
        return lens.device(device).map(|_| block_uri(device));
    }
    if let Some(op) = event.outcome_of() {
        return lens.operation(op.0).map(|o| task_uri(o.id.0));
    }
    event
        .account()
        .and_then(|a| visible_account(lens, a.as_str()))
        .map(|a| account_uri(a.name.as_str()))
}

/// Whether a tenant's principal may see an event (those about its systems, or about none).
pub(crate) fn sees_event(lens: &Lens, event: &Event) -> bool {
    if lens.scope().is_none() {
        return true;
    }
    match event.system() {
        Some(system) => lens.system(system).is_some(),
        None => {
            event.account().is_none() && event.devices().is_empty() && event.outcome_of().is_none()
        }
    }
}

pub(crate) fn log_entry(lens: &Lens, logged: &Logged) -> Value {
    let event = &logged.event;
    let mut entry = json!({
        "@odata.id": uri(&format!("Managers/{APPLIANCE}/LogServices/{JOURNAL}/Entries/{}", logged.sequence)),
        "@odata.type": types::LOG_ENTRY,
        "Id": logged.sequence.to_string(),
        "Name": format!("Journal event {}", logged.sequence),
        "EntryType": "Event",
        "Severity": event_severity(event),
        "Created": rfc3339(logged.timestamp_ms),
        "Message": crate::api::views::summary(event),
        "MessageId": event_message(event),
        "MessageArgs": event_args(event),
        "EventId": logged.sequence.to_string(),
    });
    match event_origin(lens, event) {
        Some(origin) => entry["Links"] = json!({"OriginOfCondition": link(&origin)}),
        None => entry["OriginOfConditionUnavailable"] = Value::Bool(true),
    }
    entry
}

/// The arguments of an event's message (the status-changed messages name the resource and its
/// new health).
fn event_args(event: &Event) -> Vec<String> {
    match event {
        Event::AlarmRaised { device, .. } => {
            vec![device.to_string(), event_severity(event).to_string()]
        }
        Event::AlarmEnded { device, .. } => vec![device.to_string(), "OK".into()],
        _ => Vec::new(),
    }
}

fn log_entry_at(lens: &Lens, sequence: u64) -> Option<Value> {
    let logged = lens.service.context.log.read(sequence).ok()??;
    sees_event(lens, &logged.event).then(|| log_entry(lens, &logged))
}

/// The journal's entries, newest first, a page at a time (`$skip`, `$top`; each entry is
/// embedded, as `LogEntryCollection.Members` auto-expands).
pub(crate) fn log_entries(lens: &Lens, skip: usize, top: usize) -> Value {
    let head = lens.state.head;
    let mut members = Vec::new();
    let mut sequence = head;
    let mut skipped = 0;
    while sequence > 0 && members.len() < top {
        if let Ok(Some(logged)) = lens.service.context.log.read(sequence) {
            if sees_event(lens, &logged.event) {
                if skipped < skip {
                    skipped += 1;
                } else {
                    members.push(log_entry(lens, &logged));
                }
            }
        }
        sequence -= 1;
    }
    let entries_uri = uri(&format!(
        "Managers/{APPLIANCE}/LogServices/{JOURNAL}/Entries"
    ));
    let count = if lens.scope().is_none() {
        head as usize
    } else {
        skip + members.len() + usize::from(sequence > 0)
    };
    let mut value = json!({
        "@odata.id": entries_uri,
        "@odata.type": "#LogEntryCollection.LogEntryCollection",
        "Name": "Journal Entries",
        "Members@odata.count": count,
        "Members": members,
    });
    if sequence > 0 {
        value["Members@odata.nextLink"] =
            Value::String(format!("{entries_uri}?$skip={}&$top={top}", skip + top));
    }
    value
}

fn fabric() -> Value {
    let base = uri(&format!("Fabrics/{FABRIC}"));
    json!({
        "@odata.id": base,
        "@odata.type": types::FABRIC,
        "Id": FABRIC,
        "Name": "PCIe fabric",
        "FabricType": "PCIe",
        "Status": enabled(),
        "Switches": link(&format!("{base}/Switches")),
        "Endpoints": link(&format!("{base}/Endpoints")),
        "Zones": link(&format!("{base}/Zones")),
    })
}

/// The switches the fabric reports (of ports and devices).
fn switches(state: &State) -> BTreeSet<&str> {
    state
        .ports
        .values()
        .map(|p| p.switch.as_str())
        .chain(state.devices.values().map(|d| d.switch.as_str()))
        .filter(|s| !s.is_empty())
        .collect()
}

fn switch(lens: &Lens, id: &str) -> Value {
    json!({
        "@odata.id": switch_uri(id),
        "@odata.type": types::SWITCH,
        "Id": id,
        "Name": format!("PCIe switch {id}"),
        "SwitchType": "PCIe",
        "Status": enabled(),
        "Ports": link(&format!("{}/Ports", switch_uri(id))),
        "Links": {
            "Chassis": link(&uri(&format!("Chassis/{ENCLOSURE}"))),
            "ManagedBy": [link(&uri(&format!("Managers/{APPLIANCE}")))],
            "Endpoints": links(lens.devices().filter(|d| d.switch == id).map(|d| endpoint_uri(&d.id))),
        },
    })
}

fn ports(lens: &Lens, switch: &str) -> Value {
    let mut members = vec![port_uri(switch, UPSTREAM_PORT)];
    members.extend(
        lens.state
            .ports
            .values()
            .filter(|p| p.switch == switch)
            .map(|p| port_uri(switch, &p.id.to_string())),
    );
    collection(
        &format!("{}/Ports", switch_uri(switch)),
        "PortCollection",
        "Port Collection",
        members,
    )
}

fn port_resource(lens: &Lens, switch: &str, port: &str) -> Option<Value> {
    if !switches(lens.state).contains(switch) {
        return None;
    }
    if port == UPSTREAM_PORT {
        return Some(json!({
            "@odata.id": port_uri(switch, port), "@odata.type": types::PORT, "Id": port,
            "Name": format!("Upstream port of {switch} toward the appliance server"),
            "PortProtocol": "PCIe", "PortType": "UpstreamPort", "Status": enabled(),
            "Links": {"AssociatedEndpoints": [link(&endpoint_uri(HOST_ENDPOINT))]},
        }));
    }
    let found = lens
        .state
        .ports
        .values()
        .find(|p| p.switch == switch && p.id.to_string() == port)?;
    let endpoints: Vec<String> = found
        .device
        .iter()
        .filter(|d| lens.device(d).is_some())
        .map(|d| endpoint_uri(d))
        .collect();
    Some(json!({
        "@odata.id": port_uri(switch, port), "@odata.type": types::PORT, "Id": port,
        "Name": format!("Downstream port {port} (slot {} of the appliance server)", found.slot),
        "PortId": port, "PortProtocol": "PCIe", "PortType": "DownstreamPort",
        "Status": {"State": if found.device.is_some() { "Enabled" } else { "StandbyOffline" }, "Health": "OK"},
        "Links": {"AssociatedEndpoints": links(endpoints)},
    }))
}

fn endpoints(lens: &Lens) -> Value {
    let mut members = vec![endpoint_uri(HOST_ENDPOINT)];
    members.extend(lens.devices().map(|d| endpoint_uri(&d.id)));
    collection(
        &uri(&format!("Fabrics/{FABRIC}/Endpoints")),
        "EndpointCollection",
        "Endpoint Collection",
        members,
    )
}

fn endpoint(lens: &Lens, id: &str) -> Option<Value> {
    if id == HOST_ENDPOINT {
        let upstream: Vec<String> = switches(lens.state)
            .iter()
            .map(|s| port_uri(s, UPSTREAM_PORT))
            .collect();
        return Some(json!({
            "@odata.id": endpoint_uri(id), "@odata.type": types::ENDPOINT, "Id": id,
            "Name": "The appliance server's root ports",
            "EndpointProtocol": "PCIe",
            "ConnectedEntities": [{"EntityType": "RootComplex", "EntityRole": "Initiator"}],
            "Status": enabled(),
            "Links": {"ConnectedPorts": links(upstream)},
        }));
    }
    let device = lens.device(id)?;
    let entity = match device.kind {
        DeviceKind::Gpu => "Processor",
        DeviceKind::Nvme => "Drive",
        DeviceKind::Nic => "NetworkController",
        DeviceKind::Hba => "StorageInitiator",
        DeviceKind::Other => "PCIeFunction",
    };
    let mut connected = json!({"EntityType": entity, "EntityRole": "Target"});
    if let (Some(target), true) = (device_uri(device), device.kind != DeviceKind::Hba) {
        connected["EntityLink"] = link(&target);
    }
    let port = device
        .port
        .map(|p| port_uri(&device.switch, &p.to_string()));
    Some(json!({
        "@odata.id": endpoint_uri(id), "@odata.type": types::ENDPOINT, "Id": id,
        "Name": format!("Endpoint of {id}"),
        "EndpointProtocol": "PCIe",
        "ConnectedEntities": [connected],
        "Status": device_status(device),
        "Links": {"ConnectedPorts": links(port)},
    }))
}

fn fabric_zone(lens: &Lens, system: &System) -> Value {
    let mut members = vec![endpoint_uri(HOST_ENDPOINT)];
    members.extend(system.devices.keys().map(|d| endpoint_uri(d)));
    json!({
        "@odata.id": uri(&format!("Fabrics/{FABRIC}/Zones/{}", system.name)),
        "@odata.type": types::ZONE,
        "Id": system.name.as_str(),
        "Name": format!("Fabric zone of {}", system.name),
        "ZoneType": "ZoneOfEndpoints",
        "Status": system_status(lens, system),
        "Links": {"Endpoints": links(members)},
    })
}

fn task_service() -> Value {
    json!({
        "@odata.id": uri("TaskService"),
        "@odata.type": types::TASK_SERVICE,
        "Id": "TaskService",
        "Name": "Task Service",
        "ServiceEnabled": true,
        "CompletedTaskOverWritePolicy": "Oldest",
        "LifeCycleEventOnTaskStateChange": true,
        "Status": enabled(),
        "Tasks": link(&uri("TaskService/Tasks")),
    })
}

fn tasks(lens: &Lens) -> Value {
    let state = lens.state;
    let ops = state
        .pending
        .values()
        .chain(state.finished.values())
        .filter(|o| lens.operation(o.id.0).is_some());
    let mut ids: Vec<u64> = ops.map(|o| o.id.0).collect();
    ids.sort_unstable();
    collection(
        &uri("TaskService/Tasks"),
        "TaskCollection",
        "Task Collection",
        ids.into_iter().map(task_uri).collect(),
    )
}

/// Every operation is a task: pending ones run, finished ones completed or failed.
pub(crate) fn task(operation: &Operation) -> Value {
    let view = crate::api::views::OperationView::of(operation);
    let (task_state, status) = match &operation.outcome {
        None => ("Running", "OK"),
        Some(Outcome::Completed) => ("Completed", "OK"),
        Some(Outcome::Failed(_)) => ("Exception", "Critical"),
    };
    let messages: Vec<Value> = view
        .failure
        .iter()
        .map(|f| {
            json!({
                "@odata.type": types::MESSAGE,
                "MessageId": super::messages::OPERATION_FAILED.id(),
                "Message": format!("{} ({})", f.message, f.code),
                "MessageArgs": [],
                "MessageSeverity": "Warning",
                "Resolution": super::messages::OPERATION_FAILED.resolution,
            })
        })
        .collect();
    let what = match &operation.kind {
        OperationKind::Compose { .. } => "Compose",
        OperationKind::Decompose { .. } => "Decompose",
        OperationKind::Mount { .. } => "Mount on",
        OperationKind::Unmount { .. } => "Unmount on",
        OperationKind::Failover { .. } => "Fail over",
    };
    let mut value = json!({
        "@odata.id": task_uri(operation.id.0),
        "@odata.type": types::TASK,
        "Id": operation.id.0.to_string(),
        "Name": format!("{what} {}", operation.system),
        "TaskState": task_state,
        "TaskStatus": status,
        "PercentComplete": if operation.outcome.is_some() { 100 } else { 0 },
        "TaskMonitor": monitor_uri(operation.id.0),
        "HidePayload": true,
        "Messages": messages,
    });
    if matches!(operation.kind, OperationKind::Compose { .. })
        && operation.outcome == Some(Outcome::Completed)
    {
        value["Links"] = json!({"CreatedResources": [link(&system_uri(&operation.system))]});
    }
    value
}

fn event_service() -> Value {
    json!({
        "@odata.id": uri("EventService"),
        "@odata.type": types::EVENT_SERVICE,
        "Id": "EventService",
        "Name": "Event Service",
        "ServiceEnabled": true,
        "Status": enabled(),
        "DeliveryRetryAttempts": super::events::DELIVERY_ATTEMPTS,
        "DeliveryRetryIntervalSeconds": super::events::DELIVERY_RETRY_S,
        "EventFormatTypes": ["Event"],
        "RegistryPrefixes": ["ResourceEvent"],
        "ServerSentEventUri": uri("EventService/SSE"),
        "Subscriptions": link(&uri("EventService/Subscriptions")),
        "Actions": {
            "#EventService.SubmitTestEvent": {
                "target": uri("EventService/Actions/EventService.SubmitTestEvent"),
            },
        },
    })
}

fn subscriptions(lens: &Lens) -> Value {
    collection(
        &uri("EventService/Subscriptions"),
        "EventDestinationCollection",
        "Event Subscriptions",
        lens.state
            .subscriptions
            .values()
            .filter(|s| {
                lens.principal
                    .is_none_or(|p| p.is(&s.account) || p.scope.is_none())
            })
            .map(|s| uri(&format!("EventService/Subscriptions/{}", s.id)))
            .collect(),
    )
}

fn subscription(lens: &Lens, id: &str) -> Option<Value> {
    let subscription = lens.state.subscriptions.get(id).filter(|s| {
        lens.principal
            .is_none_or(|p| p.is(&s.account) || p.scope.is_none())
    })?;
    let delivered = super::events::delivers_to(&lens.service.config, &subscription.destination);
    Some(json!({
        "@odata.id": uri(&format!("EventService/Subscriptions/{id}")),
        "@odata.type": types::EVENT_DESTINATION,
        "Id": id,
        "Name": format!("Event subscription {id}"),
        "Destination": subscription.destination,
        "Context": subscription.context,
        "Protocol": "Redfish",
        "SubscriptionType": "RedfishEvent",
        "EventFormatType": "Event",
        "DeliveryRetryPolicy": "RetryForever",
        "Status": {"State": if delivered { "Enabled" } else { "Disabled" }, "Health": "OK"},
    }))
}

fn session_service(lens: &Lens) -> Value {
    json!({
        "@odata.id": uri("SessionService"),
        "@odata.type": types::SESSION_SERVICE,
        "Id": "SessionService",
        "Name": "Session Service",
        "ServiceEnabled": true,
        "SessionTimeout": lens.service.config.session_timeout_s,
        "Status": enabled(),
        "Sessions": link(&uri("SessionService/Sessions")),
    })
}

/// Its own sessions, or everyone's for an administrator (ConfigureManager).
fn sees_session(lens: &Lens, session: &crate::model::Session) -> bool {
    lens.principal.is_none_or(|p| {
        p.is(&session.account) || (p.has(Privilege::ConfigureManager) && p.scope.is_none())
    })
}

fn sessions(lens: &Lens) -> Value {
    collection(
        &uri("SessionService/Sessions"),
        "SessionCollection",
        "Session Collection",
        lens.state
            .sessions
            .values()
            .filter(|s| sees_session(lens, s))
            .map(|s| session_uri(&s.id))
            .collect(),
    )
}

pub(crate) fn session(lens: &Lens, id: &str) -> Option<Value> {
    let session = lens
        .state
        .sessions
        .get(id)
        .filter(|s| sees_session(lens, s))?;
    Some(json!({
        "@odata.id": session_uri(id),
        "@odata.type": types::SESSION,
        "Id": id,
        "Name": "User Session",
        "UserName": session.account.as_str(),
        "Password": null,
        "SessionType": "Redfish",
        "CreatedTime": rfc3339(session.created_ms),
    }))
}

fn account_service(lens: &Lens) -> Value {
    let config = &lens.service.config;
    json!({
        "@odata.id": uri("AccountService"),
        "@odata.type": types::ACCOUNT_SERVICE,
        "Id": "AccountService",
        "Name": "Account Service",
        "ServiceEnabled": true,
        "Status": enabled(),
        // Local accounts first, then the directory when one is set.
        "LocalAccountAuth": if lens.state.directory.is_some() { "LocalFirst" } else { "Enabled" },
        "HTTPBasicAuth": "Enabled",
        "MinPasswordLength": crate::api::auth::PASSWORD_CHARS_MIN,
        "MaxPasswordLength": crate::api::auth::PASSWORD_CHARS_MAX,
        "PasswordGuidanceMessage": "12 to 128 characters, mixing at least three of: lower case, upper case, digits, other characters.",
        "AccountLockoutThreshold": config.lockout_threshold,
        "AccountLockoutDuration": config.lockout_duration_s,
        "AccountLockoutCounterResetAfter": config.lockout_window_s,
        "AccountLockoutCounterResetEnabled": true,
        "SupportedAccountTypes": ["Redfish"],
        "MultiFactorAuth": {"TimeBasedOneTimePassword": {"Enabled": true}},
        "Accounts": link(&uri("AccountService/Accounts")),
        "Roles": link(&uri("AccountService/Roles")),
        "LDAP": super::directory::provider(lens, DirectoryKind::Ldap),
        "ActiveDirectory": super::directory::provider(lens, DirectoryKind::ActiveDirectory),
        "Oem": super::directory::oem(lens),
    })
}

/// An account the principal may see: its own, or (with ConfigureUsers) those of its tenant.
pub(crate) fn visible_account<'a>(lens: &Lens<'a>, name: &str) -> Option<&'a Account> {
    let account = lens.state.accounts.get(name)?;
    let principal = match lens.principal {
        None => return Some(account),
        Some(principal) => principal,
    };
    let seen = principal.is(&account.name)
        || (principal.has(Privilege::ConfigureUsers)
            && principal
                .scope
                .as_ref()
                .is_none_or(|t| account.tenant.as_ref() == Some(t)));
    seen.then_some(account)
}

fn accounts(lens: &Lens) -> Value {
    collection(
        &uri("AccountService/Accounts"),
        "ManagerAccountCollection",
        "Accounts Collection",
        lens.state
            .accounts
            .keys()
            .filter(|name| visible_account(lens, name.as_str()).is_some())
            .map(|name| account_uri(name.as_str()))
            .collect(),
    )
}

pub(crate) fn account_resource(lens: &Lens, account: &Account) -> Value {
    let now = crate::api::time::now_ms();
    let self_uri = account_uri(account.name.as_str());
    let mut value = json!({
        "@odata.id": self_uri,
        "@odata.type": types::ACCOUNT,
        "Id": account.name.as_str(),
        "Name": "User Account",
        "UserName": account.name.as_str(),
        "Password": null,
        "RoleId": account.role.name(),
        "Enabled": account.enabled,
        "Locked": account.is_locked(now),
        "PasswordChangeRequired": account.password_change_required,
        "AccountTypes": ["Redfish"],
        "SecretKeySet": account.totp.is_some(),
        "Links": {"Role": link(&uri(&format!("AccountService/Roles/{}", account.role.name())))},
        "Actions": {
            "#ManagerAccount.GenerateSecretKey": {"target": format!("{self_uri}/Actions/ManagerAccount.GenerateSecretKey")},
            "#ManagerAccount.ClearSecretKey": {"target": format!("{self_uri}/Actions/ManagerAccount.ClearSecretKey")},
        },
    });
    if let Some(tenant) = &account.tenant {
        value["Description"] = Value::String(format!("An account of tenant {tenant}"));
    }
    let _ = lens;
    value
}

fn role_resource(role: crate::model::AccountRole) -> Value {
    let privileges: Vec<&str> = role.privileges().iter().map(|p| p.name()).collect();
    json!({
        "@odata.id": uri(&format!("AccountService/Roles/{}", role.name())),
        "@odata.type": types::ROLE,
        "Id": role.name(),
        "Name": format!("{} role", role.name()),
        "RoleId": role.name(),
        "IsPredefined": true,
        "AssignedPrivileges": privileges,
        "OemPrivileges": [],
    })
}

/// The strong ETag of a built resource.
pub(crate) fn etag(built: &Built) -> String {
    match built.version {
        Some(version) => format!("\"{version}\""),
        None => {
            let bytes = serde_json::to_vec(&built.value).unwrap_or_default();
            format!(
                "\"{}\"",
                &crate::api::auth::hex(&Sha256::digest(&bytes))[..16]
            )
        }
    }
}

/// Replaces navigation links by the resources they name, `levels` deep.
fn expand(lens: &Lens, value: &mut Value, kind: Expand, levels: u32, in_links: bool) {
    if levels == 0 {
        return;
    }
    match value {
        Value::Object(object) => {
            let is_link = object.len() == 1 && object.contains_key("@odata.id");
            if is_link {
                let wanted = match kind {
                    Expand::All => true,
                    Expand::Links => in_links,
                    Expand::NoLinks => !in_links,
                };
                let target = object["@odata.id"].as_str().unwrap_or_default().to_string();
                if wanted {
                    if let Some(mut inner) =
                        Route::parse(&target).and_then(|r| build(lens, &r, &target).ok())
                    {
                        expand(lens, &mut inner.value, kind, levels - 1, false);
                        *value = inner.value;
                    }
                }
                return;
            }
            for (key, item) in object.iter_mut() {
                if key.starts_with('@') || key == "Actions" {
                    continue;
                }
                expand(lens, item, kind, levels, in_links || key == "Links");
            }
        }
        Value::Array(items) => {
            for item in items {
                expand(lens, item, kind, levels, in_links);
            }
        }
        _ => {}
    }
}

/// The `Link: <schema>; rel=describedby` of a resource type.
fn described_by(value: &Value) -> Option<String> {
    let type_ = value["@odata.type"].as_str()?.trim_start_matches('#');
    let schema = type_
        .rsplit_once('.')
        .map(|(schema, _)| schema)
        .unwrap_or(type_);
    Some(format!(
        "<https://redfish.dmtf.org/schemas/v1/{schema}.json>; rel=describedby"
    ))
}

/// GET and HEAD.
pub(crate) fn get(
    service: &Service,
    principal: Option<&Principal>,
    asked: &Asked,
) -> Result<Response<Body>, RfError> {
    let state = service.context.core.state();
    let lens = Lens::new(&state, principal, service);
    let mut built = match &asked.route {
        Route::LogEntries => {
            let skip = asked.query.skip.unwrap_or(0);
            let top = asked
                .query
                .top
                .unwrap_or(super::query::PAGE_MEMBERS_MAX.min(100));
            Built {
                value: log_entries(&lens, skip, top.min(super::query::PAGE_MEMBERS_MAX)),
                version: None,
            }
        }
        route => build(&lens, route, &asked.path)?,
    };
    let query = &asked.query;
    if let Some(members) = built.value.get_mut("Members").and_then(Value::as_array_mut) {
        if asked.route != Route::LogEntries {
            if let Some(next) = query.page(members) {
                built.value["Members@odata.nextLink"] =
                    Value::String(format!("{}?$skip={next}", asked.path));
            }
        }
    }
    if query.only {
        let only = built.value["Members"]
            .as_array()
            .filter(|m| m.len() == 1)
            .and_then(|m| m[0]["@odata.id"].as_str())
            .map(String::from);
        if let Some(target) = only {
            if let Some(route) = Route::parse(&target) {
                built = build(&lens, &route, &target)?;
            }
        }
    }
    if let Some((kind, levels)) = query.expand {
        expand(&lens, &mut built.value, kind, levels, false);
    }
    if let Some(fields) = &query.select {
        built.value = select(&built.value, fields);
    }
    let tag = etag(&built);
    if let Value::Object(object) = &mut built.value {
        if object.contains_key("@odata.type") && !object.contains_key("Members") {
            object.insert("@odata.etag".into(), Value::String(tag.clone()));
        }
    }
    let allow = asked.route.allow_header();
    let not_modified = asked.header(header::IF_NONE_MATCH).is_some_and(|wanted| {
        wanted
            .split(',')
            .any(|w| w.trim() == tag || w.trim() == "*")
    });
    let mut response = if not_modified {
        empty_response(StatusCode::NOT_MODIFIED)
    } else if asked.method == Method::HEAD {
        let mut response = empty_response(StatusCode::OK);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;charset=utf-8"),
        );
        response
    } else {
        json_response(StatusCode::OK, &built.value)
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&tag) {
        headers.insert(header::ETAG, value);
    }
    if let Ok(value) = HeaderValue::from_str(&allow) {
        headers.insert(header::ALLOW, value);
    }
    if let Some(link) = described_by(&built.value).and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LINK, link);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_uuids_are_stable_and_well_formed() {
        let a = derived_uuid("6a1c3e52-2d4f-4f5e-9d7b-3c1f0e8a9b10", "ws1");
        assert_eq!(
            a,
            derived_uuid("6a1c3e52-2d4f-4f5e-9d7b-3c1f0e8a9b10", "ws1")
        );
        assert_ne!(
            a,
            derived_uuid("6a1c3e52-2d4f-4f5e-9d7b-3c1f0e8a9b10", "ws2")
        );
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
    }

    #[test]
    fn a_schema_link_names_the_unversioned_schema() {
        let value = json!({"@odata.type": "#ComputerSystem.v1_27_0.ComputerSystem"});
        assert_eq!(
            described_by(&value).as_deref(),
            Some("<https://redfish.dmtf.org/schemas/v1/ComputerSystem.v1_27_0.json>; rel=describedby")
        );
        let collection =
            json!({"@odata.type": "#ComputerSystemCollection.ComputerSystemCollection"});
        assert_eq!(
            described_by(&collection).as_deref(),
            Some("<https://redfish.dmtf.org/schemas/v1/ComputerSystemCollection.json>; rel=describedby")
        );
    }

    #[test]
    fn routes_of_the_tree_are_served() {
        // Every route that GET serves has a builder arm (compile-time `match` covers it); this
        // checks the constants the tree is made of parse back.
        for path in [
            uri(&format!("Chassis/{ENCLOSURE}/NetworkAdapters")),
            uri(&format!(
                "Managers/{APPLIANCE}/LogServices/{JOURNAL}/Entries/1"
            )),
            endpoint_uri(HOST_ENDPOINT),
            port_uri("sw0", UPSTREAM_PORT),
        ] {
            assert!(Route::parse(&path).is_some(), "{path}");
        }
    }
}
