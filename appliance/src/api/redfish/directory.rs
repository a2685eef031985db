//! The studio's directory as AccountService shows and changes it (DSP0268's external account
//! providers): `LDAP` and `ActiveDirectory` (on for the kind that is set, off for the other),
//! their `RemoteRoleMapping` (a mapping's tenant in `Oem.Appliance.Tenant`), the CA bundle as
//! each provider's `Certificates`; a PATCH of AccountService, a POST of a CA certificate and a
//! DELETE of one each become one `Verb::SetDirectory`, carried out by `api::handle` like the
//! CLI's (ConfigureUsers, the CA read, the bind password sealed, the settings checked).
//!
//! What DSP0268 has no place for is in AccountService's `Oem.Appliance`: StartTLS, plain LDAP
//! allowed, and the CA bundle of a first configuration (a provider's certificates exist only
//! once it is set).

use std::sync::Arc;

use http::{Response, StatusCode};
use serde_json::{json, Map, Value};

use super::messages::{
    RfError, GENERAL_ERROR, PROPERTY_MISSING, PROPERTY_NOT_WRITABLE, PROPERTY_UNKNOWN,
    PROPERTY_VALUE_CONFLICT, PROPERTY_VALUE_FORMAT_ERROR, PROPERTY_VALUE_NOT_IN_LIST,
    PROPERTY_VALUE_OUT_OF_RANGE, PROPERTY_VALUE_TYPE_ERROR, RESOURCE_CANNOT_BE_DELETED,
};
use super::orders::{oem_tenant, role_at, secret_at};
use super::resources::{link, types, Lens};
use super::routes::uri;
use super::{empty_response, json_response, Asked, Body, Service};
use crate::api::auth::Principal;
use crate::api::directory::{ca_certificates, CaCertificate};
use crate::api::time::rfc3339;
use crate::decide::command::Verb;
use crate::model::directory::{
    BindPassword, DirectoryKind, DirectorySettings, GroupMapping, TIMEOUT_MS_MAX,
};
use crate::model::{Privilege, Secret};

/// The AccountService property of a kind of directory (and its URI segment).
pub fn property(kind: DirectoryKind) -> &'static str {
    match kind {
        DirectoryKind::Ldap => "LDAP",
        DirectoryKind::ActiveDirectory => "ActiveDirectory",
    }
}

pub fn kind_of(segment: &str) -> Option<DirectoryKind> {
    [DirectoryKind::Ldap, DirectoryKind::ActiveDirectory]
        .into_iter()
        .find(|kind| property(*kind) == segment)
}

fn certificates_uri(kind: DirectoryKind) -> String {
    uri(&format!("AccountService/{}/Certificates", property(kind)))
}

fn certificate_uri(kind: DirectoryKind, id: usize) -> String {
    format!("{}/{id}", certificates_uri(kind))
}

/// The settings, if they are of this kind.
fn set_as<'a>(lens: &Lens<'a>, kind: DirectoryKind) -> Option<&'a DirectorySettings> {
    lens.state.directory.as_ref().filter(|d| d.kind == kind)
}

/// The settings for a principal who may see them.
fn shown_as<'a>(lens: &Lens<'a>, kind: DirectoryKind) -> Option<&'a DirectorySettings> {
    set_as(lens, kind).filter(|_| sees_settings(lens))
}

/// Whether the principal sees how the directory is set (as `ctl directory`: ConfigureUsers
/// over every tenant); others see only whether it is on.
fn sees_settings(lens: &Lens) -> bool {
    lens.principal
        .is_none_or(|p| p.scope.is_none() && p.has(Privilege::ConfigureUsers))
}

/// AccountService's `LDAP` or `ActiveDirectory`.
pub fn provider(lens: &Lens, kind: DirectoryKind) -> Value {
    let certificates = link(&certificates_uri(kind));
    if !sees_settings(lens) {
        return json!({
            "ServiceEnabled": set_as(lens, kind).is_some(),
            "Certificates": certificates,
        });
    }
    let Some(d) = set_as(lens, kind) else {
        return json!({
            "ServiceEnabled": false,
            "ServiceAddresses": [],
            "PasswordSet": false,
            "RemoteRoleMapping": [],
            "Certificates": certificates,
        });
    };
    let mappings: Vec<Value> = d
        .mappings
        .iter()
        .map(|m| {
            let mut mapping = json!({"RemoteGroup": m.group, "LocalRole": m.role.name()});
            if let Some(tenant) = &m.tenant {
                mapping["Oem"] = json!({"Appliance": {
                    "@odata.type": types::OEM_ROLE_MAPPING,
                    "Tenant": tenant.as_str(),
                }});
            }
            mapping
        })
        .collect();
    json!({
        "ServiceEnabled": true,
        "ServiceAddresses": [d.uri],
        "Authentication": {
            "AuthenticationType": "UsernameAndPassword",
            "Username": d.bind_dn,
            "Password": null,
        },
        "PasswordSet": true,
        "LDAPService": {"SearchSettings": {
            "BaseDistinguishedNames": [d.base],
            "UsernameAttribute": d.user_attribute,
            "GroupsAttribute": d.groups_from(),
            "GroupNameAttribute": d.group_name_attribute,
        }},
        "RemoteRoleMapping": mappings,
        "TimeoutSeconds": d.timeout_ms.div_ceil(1000),
        "Certificates": certificates,
    })
}

/// AccountService's `Oem.Appliance`.
pub fn oem(lens: &Lens) -> Value {
    let d = lens.state.directory.as_ref();
    json!({"Appliance": {
        "@odata.type": types::OEM_ACCOUNT_SERVICE,
        "DirectoryStartTLS": d.is_some_and(|d| d.starttls),
        "DirectoryAllowPlainLDAP": d.is_some_and(|d| d.allow_plain),
    }})
}

fn certificates_of(d: &DirectorySettings) -> Vec<CaCertificate> {
    ca_certificates(&d.ca_pem).unwrap_or_default()
}

pub fn certificates(lens: &Lens, kind: DirectoryKind) -> Value {
    let count = shown_as(lens, kind).map_or(0, |d| certificates_of(d).len());
    let members: Vec<Value> = (1..=count)
        .map(|id| link(&certificate_uri(kind, id)))
        .collect();
    json!({
        "@odata.id": certificates_uri(kind),
        "@odata.type": "#CertificateCollection.CertificateCollection",
        "Name": format!("{} CA certificates", property(kind)),
        "Members@odata.count": members.len(),
        "Members": members,
        "@Redfish.SupportedCertificates": ["PEM"],
    })
}

fn identifier(names: &[(&'static str, String)]) -> Value {
    let mut out = Map::new();
    for (key, value) in names {
        let property = match *key {
            "CN" => "CommonName",
            "O" => "Organization",
            "OU" => "OrganizationalUnit",
            "L" => "City",
            "ST" => "State",
            "C" => "Country",
            _ => continue,
        };
        out.insert(property.into(), value.clone().into());
    }
    Value::Object(out)
}

pub fn certificate(lens: &Lens, kind: DirectoryKind, id: &str) -> Option<Value> {
    let index: usize = id.parse().ok().filter(|i| *i >= 1)?;
    let cert = certificates_of(set_as(lens, kind)?)
        .into_iter()
        .nth(index - 1)?;
    let seconds_ms = |s: i64| u64::try_from(s).unwrap_or(0).saturating_mul(1000);
    Some(json!({
        "@odata.id": certificate_uri(kind, index),
        "@odata.type": types::CERTIFICATE,
        "Id": index.to_string(),
        "Name": format!("{} CA certificate {index}", property(kind)),
        "CertificateString": cert.pem,
        "CertificateType": "PEM",
        "Subject": identifier(&cert.subject),
        "Issuer": identifier(&cert.issuer),
        "ValidNotBefore": rfc3339(seconds_ms(cert.not_before_s)),
        "ValidNotAfter": rfc3339(seconds_ms(cert.not_after_s)),
        "SerialNumber": cert.serial,
        "Fingerprint": cert.fingerprint_sha256,
        "FingerprintHashAlgorithm": "TPM_ALG_SHA256",
    }))
}

/// What a PATCH of AccountService asks of the directory: the settings to set (None: off), or
/// nothing to change; and the properties it names that cannot be written.
pub struct DirectoryPatch {
    pub settings: Option<Option<DirectorySettings<BindPassword>>>,
    pub ignored: Vec<Value>,
}

fn type_error(value: &Value, path: &str) -> RfError {
    RfError::bad_request(PROPERTY_VALUE_TYPE_ERROR, &[&value.to_string(), path])
}

fn string_at(value: &Value, path: &str) -> Result<String, RfError> {
    value
        .as_str()
        .map(String::from)
        .ok_or_else(|| type_error(value, path))
}

fn object_at<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, RfError> {
    value.as_object().ok_or_else(|| type_error(value, path))
}

/// One string of a list of exactly one (the appliance reaches one directory server, under one
/// base).
fn single_at(value: &Value, path: &str) -> Result<String, RfError> {
    match value.as_array().map(Vec::as_slice) {
        Some([one]) => string_at(one, &format!("{path}/0")),
        Some(_) => Err(RfError::bad_request(
            PROPERTY_VALUE_FORMAT_ERROR,
            &[&value.to_string(), path],
        )),
        None => Err(type_error(value, path)),
    }
}

/// A service address as DSP0268 reads it for LDAP: no scheme is `ldaps://`, no port the
/// scheme's own.
fn address(text: &str) -> String {
    match text.contains("://") {
        true => text.to_string(),
        false => format!("ldaps://{text}"),
    }
}

fn new_settings(kind: DirectoryKind) -> DirectorySettings<BindPassword> {
    DirectorySettings {
        kind,
        uri: String::new(),
        starttls: false,
        allow_plain: false,
        ca_pem: String::new(),
        bind_dn: String::new(),
        bind_password: BindPassword::Plain(Secret(String::new())),
        base: String::new(),
        user_attribute: match kind {
            DirectoryKind::Ldap => "uid".into(),
            DirectoryKind::ActiveDirectory => "sAMAccountName".into(),
        },
        groups_attribute: None,
        group_name_attribute: "cn".into(),
        mappings: Vec::new(),
        timeout_ms: 5_000,
    }
}

fn mapping_of(value: &Value, path: &str) -> Result<GroupMapping, RfError> {
    let object = object_at(value, path)?;
    if let Some(key) = object
        .keys()
        .find(|k| !matches!(k.as_str(), "RemoteGroup" | "LocalRole" | "Oem"))
    {
        return Err(RfError::bad_request(
            PROPERTY_UNKNOWN,
            &[&format!("{path}/{key}")],
        ));
    }
    let group = string_at(
        object.get("RemoteGroup").ok_or_else(|| {
            RfError::bad_request(PROPERTY_MISSING, &[&format!("{path}/RemoteGroup")])
        })?,
        &format!("{path}/RemoteGroup"),
    )?;
    let role_path = format!("{path}/LocalRole");
    let role = role_at(
        object
            .get("LocalRole")
            .ok_or_else(|| RfError::bad_request(PROPERTY_MISSING, &[&role_path]))?,
        &role_path,
    )?;
    Ok(GroupMapping {
        group,
        role,
        tenant: oem_tenant(value, path)?,
    })
}

/// Applies a provider's properties (`LDAP` or `ActiveDirectory`) to `settings`.
fn apply_provider(
    settings: &mut DirectorySettings<BindPassword>,
    object: &Map<String, Value>,
    name: &str,
    ignored: &mut Vec<Value>,
) -> Result<(), RfError> {
    for (key, value) in object {
        let path = format!("{name}/{key}");
        match key.as_str() {
            "ServiceEnabled" => {}
            "ServiceAddresses" => settings.uri = address(&single_at(value, &path)?),
            "Authentication" => {
                for (key, value) in object_at(value, &path)? {
                    let path = format!("{path}/{key}");
                    match key.as_str() {
                        "AuthenticationType" if value == "UsernameAndPassword" => {}
                        "AuthenticationType" => {
                            return Err(RfError::bad_request(
                                PROPERTY_VALUE_NOT_IN_LIST,
                                &[&value.to_string(), &path],
                            ))
                        }
                        "Username" => settings.bind_dn = string_at(value, &path)?,
                        "Password" => {
                            settings.bind_password = BindPassword::Plain(secret_at(value, &path)?)
                        }
                        _ => ignored.push(PROPERTY_UNKNOWN.about_property(&path)),
                    }
                }
            }
            "LDAPService" => {
                let search = &value["SearchSettings"];
                let search_path = format!("{path}/SearchSettings");
                for (key, value) in object_at(search, &search_path)? {
                    let path = format!("{search_path}/{key}");
                    match key.as_str() {
                        "BaseDistinguishedNames" => settings.base = single_at(value, &path)?,
                        "UsernameAttribute" => settings.user_attribute = string_at(value, &path)?,
                        "GroupsAttribute" => {
                            settings.groups_attribute = match value {
                                Value::Null => None,
                                other => Some(string_at(other, &path)?),
                            }
                        }
                        "GroupNameAttribute" => {
                            settings.group_name_attribute = string_at(value, &path)?
                        }
                        _ => ignored.push(PROPERTY_UNKNOWN.about_property(&path)),
                    }
                }
            }
            "RemoteRoleMapping" => {
                let list = value.as_array().ok_or_else(|| type_error(value, &path))?;
                settings.mappings = list
                    .iter()
                    .enumerate()
                    .map(|(i, m)| mapping_of(m, &format!("{path}/{i}")))
                    .collect::<Result<_, _>>()?;
            }
            "TimeoutSeconds" => {
                let seconds = value.as_u64().ok_or_else(|| type_error(value, &path))?;
                if !(1..=TIMEOUT_MS_MAX / 1000).contains(&seconds) {
                    return Err(RfError::bad_request(
                        PROPERTY_VALUE_OUT_OF_RANGE,
                        &[&value.to_string(), &path],
                    ));
                }
                settings.timeout_ms = seconds * 1000;
            }
            "AccountProviderType" | "PasswordSet" | "Certificates" => {
                ignored.push(PROPERTY_NOT_WRITABLE.about_property(&path))
            }
            key if key.starts_with('@') => {}
            _ => ignored.push(PROPERTY_UNKNOWN.about_property(&path)),
        }
    }
    Ok(())
}

/// What a new configuration must name, as DSP0268 names it.
fn require_new(settings: &DirectorySettings<BindPassword>, name: &str) -> Result<(), RfError> {
    let password_set = !matches!(&settings.bind_password, BindPassword::Plain(p) if p.0.is_empty());
    let missing = [
        (settings.uri.is_empty(), "ServiceAddresses"),
        (settings.bind_dn.is_empty(), "Authentication/Username"),
        (!password_set, "Authentication/Password"),
        (
            settings.base.is_empty(),
            "LDAPService/SearchSettings/BaseDistinguishedNames",
        ),
        (settings.mappings.is_empty(), "RemoteRoleMapping"),
    ];
    if let Some((_, property)) = missing.iter().find(|(missing, _)| *missing) {
        return Err(RfError::bad_request(
            PROPERTY_MISSING,
            &[&format!("{name}/{property}")],
        ));
    }
    let secure = settings.uri.starts_with("ldaps://") || settings.starttls;
    if secure && settings.ca_pem.trim().is_empty() {
        return Err(RfError::bad_request(
            PROPERTY_MISSING,
            &["Oem/Appliance/DirectoryCertificateAuthority"],
        ));
    }
    Ok(())
}

/// Reads a PATCH of AccountService's directory properties against the settings as they are.
/// A provider turned on starts from the settings if they are of its kind (the bind password
/// kept sealed unless a new one is given), else from nothing; `ServiceEnabled: false` turns
/// the directory off; one kind at a time.
pub fn read_patch(
    current: Option<&DirectorySettings>,
    body: &Map<String, Value>,
) -> Result<DirectoryPatch, RfError> {
    let mut ignored = Vec::new();
    let mut wanted: Option<Option<DirectorySettings<BindPassword>>> = None;
    for kind in [DirectoryKind::Ldap, DirectoryKind::ActiveDirectory] {
        let name = property(kind);
        let Some(value) = body.get(name) else {
            continue;
        };
        let object = object_at(value, name)?;
        let enabled = match object.get("ServiceEnabled") {
            None => None,
            Some(Value::Bool(on)) => Some(*on),
            Some(other) => return Err(type_error(other, &format!("{name}/ServiceEnabled"))),
        };
        let ours = current.filter(|d| d.kind == kind);
        if enabled == Some(false) {
            if ours.is_some() {
                wanted = Some(None);
            }
            continue;
        }
        let Some(start) = ours
            .map(DirectorySettings::as_order)
            .or_else(|| (enabled == Some(true)).then(|| new_settings(kind)))
        else {
            return Err(RfError::bad_request(
                PROPERTY_VALUE_NOT_IN_LIST,
                &["absent", &format!("{name}/ServiceEnabled")],
            ));
        };
        if matches!(&wanted, Some(Some(other)) if other.kind != kind) {
            return Err(RfError::bad_request(
                PROPERTY_VALUE_CONFLICT,
                &["ActiveDirectory/ServiceEnabled", "LDAP/ServiceEnabled"],
            ));
        }
        let mut settings = start;
        apply_provider(&mut settings, object, name, &mut ignored)?;
        wanted = Some(Some(settings));
    }
    let oem = &body.get("Oem").unwrap_or(&Value::Null)["Appliance"];
    if let Some(oem) = oem.as_object() {
        let mut edits: Vec<(&str, &Value)> = Vec::new();
        for (key, value) in oem {
            match key.as_str() {
                "DirectoryStartTLS"
                | "DirectoryAllowPlainLDAP"
                | "DirectoryCertificateAuthority" => edits.push((key, value)),
                key if key.starts_with('@') => {}
                key => {
                    let path = format!("Oem/Appliance/{key}");
                    ignored.push(PROPERTY_UNKNOWN.about_property(&path));
                }
            }
        }
        if let (Some((key, _)), Some(None)) = (edits.first(), &wanted) {
            // The directory is turned off by the same PATCH: nothing to write them to.
            return Err(RfError::bad_request(
                PROPERTY_VALUE_CONFLICT,
                &[&format!("Oem/Appliance/{key}"), "ServiceEnabled"],
            ));
        }
        if wanted.is_none() && !edits.is_empty() {
            // Without a provider's properties, these change the directory as it is set.
            let current = current
                .ok_or_else(|| RfError::bad_request(PROPERTY_MISSING, &["LDAP/ServiceEnabled"]))?;
            wanted = Some(Some(current.as_order()));
        }
        if let Some(Some(settings)) = &mut wanted {
            for (key, value) in edits {
                let path = format!("Oem/Appliance/{key}");
                match key {
                    "DirectoryStartTLS" => {
                        settings.starttls =
                            value.as_bool().ok_or_else(|| type_error(value, &path))?
                    }
                    "DirectoryAllowPlainLDAP" => {
                        settings.allow_plain =
                            value.as_bool().ok_or_else(|| type_error(value, &path))?
                    }
                    _ => settings.ca_pem = string_at(value, &path)?,
                }
            }
        }
    }
    if let Some(Some(settings)) = &wanted {
        require_new(settings, property(settings.kind))?;
    }
    Ok(DirectoryPatch {
        settings: wanted,
        ignored,
    })
}

/// Sets the directory (None: off) through `api::handle`.
async fn set_directory(
    service: &Arc<Service>,
    principal: &Principal,
    settings: Option<DirectorySettings<BindPassword>>,
) -> Result<(), RfError> {
    let verb = Verb::SetDirectory {
        settings: settings.map(Box::new),
    };
    super::orders::carry_out(service, principal, super::orders::order(verb, None)).await?;
    Ok(())
}

/// PATCH of AccountService: its directory properties (`LDAP`, `ActiveDirectory`,
/// `Oem.Appliance`); the others are the appliance's policy, reported as not writable.
pub async fn patch_account_service(
    service: &Arc<Service>,
    principal: &Principal,
    asked: &Asked,
) -> Result<Response<Body>, RfError> {
    let (built, _) = super::orders::current_if_match(service, principal, asked)?;
    let body = super::orders::json_body(asked)?;
    let object = body.as_object().cloned().unwrap_or_default();
    let mut ignored = Vec::new();
    for key in object.keys() {
        match key.as_str() {
            "LDAP" | "ActiveDirectory" | "Oem" => {}
            key if key.starts_with('@') => {}
            key if built.value.get(key).is_some() => {
                ignored.push(PROPERTY_NOT_WRITABLE.about_property(key))
            }
            key => ignored.push(PROPERTY_UNKNOWN.about_property(key)),
        }
    }
    let current = service.context.core.state().directory.clone();
    let patch = read_patch(current.as_ref(), &object)?;
    ignored.extend(patch.ignored);
    let Some(settings) = patch.settings else {
        let error = match ignored.is_empty() {
            true => RfError::bad_request(super::messages::NO_OPERATION, &[]),
            false => RfError::with(StatusCode::BAD_REQUEST, ignored),
        };
        return Err(error);
    };
    set_directory(service, principal, settings).await?;
    service.forget_basic();
    let state = service.context.core.state();
    let lens = Lens::new(&state, Some(principal), service);
    let mut body = super::resources::build(&lens, &asked.route, &asked.path)?.value;
    if !ignored.is_empty() {
        body["@Message.ExtendedInfo"] = Value::Array(ignored);
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// POST to a provider's Certificates: `CertificateString` (PEM) and `CertificateType` `PEM`;
/// the certificate is added to the CA bundle its directory's certificate may chain to.
pub async fn add_certificate(
    service: &Arc<Service>,
    principal: &Principal,
    asked: &Asked,
    kind: DirectoryKind,
) -> Result<Response<Body>, RfError> {
    let body = super::orders::json_body(asked)?;
    if let Some(key) = body
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
        .find(|k| {
            !matches!(k.as_str(), "CertificateString" | "CertificateType") && !k.starts_with('@')
        })
    {
        return Err(RfError::bad_request(PROPERTY_UNKNOWN, &[key]));
    }
    let pem = string_at(
        body.get("CertificateString")
            .ok_or_else(|| RfError::bad_request(PROPERTY_MISSING, &["CertificateString"]))?,
        "CertificateString",
    )?;
    match body.get("CertificateType") {
        None => {}
        Some(Value::String(t)) if t == "PEM" => {}
        Some(other) => {
            return Err(RfError::bad_request(
                PROPERTY_VALUE_NOT_IN_LIST,
                &[&other.to_string(), "CertificateType"],
            ))
        }
    }
    let added = ca_certificates(&pem).map_err(|e| {
        RfError::bad_request(PROPERTY_VALUE_FORMAT_ERROR, &[&e, "CertificateString"])
    })?;
    let current = settings_of_kind(service, kind, asked)?;
    let mut bundle = certificates_of(&current);
    let first_new = bundle.len() + 1;
    bundle.extend(added);
    let settings = with_bundle(&current, &bundle);
    set_directory(service, principal, Some(settings)).await?;
    let state = service.context.core.state();
    let lens = Lens::new(&state, Some(principal), service);
    let body = certificate(&lens, kind, &first_new.to_string());
    let mut response = json_response(StatusCode::CREATED, &body.unwrap_or_else(|| json!({})));
    if let Ok(value) = http::HeaderValue::from_str(&certificate_uri(kind, first_new)) {
        response.headers_mut().insert(http::header::LOCATION, value);
    }
    Ok(response)
}

/// DELETE of one CA certificate; the last one of a TLS directory cannot go (nothing would be
/// trusted: turn the directory off instead).
pub async fn remove_certificate(
    service: &Arc<Service>,
    principal: &Principal,
    asked: &Asked,
    kind: DirectoryKind,
    id: &str,
) -> Result<Response<Body>, RfError> {
    let current = settings_of_kind(service, kind, asked)?;
    let mut bundle = certificates_of(&current);
    let index = id
        .parse::<usize>()
        .ok()
        .filter(|i| (1..=bundle.len()).contains(i))
        .ok_or_else(|| RfError::not_found(&asked.path))?;
    if bundle.len() == 1 {
        return Err(RfError::new(
            StatusCode::CONFLICT,
            RESOURCE_CANNOT_BE_DELETED,
            &[],
        ));
    }
    bundle.remove(index - 1);
    let settings = with_bundle(&current, &bundle);
    set_directory(service, principal, Some(settings)).await?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

fn settings_of_kind(
    service: &Service,
    kind: DirectoryKind,
    asked: &Asked,
) -> Result<DirectorySettings, RfError> {
    let state = service.context.core.state();
    state
        .directory
        .as_ref()
        .filter(|d| d.kind == kind)
        .cloned()
        .ok_or_else(|| not_set(kind, &asked.path))
}

/// A provider's certificates change only while the directory is set as that kind.
fn not_set(kind: DirectoryKind, path: &str) -> RfError {
    let mut error = RfError::new(StatusCode::CONFLICT, GENERAL_ERROR, &[]);
    error.messages[0]["Message"] = Value::String(format!(
        "{path}: no {} directory is set; PATCH AccountService's {} with ServiceEnabled true and the CA in Oem.Appliance.DirectoryCertificateAuthority first",
        property(kind),
        property(kind)
    ));
    error
}

fn with_bundle(
    current: &DirectorySettings,
    bundle: &[CaCertificate],
) -> DirectorySettings<BindPassword> {
    let mut settings = current.as_order();
    settings.ca_pem = bundle.iter().map(|c| c.pem.as_str()).collect();
    settings
}
