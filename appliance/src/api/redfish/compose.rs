//! Composition in Redfish's words (DSP2050), turned into the appliance's compose verb:
//! specific composition (`Links.ResourceBlocks`), constrained composition
//! (`@Redfish.RequestedCount` on `Processors`, `Storage.Drives` and `NetworkInterfaces`
//! members), and the CompositionService's `Compose` action with a manifest of stanzas
//! (`Preview` changes nothing, `PreviewReserve` also holds the devices for a while,
//! `Apply` composes, all or nothing).

use serde_json::{json, Value};

use super::messages::{
    RfError, EMPTY_MANIFEST, PROPERTY_MISSING, PROPERTY_VALUE_FORMAT_ERROR,
    PROPERTY_VALUE_NOT_IN_LIST, PROPERTY_VALUE_TYPE_ERROR, RESOURCE_BLOCK_NOT_FOUND,
    UNABLE_TO_PROCESS_STANZA,
};
use super::resources::{block_uri, types};
use super::routes::{Route, ZONE};
use crate::decide::command::{decide, Command, Decision, NewSystem, Order, Selection, Verb};
use crate::decide::placement::Want;
use crate::model::{DeviceId, DeviceKind, Event, Origin, Role, State, SystemName, TenantName};

/// The tenant a global account's systems go to when the request names none.
pub const DEFAULT_TENANT: &str = "shared";
/// Most stanzas one manifest may hold.
pub const STANZAS_MAX: usize = 16;

fn bad(message: super::messages::Message, args: &[&str]) -> RfError {
    RfError::bad_request(message, args)
}

/// The device a block's URI names.
pub fn block_of(target: &str) -> Option<DeviceId> {
    match Route::parse(target)? {
        Route::Block(id) => Some(id.into()),
        _ => None,
    }
}

/// The devices of a `[{"@odata.id": block}]` array; `property` names it in errors.
pub fn blocks(value: &Value, property: &str) -> Result<Vec<DeviceId>, RfError> {
    let Value::Array(items) = value else {
        return Err(bad(
            PROPERTY_VALUE_TYPE_ERROR,
            &[&value.to_string(), property],
        ));
    };
    items
        .iter()
        .map(|item| {
            let target = item["@odata.id"].as_str().unwrap_or_default();
            block_of(target).ok_or_else(|| {
                RfError::bad_request(
                    RESOURCE_BLOCK_NOT_FOUND,
                    &[if target.is_empty() {
                        "(no @odata.id)"
                    } else {
                        target
                    }],
                )
            })
        })
        .collect()
}

fn count(member: &Value, property: &str) -> Result<u32, RfError> {
    match &member["@Redfish.RequestedCount"] {
        Value::Null => Ok(1),
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=32).contains(n))
            .ok_or_else(|| bad(PROPERTY_VALUE_FORMAT_ERROR, &[&n.to_string(), property])),
        other => Err(bad(
            PROPERTY_VALUE_TYPE_ERROR,
            &[&other.to_string(), property],
        )),
    }
}

fn members<'a>(request: &'a Value, collection: &str) -> Result<&'a [Value], RfError> {
    match &request[collection] {
        Value::Null => Ok(&[]),
        value => value["Members"]
            .as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| {
                bad(
                    PROPERTY_VALUE_TYPE_ERROR,
                    &[&value.to_string(), &format!("{collection}/Members")],
                )
            }),
    }
}

/// The wants of a constrained request (values are minimums: the service overprovisions).
pub fn wants(request: &Value) -> Result<Vec<Want>, RfError> {
    let mut wants = Vec::new();
    for member in members(request, "Processors")? {
        if member["ProcessorType"].as_str().is_some_and(|t| t != "GPU") {
            let value = member["ProcessorType"].to_string();
            return Err(bad(
                PROPERTY_VALUE_NOT_IN_LIST,
                &[&value, "Processors/Members/ProcessorType"],
            ));
        }
        let memory_mib = member["ProcessorMemory"]
            .as_array()
            .and_then(|m| m.first())
            .and_then(|m| m["CapacityMiB"].as_u64())
            .unwrap_or(0);
        wants.push(
            Want::of(DeviceKind::Gpu, count(member, "Processors/Members")?)
                .at_least(memory_mib << 20),
        );
    }
    for member in members(request, "Storage")? {
        match member["Drives"].as_array() {
            Some(drives) => {
                for drive in drives {
                    let bytes = drive["CapacityBytes"].as_u64().unwrap_or(0);
                    wants.push(
                        Want::of(DeviceKind::Nvme, count(drive, "Storage/Members/Drives")?)
                            .at_least(bytes),
                    );
                }
            }
            // A storage member without drives asks for a storage controller: an HBA.
            None => wants.push(Want::of(DeviceKind::Hba, count(member, "Storage/Members")?)),
        }
    }
    for member in members(request, "NetworkInterfaces")? {
        let mut want = Want::of(DeviceKind::Nic, count(member, "NetworkInterfaces/Members")?);
        if member["Oem"]["Appliance"]["RDMA"].as_bool() == Some(true) {
            want = want.rdma();
        }
        wants.push(want);
    }
    Ok(wants)
}

/// A system's name from a request: `Name`, valid and not a name of the tree.
pub fn system_name(request: &Value) -> Result<SystemName, RfError> {
    let name = match &request["Name"] {
        Value::String(name) => name,
        Value::Null => return Err(bad(PROPERTY_MISSING, &["Name"])),
        other => {
            return Err(bad(
                PROPERTY_VALUE_TYPE_ERROR,
                &[&other.to_string(), "Name"],
            ))
        }
    };
    let id_safe = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !crate::model::domain::valid_name(name) || !id_safe || name == "Capabilities" {
        return Err(bad(PROPERTY_VALUE_FORMAT_ERROR, &[name, "Name"]));
    }
    Ok(name.as_str().into())
}

/// What a composition request asks for: the verb, and whether it needs the default tenant.
pub struct Composition {
    pub verb: Verb,
    pub tenant: TenantName,
}

/// A ComputerSystem composition request (POST to Systems, or a manifest's ComposeSystem
/// stanza) as a compose verb. `scope` is the principal's tenant, if it has one.
pub fn composition(request: &Value, scope: Option<&TenantName>) -> Result<Composition, RfError> {
    let name = system_name(request)?;
    if let Some(zone) = request["@Redfish.ZoneAffinity"].as_str() {
        if zone != ZONE {
            return Err(bad(
                PROPERTY_VALUE_NOT_IN_LIST,
                &[zone, "@Redfish.ZoneAffinity"],
            ));
        }
    }
    let specific = &request["Links"]["ResourceBlocks"];
    let constrained = wants(request)?;
    let selection = match (specific.is_null(), constrained.is_empty()) {
        (false, true) => Selection::Specific(blocks(specific, "Links/ResourceBlocks")?),
        (true, false) => Selection::Constrained(constrained),
        (true, true) => return Err(bad(PROPERTY_MISSING, &["Links/ResourceBlocks"])),
        (false, false) => {
            return Err(bad(
                PROPERTY_VALUE_FORMAT_ERROR,
                &[
                    "Links/ResourceBlocks and RequestedCount",
                    "Links/ResourceBlocks",
                ],
            ))
        }
    };
    let oem = &request["Oem"]["Appliance"];
    let tenant = match (scope, oem["Tenant"].as_str()) {
        (Some(own), _) => own.clone(),
        (None, Some(tenant)) => tenant.into(),
        (None, None) => DEFAULT_TENANT.into(),
    };
    let role = match oem["Role"].as_str() {
        None => Role::Workstation,
        Some(role) => role
            .parse()
            .map_err(|_| bad(PROPERTY_VALUE_NOT_IN_LIST, &[role, "Oem/Appliance/Role"]))?,
    };
    let verb = Verb::Compose {
        system: name,
        selection,
        create: Some(NewSystem {
            tenant: tenant.clone(),
            role,
        }),
        tenant: Some(tenant.clone()),
        reservation: None,
    };
    Ok(Composition { verb, tenant })
}

/// One stanza of a manifest.
pub enum Stanza {
    Compose { verb: Verb },
    Decompose { system: SystemName },
}

/// The manifest's stanzas as verbs; errors name the stanza.
pub fn stanzas(manifest: &Value, scope: Option<&TenantName>) -> Result<Vec<Stanza>, RfError> {
    let Some(items) = manifest["Stanzas"].as_array().filter(|s| !s.is_empty()) else {
        return Err(RfError::bad_request(EMPTY_MANIFEST, &[]));
    };
    if items.len() > STANZAS_MAX {
        return Err(bad(
            PROPERTY_VALUE_FORMAT_ERROR,
            &[&items.len().to_string(), "Manifest/Stanzas"],
        ));
    }
    items
        .iter()
        .map(|stanza| {
            let kind = stanza["StanzaType"].as_str().unwrap_or_default();
            let id = stanza["StanzaId"].as_str().unwrap_or_default().to_string();
            let unprocessable = || RfError::bad_request(UNABLE_TO_PROCESS_STANZA, &[kind, &id]);
            let request = &stanza["Request"];
            if request.is_null() {
                return Err(RfError::bad_request(EMPTY_MANIFEST, &[]));
            }
            match kind {
                "ComposeSystem" => {
                    let composition = composition(request, scope).map_err(|_| unprocessable())?;
                    Ok(Stanza::Compose {
                        verb: composition.verb,
                    })
                }
                "DecomposeSystem" => {
                    let target = request["@odata.id"].as_str().unwrap_or_default();
                    match Route::parse(target) {
                        Some(Route::System(system)) => Ok(Stanza::Decompose {
                            system: system.into(),
                        }),
                        _ => Err(unprocessable()),
                    }
                }
                _ => Err(unprocessable()),
            }
        })
        .collect()
}

/// What a preview finds: each compose stanza's devices, decided against State as it is plus
/// the stanzas before it (so two stanzas never pick one device). Nothing is journaled.
pub fn preview(
    state: &State,
    stanzas: &[Stanza],
    by: &Origin,
    scope: Option<&TenantName>,
) -> Result<Vec<Option<Vec<DeviceId>>>, crate::api::ApiError> {
    let mut state = state.clone();
    let mut found = Vec::new();
    for stanza in stanzas {
        if let Stanza::Compose {
            verb: Verb::Compose {
                create: Some(new), ..
            },
        } = stanza
        {
            if !state.tenants.contains_key(&new.tenant) {
                let created = Event::TenantCreated {
                    name: new.tenant.clone(),
                    made: Default::default(),
                };
                let sequence = state.head + 1;
                state.apply_owned(sequence, created).map_err(|e| {
                    crate::api::ApiError::new(crate::api::ErrorCode::Internal, e.to_string())
                })?;
            }
        }
        let verb = match stanza {
            Stanza::Compose { verb, .. } => verb.clone(),
            Stanza::Decompose { system, .. } => Verb::Decompose {
                system: system.clone(),
                devices: None,
            },
        };
        let command = Command::Order(Order {
            verb,
            request_id: None,
            expected_version: None,
            by: by.clone(),
            scope: scope.cloned(),
        });
        let decision = decide(&state, &command)
            .map_err(|e| crate::api::ApiError::new((&e).into(), e.to_string()))?;
        let Decision::Events { events, .. } = decision else {
            found.push(None);
            continue;
        };
        let mut devices = None;
        for event in events {
            if let Event::ComposeRequested {
                devices: chosen, ..
            } = &event
            {
                devices = Some(chosen.iter().map(|(d, _)| d.clone()).collect());
            }
            let sequence = state.head + 1;
            state.apply_owned(sequence, event).map_err(|e| {
                crate::api::ApiError::new(crate::api::ErrorCode::Internal, e.to_string())
            })?;
        }
        found.push(devices);
    }
    Ok(found)
}

/// The manifest with each stanza's `Response` filled from a preview or an apply.
pub fn answered(manifest: &Value, found: &[Option<Vec<DeviceId>>], applied: bool) -> Value {
    let mut manifest = manifest.clone();
    if let Some(items) = manifest["Stanzas"].as_array_mut() {
        for (stanza, devices) in items.iter_mut().zip(found) {
            let name = stanza["Request"]["Name"]
                .as_str()
                .map(String::from)
                .or_else(|| {
                    stanza["Request"]["@odata.id"]
                        .as_str()
                        .and_then(|t| t.rsplit('/').next())
                        .map(String::from)
                })
                .unwrap_or_default();
            let blocks: Vec<Value> = devices
                .iter()
                .flatten()
                .map(|d| json!({"@odata.id": block_uri(d)}))
                .collect();
            let mut response = json!({
                "@odata.type": types::SYSTEM,
                "Id": name,
                "Name": name,
                "SystemType": "Composed",
                "Links": {"ResourceBlocks": blocks},
            });
            if applied && devices.is_some() {
                response["@odata.id"] = Value::String(super::resources::system_uri(&name));
            }
            stanza["Response"] = response;
        }
    }
    manifest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_specific_request_names_its_blocks() {
        let request = json!({"Name": "ws2", "Links": {"ResourceBlocks": [
            {"@odata.id": "/redfish/v1/CompositionService/ResourceBlocks/gpu-0"},
            {"@odata.id": "/redfish/v1/CompositionService/ResourceBlocks/nvme-1"}]}});
        let composition = composition(&request, None).expect("parses");
        let Verb::Compose {
            selection, create, ..
        } = composition.verb
        else {
            panic!("not a compose")
        };
        assert_eq!(
            selection,
            Selection::Specific(vec!["gpu-0".into(), "nvme-1".into()])
        );
        assert_eq!(create.map(|c| c.tenant), Some(DEFAULT_TENANT.into()));
    }

    #[test]
    fn a_constrained_request_becomes_wants() {
        let request = json!({"Name": "render1", "Processors": {"Members": [
            {"@Redfish.RequestedCount": 2, "ProcessorType": "GPU", "ProcessorMemory": [{"CapacityMiB": 24576}]}]},
            "Storage": {"Members": [{"Drives": [{"@Redfish.RequestedCount": 1, "CapacityBytes": 2_000_000_000_000u64}]}]},
            "NetworkInterfaces": {"Members": [{"@Redfish.RequestedCount": 1, "Oem": {"Appliance": {"RDMA": true}}}]}});
        assert_eq!(
            wants(&request).expect("parses"),
            vec![
                Want::of(DeviceKind::Gpu, 2).at_least(24 << 30),
                Want::of(DeviceKind::Nvme, 1).at_least(2_000_000_000_000),
                Want::of(DeviceKind::Nic, 1).rdma(),
            ]
        );
    }

    #[test]
    fn bad_requests_name_the_property() {
        let cases = [
            (json!({"Links": {"ResourceBlocks": []}}), "Name"),
            (json!({"Name": "a b"}), "Name"),
            (
                json!({"Name": "Capabilities", "Links": {"ResourceBlocks": []}}),
                "Name",
            ),
            (json!({"Name": "x"}), "Links/ResourceBlocks"),
            (
                json!({"Name": "x", "Links": {"ResourceBlocks": [{"@odata.id": "/redfish/v1/Systems/y"}]}}),
                "/redfish/v1/Systems/y",
            ),
            (
                json!({"Name": "x", "Processors": {"Members": [{"@Redfish.RequestedCount": "two"}]}}),
                "Processors/Members",
            ),
            (
                json!({"Name": "x", "@Redfish.ZoneAffinity": "9", "Links": {"ResourceBlocks": []}}),
                "@Redfish.ZoneAffinity",
            ),
        ];
        for (request, names) in cases {
            let error = composition(&request, None)
                .err()
                .unwrap_or_else(|| panic!("{request} accepted"));
            let text = error.body().to_string();
            assert!(text.contains(names), "{request}: {text}");
        }
    }
}
