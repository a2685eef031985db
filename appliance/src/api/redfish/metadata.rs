//! The OData documents: `$metadata` (CSDL XML referencing exactly the schemas and versions the
//! service's resources use, from `resources::types`) and the service document
//! `/redfish/v1/odata`. Both are public, as are the appliance's own OEM schemas, served at
//! `/redfish/v1/Schemas/<file>` and referenced from `$metadata`.

use http::{header, HeaderValue, Method, Response, StatusCode};
use serde_json::{json, Value};

use super::resources::types;
use super::{empty_response, full, Asked, Body};

/// Every versioned type the resources use (`#Schema.vX_Y_Z.Type`).
const VERSIONED: &[&str] = &[
    types::SERVICE_ROOT,
    types::SYSTEM,
    types::COMPOSITION_SERVICE,
    types::RESOURCE_BLOCK,
    types::ZONE,
    types::RESERVATION,
    types::ACTION_INFO,
    types::CHASSIS,
    types::MANAGER,
    types::LOG_SERVICE,
    types::LOG_ENTRY,
    types::FABRIC,
    types::SWITCH,
    types::PORT,
    types::ENDPOINT,
    types::TASK_SERVICE,
    types::TASK,
    types::EVENT_SERVICE,
    types::EVENT_DESTINATION,
    types::SESSION_SERVICE,
    types::SESSION,
    types::ACCOUNT_SERVICE,
    types::ACCOUNT,
    types::ROLE,
    types::PROCESSOR,
    types::DRIVE,
    types::STORAGE,
    types::STORAGE_CONTROLLER,
    types::NETWORK_INTERFACE,
    types::NETWORK_ADAPTER,
    types::COLLECTION_CAPABILITIES,
    types::MESSAGE,
    types::CERTIFICATE,
    "#Manifest.v1_1_2.Manifest",
    "#Event.v1_13_0.Event",
];

/// Every collection type the resources use.
const COLLECTIONS: &[&str] = &[
    "ComputerSystemCollection",
    "ResourceBlockCollection",
    "ZoneCollection",
    "CompositionReservationCollection",
    "ChassisCollection",
    "ManagerCollection",
    "LogServiceCollection",
    "LogEntryCollection",
    "FabricCollection",
    "SwitchCollection",
    "PortCollection",
    "EndpointCollection",
    "TaskCollection",
    "EventDestinationCollection",
    "SessionCollection",
    "ManagerAccountCollection",
    "RoleCollection",
    "ProcessorCollection",
    "StorageCollection",
    "StorageControllerCollection",
    "NetworkInterfaceCollection",
    "NetworkAdapterCollection",
    "CertificateCollection",
];

/// The appliance's OEM schemas: (file, namespaces, CSDL).
pub const OEM_SCHEMAS: &[(&str, &[&str], &str)] = &[
    (
        "ApplianceManager_v1.xml",
        &["ApplianceManager", "ApplianceManager.v1_0_0"],
        include_str!("../../../schemas/ApplianceManager_v1.xml"),
    ),
    (
        "ApplianceAccountService_v1.xml",
        &["ApplianceAccountService", "ApplianceAccountService.v1_0_0"],
        include_str!("../../../schemas/ApplianceAccountService_v1.xml"),
    ),
];

/// `GET /redfish/v1/Schemas/<file>` of an OEM schema.
pub fn oem_schema_response(file: &str, asked: &Asked) -> Option<Response<Body>> {
    let (_, _, csdl) = OEM_SCHEMAS.iter().find(|(name, _, _)| *name == file)?;
    Some(xml_response(csdl, asked))
}

fn xml_response(document: &str, asked: &Asked) -> Response<Body> {
    let mut response = match asked.method == Method::HEAD {
        true => empty_response(StatusCode::OK),
        false => {
            let mut response = Response::new(full(document.to_string()));
            *response.status_mut() = StatusCode::OK;
            response
        }
    };
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml;charset=utf-8"),
    );
    response
}

/// (schema, versioned namespace) of a `#Schema.vX_Y_Z.Type`.
fn namespaces(type_: &str) -> Option<(&str, &str)> {
    let name = type_.strip_prefix('#')?;
    let (namespace, _) = name.rsplit_once('.')?;
    let (schema, _) = namespace.split_once('.')?;
    Some((schema, namespace))
}

fn reference(out: &mut String, schema: &str, includes: &[&str]) {
    out.push_str(&format!(
        "  <edmx:Reference Uri=\"http://redfish.dmtf.org/schemas/v1/{schema}_v1.xml\">\n"
    ));
    for include in includes {
        out.push_str(&format!("    <edmx:Include Namespace=\"{include}\"/>\n"));
    }
    out.push_str("  </edmx:Reference>\n");
}

/// The `$metadata` document.
pub fn document() -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<edmx:Edmx xmlns:edmx=\"http://docs.oasis-open.org/odata/ns/edmx\" Version=\"4.0\">\n",
    );
    for type_ in VERSIONED {
        if let Some((schema, versioned)) = namespaces(type_) {
            reference(&mut out, schema, &[schema, versioned]);
        }
    }
    for collection in COLLECTIONS {
        reference(&mut out, collection, &[collection]);
    }
    reference(&mut out, "Resource", &["Resource", "Resource.v1_23_0"]);
    for (file, includes, _) in OEM_SCHEMAS {
        out.push_str(&format!(
            "  <edmx:Reference Uri=\"/redfish/v1/Schemas/{file}\">\n"
        ));
        for include in *includes {
            out.push_str(&format!("    <edmx:Include Namespace=\"{include}\"/>\n"));
        }
        out.push_str("  </edmx:Reference>\n");
    }
    out.push_str(
        "  <edmx:Reference Uri=\"http://redfish.dmtf.org/schemas/v1/RedfishExtensions_v1.xml\">\n    <edmx:Include Namespace=\"RedfishExtensions.v1_0_0\" Alias=\"Redfish\"/>\n  </edmx:Reference>\n",
    );
    out.push_str(
        "  <edmx:DataServices>\n    <Schema xmlns=\"http://docs.oasis-open.org/odata/ns/edm\" Namespace=\"Service\">\n      <EntityContainer Name=\"Service\" Extends=\"ServiceRoot.v1_20_0.ServiceContainer\"/>\n    </Schema>\n  </edmx:DataServices>\n</edmx:Edmx>\n",
    );
    out
}

pub fn metadata_response(asked: &Asked) -> Response<Body> {
    xml_response(&document(), asked)
}

/// The OData service document.
pub fn odata() -> Value {
    let singletons = [
        ("Service", "/redfish/v1/"),
        ("Systems", "/redfish/v1/Systems"),
        ("Chassis", "/redfish/v1/Chassis"),
        ("Managers", "/redfish/v1/Managers"),
        ("CompositionService", "/redfish/v1/CompositionService"),
        ("Fabrics", "/redfish/v1/Fabrics"),
        ("Tasks", "/redfish/v1/TaskService"),
        ("EventService", "/redfish/v1/EventService"),
        ("SessionService", "/redfish/v1/SessionService"),
        ("AccountService", "/redfish/v1/AccountService"),
        ("Sessions", "/redfish/v1/SessionService/Sessions"),
    ];
    json!({
        "@odata.context": "/redfish/v1/$metadata",
        "value": singletons
            .iter()
            .map(|(name, url)| json!({"name": name, "kind": "Singleton", "url": url}))
            .collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CSDL files beside the repository (read-only, as CI has them).
    fn csdl(file: &str) -> Option<String> {
        if let Some((_, _, csdl)) = OEM_SCHEMAS.iter().find(|(name, _, _)| *name == file) {
            return Some(csdl.to_string());
        }
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/redfish/csdl")
            .join(file);
        std::fs::read_to_string(path).ok()
    }

    #[test]
    fn every_referenced_namespace_exists_in_the_dmtf_schemas() {
        let document = document();
        let mut checked = 0;
        for line in document.lines() {
            let Some(uri) = line.trim().strip_prefix("<edmx:Reference Uri=\"") else {
                continue;
            };
            let file = uri
                .trim_end_matches("\">")
                .rsplit('/')
                .next()
                .unwrap_or_default();
            let schema =
                csdl(file).unwrap_or_else(|| panic!("{file} is not in shared/redfish/csdl"));
            let block: Vec<&str> = document
                .split(uri)
                .nth(1)
                .unwrap_or_default()
                .split("</edmx:Reference>")
                .next()
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().strip_prefix("<edmx:Include Namespace=\""))
                .map(|l| l.split('"').next().unwrap_or_default())
                .collect();
            for namespace in block {
                assert!(
                    schema.contains(&format!("Namespace=\"{namespace}\"")),
                    "{file} defines no namespace {namespace}"
                );
                checked += 1;
            }
        }
        assert!(checked > 60, "only {checked} namespaces checked");
    }
}
