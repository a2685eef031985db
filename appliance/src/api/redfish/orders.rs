//! Writes: POST (create, actions), PATCH and DELETE, each turned into one or more
//! `api::Request`s and carried out by `api::handle` (privileges, tenancy and every check of
//! `decide` are theirs). `If-Match` becomes the order's expected version for versioned
//! resources, so a stale ETag is refused by the core itself (412), atomically. An operation
//! that does not end within `order_wait_ms` answers 202 with a task monitor.

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Method, Response, StatusCode};
use serde_json::{json, Value};
use tracing::info;

use super::compose::{self, Stanza};
use super::messages::{
    self, from_api, RfError, ACTION_NOT_SUPPORTED, ACTION_PARAMETER_MISSING,
    ACTION_PARAMETER_VALUE_NOT_IN_LIST, MALFORMED_JSON, NO_OPERATION, PRECONDITION_FAILED,
    PROPERTY_MISSING, PROPERTY_NOT_WRITABLE, PROPERTY_UNKNOWN, PROPERTY_VALUE_NOT_IN_LIST,
    PROPERTY_VALUE_TYPE_ERROR, UNRECOGNIZED_REQUEST_BODY,
};
use super::resources::{self, account_uri, etag, monitor_uri, system_uri, Built, Lens};
use super::routes::Route;
use super::{empty_response, json_response, Asked, Body, Service, TaskKind};
use crate::api::auth::{self as shared, Principal};
use crate::api::control::{decode_request, encode_answer};
use crate::api::{handle, ApiError, ErrorCode, Meta, Reply, Request};
use crate::decide::command::{Selection, Verb};
use crate::model::directory::DirectoryUserChange;
use crate::model::{
    AccountChange, AccountName, AccountRole, OperationId, Outcome, Password, ReservationEnd,
    Secret, SessionEnd, Subscription,
};

/// The request body as JSON (an empty body is `{}`); 415 for another media type.
pub fn json_body(asked: &Asked) -> Result<Value, RfError> {
    if let Some(kind) = asked.header(header::CONTENT_TYPE) {
        let media = kind.split(';').next().unwrap_or_default().trim();
        if !media.eq_ignore_ascii_case("application/json") {
            return Err(RfError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                UNRECOGNIZED_REQUEST_BODY,
                &[],
            ));
        }
    }
    if asked.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let value: Value = serde_json::from_slice(&asked.body)
        .map_err(|_| RfError::bad_request(MALFORMED_JSON, &[]))?;
    if !value.is_object() {
        return Err(RfError::bad_request(MALFORMED_JSON, &[]));
    }
    Ok(value)
}

/// Carries out `request` for `principal` on a blocking thread.
pub(super) async fn carry_out(
    service: &Arc<Service>,
    principal: &Principal,
    request: Request,
) -> Result<Reply, RfError> {
    let (context, principal) = (service.context.clone(), principal.clone());
    service
        .blocking(move || handle(&context, &principal, request))
        .await?
        .map_err(|e| from_api(&e))
}

pub(super) fn order(verb: Verb, expected_version: Option<u64>) -> Request {
    Request::order(
        verb,
        Meta {
            request_id: None,
            expected_version,
            wait: false,
        },
    )
}

fn accepted_op(reply: &Reply) -> Option<OperationId> {
    match reply {
        Reply::Accepted(accepted) => accepted.op,
        _ => None,
    }
}

/// The resource a PATCH or DELETE changes (404 when the principal cannot see it), and its
/// `If-Match` as the order's expected version: a value the service never issued is refused at
/// once; unversioned resources compare their body's hash here, in the door.
pub(super) fn current_if_match(
    service: &Service,
    principal: &Principal,
    asked: &Asked,
) -> Result<(Built, Option<u64>), RfError> {
    let current = current(service, principal, asked)?;
    let Some(wanted) = asked.header(header::IF_MATCH) else {
        return Ok((current, None));
    };
    let refused = || RfError::new(StatusCode::PRECONDITION_FAILED, PRECONDITION_FAILED, &[]);
    let wanted = wanted.trim();
    let version = if wanted == "*" {
        None
    } else if current.version.is_some() {
        let version = wanted
            .strip_prefix('"')
            .and_then(|w| w.strip_suffix('"'))
            .and_then(|w| w.parse::<u64>().ok())
            .ok_or_else(refused)?;
        Some(version)
    } else if wanted == etag(&current) {
        None
    } else {
        return Err(refused());
    };
    Ok((current, version))
}

/// Every write.
pub async fn write(
    service: &Arc<Service>,
    principal: &Principal,
    asked: Asked,
) -> Result<Response<Body>, RfError> {
    use Route as R;
    match (&asked.method, &asked.route) {
        (&Method::POST, R::Systems) => create_system(service, principal, &asked).await,
        (&Method::POST, R::Accounts) => create_account(service, principal, &asked).await,
        (&Method::POST, R::Subscriptions) => create_subscription(service, principal, &asked).await,
        (&Method::POST, R::SystemAction(system, action)) => {
            system_action(service, principal, &asked, system, action).await
        }
        (&Method::POST, R::AccountAction(account, action)) => {
            account_action(service, principal, &asked, account, action).await
        }
        (&Method::POST, R::ComposeAction) => compose_action(service, principal, &asked).await,
        (&Method::POST, R::ManagerReset) => manager_reset(service, principal, &asked).await,
        (&Method::POST, R::SubmitTestEvent) => {
            super::events::submit_test_event(service, principal, &asked).await
        }
        (&Method::POST, R::ApplianceRequests) => {
            appliance_request(service, principal, &asked).await
        }
        (&Method::PATCH, R::System(name)) => patch_system(service, principal, &asked, name).await,
        (&Method::PATCH, R::Account(name)) => patch_account(service, principal, &asked, name).await,
        (&Method::PATCH, R::AccountService) => {
            super::directory::patch_account_service(service, principal, &asked).await
        }
        (&Method::POST, R::DirectoryCertificates(kind)) => {
            super::directory::add_certificate(service, principal, &asked, *kind).await
        }
        (&Method::DELETE, R::DirectoryCertificate(kind, id)) => {
            super::directory::remove_certificate(service, principal, &asked, *kind, id).await
        }
        (
            &Method::DELETE,
            R::System(_) | R::Account(_) | R::Session(_) | R::Subscription(_) | R::Reservation(_),
        ) => delete(service, principal, &asked).await,
        _ => Err(not_allowed(&asked)),
    }
}

/// 405, with the methods the resource allows.
fn not_allowed(asked: &Asked) -> RfError {
    RfError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        messages::OPERATION_NOT_ALLOWED,
        &[],
    )
    .header(header::ALLOW, asked.route.allow_header())
}

/// The resource as it is now (for ETags), or 404.
fn current(service: &Service, principal: &Principal, asked: &Asked) -> Result<Built, RfError> {
    let state = service.context.core.state();
    let lens = Lens::new(&state, Some(principal), service);
    resources::build(&lens, &asked.route, &asked.path)
}

fn located(status: StatusCode, location: &str, body: Option<&Value>) -> Response<Body> {
    let mut response = match body {
        Some(body) => json_response(status, body),
        None => empty_response(status),
    };
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The system's resource as the principal sees it.
fn system_body(service: &Service, principal: &Principal, name: &str) -> Option<Value> {
    let state = service.context.core.state();
    let lens = Lens::new(&state, Some(principal), service);
    let system = lens.system(name)?;
    Some(resources::system_resource(&lens, system))
}

/// Waits for `op`'s outcome up to `order_wait_ms`: Some(outcome), or None to answer 202.
async fn wait(service: &Arc<Service>, op: OperationId) -> Result<Option<Outcome>, RfError> {
    let core = service.context.core.clone();
    let timeout = Duration::from_millis(service.config.order_wait_ms);
    let done = service
        .blocking(move || core.wait_finished(op, timeout))
        .await?;
    Ok(done.ok().and_then(|o| o.outcome))
}

/// 202 and a task monitor for `op`, which answers `kind`'s result once it is done.
fn accepted_task(service: &Service, op: OperationId, kind: TaskKind) -> Response<Body> {
    service
        .tasks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(op, kind);
    // No body and no Retry-After: sushy polls the monitor itself, and chokes on both.
    located(StatusCode::ACCEPTED, &monitor_uri(op.0), None)
}

/// The answer of a finished operation: its failure as an error, or `kind`'s success.
async fn finished(
    service: &Arc<Service>,
    principal: &Principal,
    op: OperationId,
    outcome: Outcome,
    kind: &TaskKind,
) -> Result<Response<Body>, RfError> {
    if let Outcome::Failed(failure) = outcome {
        let error = ApiError::new(
            ErrorCode::Internal,
            format!("operation {op} failed ({}): {failure}", failure.code()),
        );
        let mut refused = RfError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            messages::OPERATION_FAILED,
            &[],
        );
        refused.messages[0]["Message"] = Value::String(error.message);
        return Err(refused);
    }
    match kind {
        TaskKind::Compose { system } => {
            let body = system_body(service, principal, system);
            Ok(located(
                StatusCode::CREATED,
                &system_uri(system),
                body.as_ref(),
            ))
        }
        TaskKind::System { system } => match system_body(service, principal, system) {
            Some(body) => Ok(json_response(StatusCode::OK, &body)),
            None => Ok(empty_response(StatusCode::NO_CONTENT)),
        },
        TaskKind::DeleteSystem { system } => {
            let verb = Verb::DeleteSystem {
                name: system.as_str().into(),
            };
            carry_out(service, principal, order(verb, None)).await?;
            Ok(empty_response(StatusCode::NO_CONTENT))
        }
    }
}

/// GET of a task monitor: 202 while its operation runs, then the operation's answer.
pub async fn task_monitor(
    service: &Arc<Service>,
    principal: &Principal,
    op: u64,
) -> Result<Response<Body>, RfError> {
    let op = OperationId(op);
    let state = service.context.core.state();
    let lens = Lens::new(&state, Some(principal), service);
    let Some(operation) = state
        .operation(op)
        .filter(|o| lens.system(&o.system).is_some() || principal.scope.is_none())
        .cloned()
    else {
        return Err(RfError::not_found(&monitor_uri(op.0)));
    };
    drop(state);
    let Some(outcome) = operation.outcome.clone() else {
        return Ok(located(StatusCode::ACCEPTED, &monitor_uri(op.0), None));
    };
    let kind = service
        .tasks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&op)
        .unwrap_or(TaskKind::System {
            system: operation.system.to_string(),
        });
    finished(service, principal, op, outcome, &kind).await
}

/// Submits an operation's order and answers it, or its task monitor.
async fn operation(
    service: &Arc<Service>,
    principal: &Principal,
    request: Request,
    kind: TaskKind,
) -> Result<Response<Body>, RfError> {
    let reply = carry_out(service, principal, request).await?;
    let Some(op) = accepted_op(&reply) else {
        // Nothing to do (a repeat, a no-op): the resource as it is.
        return finished_now(service, principal, &kind).await;
    };
    match wait(service, op).await? {
        Some(outcome) => finished(service, principal, op, outcome, &kind).await,
        None => Ok(accepted_task(service, op, kind)),
    }
}

async fn finished_now(
    service: &Arc<Service>,
    principal: &Principal,
    kind: &TaskKind,
) -> Result<Response<Body>, RfError> {
    finished(service, principal, OperationId(0), Outcome::Completed, kind).await
}

/// Makes the default tenant of global accounts' systems when it is missing.
async fn ensure_tenant(
    service: &Arc<Service>,
    principal: &Principal,
    tenant: &crate::model::TenantName,
) -> Result<(), RfError> {
    if principal.scope.is_some()
        || tenant.as_str() != compose::DEFAULT_TENANT
        || service.context.core.state().tenants.contains_key(tenant)
    {
        return Ok(());
    }
    let verb = Verb::CreateTenant {
        name: tenant.clone(),
    };
    match carry_out(service, principal, order(verb, None)).await {
        Ok(_) => Ok(()),
        Err(e) if e.status == StatusCode::CONFLICT => Ok(()),
        Err(e) => Err(e),
    }
}

/// POST to Systems: specific or constrained composition.
async fn create_system(
    service: &Arc<Service>,
    principal: &Principal,
    asked: &Asked,
) -> Result<Response<Body>, RfError> {
    let body = json_body(asked)?;
    let composition = compose::composition(&body, principal.scope.as_ref())?;
    let Verb::Compose { system, .. } = &composition.verb else {
        return Err(RfError::internal("a composition that is not a compose"));
    };
    let system = system.to_string();
    if service
        .context
        .core
        .state()
        .systems
        .contains_key(system.as_str())
    {
        return Err(RfError::new(
            StatusCode::CONFLICT,
            messages::RESOURCE_ALREADY_EXISTS,
            &["ComputerSystem", "Name", &system],
        ));
    }
    ensure_tenant(service, principal, &composition.tenant).await?;
    let kind = TaskKind::Compose {
        system: system.clone(),
    };
    info!(%system, "compose through the HTTPS door");
    operation(service, principal, order(composition.verb, None), kind).await
}

/// PATCH of a system: `Links.ResourceBlocks` as the new set of blocks.
async fn patch_system(
    service: &Arc<Service>,
    principal: &Principal,
    asked: &Asked,
    name: &str,
) -> Result<Response<Body>, RfError> {
    let (built, version) = current_if_match(service, principal, asked)?;
    let body = json_body(asked)?;
    let Some(object) = body.as_object() else {
        return Err(RfError::bad_request(MALFORMED_JSON, &[]));
    };
    // Only Links is writable: the first other property is refused, named.
    let other = object.keys().find(|k| *k != "Links" && !k.starts_with('@'));
    if let Some(key) = other {
        let message = match built.value.get(key) {
            Some(_) => PROPERTY_NOT_WRITABLE,
            None => PROPERTY_UNKNOWN,
        };
        return Err(RfError::bad_request(message, &[key]));
    }
    let Some(wanted) = body.get("Links").and_then(|l| l.get("ResourceBlocks")) else {
        return Err(RfError::bad_request(NO_OPERATION, &[]));
    };
    let wanted = compose::blocks(wanted, "Links/ResourceBlocks")?;
    let held: Vec<crate::model::DeviceId> = built.value["Links"]["ResourceBlocks"]
        .as_array()
        .map(|b| {
            b.iter()
                .filter_map(|l| l["@odata.id"].as_str())
                .filter_map(compose::block_of)
                .collect()
        })
        .unwrap_or_default();
    let adding: Vec<_> = wanted
        .iter()
        .filter(|d| !held.contains(d))
        .cloned()
        .collect();
    let removing: Vec<_> = held
        .iter()
        .filter(|d| !wanted.contains(d))
        .cloned()
        .collect();
    let kind = TaskKind::System {
        system: name.to_string(),
    };
    let system: crate::model::SystemName = name.into();
    let verb = match (adding.is_empty(), removing.is_empty()) {
        (true, true) => return Ok(json_response(StatusCode::OK, &built.value)),
        (false, true) => Verb::Compose {
            system,
            selection: Selection::Specific(adding),
            create: None,
            tenant: None,
            reservation: None,
        },
        (true, false) => Verb::Decompose {
            system,
            devices: Some(removing),
        },
        (false, false) => {
            return Err(RfError::bad_request(
                messages::PROPERTY_VALUE_FORMAT_ERROR,
                &["blocks added and removed at once", "Links/ResourceBlocks"],
            ))
        }
    };
    operation(service, principal, order(verb, version), kind).await
}

/// `ComputerSystem.AddResourceBlock` / `RemoveResourceBlock`.
async fn system_action(
    service: &Arc<Service>,
    principal: &Principal,
    asked: &Asked,
    name: &str,
    action: &str,
) -> Result<Response<Body>, RfError> {
    let body = json_body(asked)?;
    let state = service.context.core.state();
    let lens = Lens::new(&state, Some(principal), service);
    let Some(system) = lens.system(name) else {
        return Err(RfError::not_found(&system_uri(name)));
    };
    let version = match body["ComputerSystemETag"].as_str() {
        Some(tag) if tag != format!("\"{}\"", system.version) => {
            return Err(RfError::new(
                StatusCode::PRECONDITION_FAILED,
                PRECONDITION_FAILED,
                &[],
            ))
        }
        Some(_) => Some(system.version),
        None => None,
    };
    drop(state);
    let target = body["ResourceBlock"]["@odata.id"].as_str().ok_or_else(|| {
        RfError::bad_request(ACTION_PARAMETER_MISSING, &[action, "ResourceBlock"])
    })?;
    let device = compose::block_of(target)
        .ok_or_else(|| RfError::bad_request(messages::RESOURCE_BLOCK_NOT_FOUND, &[target]))?;
    let system_name: crate::model::SystemName = name.into();
    let verb = match action {
        "ComputerSystem.AddResourceBlock" => Verb::Compose {
            system: system_name,
            selection: Selection::Specific(vec![device]),
            create: None,
            tenant: None,
            reservation: None,
        },
        "ComputerSystem.RemoveResourceBlock" => Verb::Decompose {
            system: system_name,
            devices: Some(vec![device]),
        },
        other => return Err(RfError::bad_request(ACTION_NOT_SUPPORTED, &[other])),
    };
    operation(
        service,
        principal,
        order(verb, version),
        TaskKind::System {
            system: name.to_string(),
        },
    )
    .await
}

/// The CompositionService's `Compose` action.
async fn compose_action(
    service: &Arc<Service>,
    principal: &Principal,
    asked: &Asked,
) -> Result<Response<Body>, RfError> {
    const ACTION: &str = "CompositionService.Compose";
    let body = json_body(asked)?;
    match body["RequestFormat"].as_str() {
        Some("Manifest") => {}
        Some(other) => {
            return Err(RfError::bad_request(
                ACTION_PARAMETER_VALUE_NOT_IN_LIST,
                &[other, "RequestFormat", ACTION],
            ))
        }
        None => {
            return Err(RfError::bad_request(
                ACTION_PARAMETER_MISSING,
                &[ACTION, "RequestFormat"],
            ))
        }
    }
    let kind = body["RequestType"]
        .as_str()
        .ok_or_else(|| RfError::bad_request(ACTION_PARAMETER_MISSING, &[ACTION, "RequestType"]))?;
    principal
        .require(crate::model::Privilege::ConfigureComponents)
        .map_err(|e| from_api(&e))?;
    if kind == "Apply" {
        if let Some(reservation) = body["ReservationId"].as_str() {
            return apply_reservation(service, principal, reservation).await;
        }
    }
    let manifest = body
        .get("Manifest")
        .cloned()
        .ok_or_else(|| RfError::bad_request(ACTION_PARAMETER_MISSING, &[ACTION, "Manifest"]))?;
    let stanzas = compose::stanzas(&manifest, principal.scope.as_ref())?;
    // Only Apply writes systems (and their tenant); a preview's tenant exists in its copy.
    for stanza in stanzas.iter().filter(|_| kind == "Apply") {
        if let Stanza::Compose {
            verb: Verb::Compose {
                create: Some(new), ..
            },
            ..
        } = stanza
        {
            ensure_tenant(service, principal, &new.tenant).await?;
        }
    }
    let state = service.context.core.state();
    let found = compose::preview(&state, &stanzas, &principal.by, principal.scope.as_ref())
        .map_err(|e| from_api(&e))?;
    drop(state);
    let mut answer = json!({"RequestFormat": "Manifest", "RequestType": kind});
    match kind {
        "Preview" => answer["Manifest"] = compose::answered(&manifest, &found, false),
        "PreviewReserve" => {
            let devices: Vec<_> = found.iter().flatten().flatten().cloned().collect();
            let id = shared::random_hex(6);
            let now = crate::api::time::now_ms();
            let verb = Verb::Reserve {
                id: id.clone(),
                devices,
                manifest: compose::answered(&manifest, &found, false).to_string(),
                at_ms: now,
                expires_ms: now + service.config.reservation_s * 1000,
            };
            carry_out(service, principal, order(verb, None)).await?;
            answer["Manifest"] = compose::answered(&manifest, &found, false);
            answer["ReservationId"] = Value::String(id);
        }
        "Apply" => {
            apply(service, principal, &stanzas).await?;
            answer["Manifest"] = compose::answered(&manifest, &found, true);
        }
        other => {
            return Err(RfError::bad_request(
                ACTION_PARAMETER_VALUE_NOT_IN_LIST,
                &[other, "RequestType", ACTION],
            ))
        }
    }
    Ok(json_response(StatusCode::OK, &answer))
}

/// Applies the stanzas one by one; a failure undoes the composes already applied (all or
/// nothing) and answers the failure.
async fn apply(
    service: &Arc<Service>,
    principal: &Principal,
    stanzas: &[Stanza],
) -> Result<(), RfError> {
    let mut composed: Vec<crate::model::SystemName> = Vec::new();
    for stanza in stanzas {
        let (request, system) = match stanza {
            Stanza::Compose { verb, .. } => {
                let Verb::Compose { system, .. } = verb else {
                    continue;
                };
                (order(verb.clone(), None), system.clone())
            }
            Stanza::Decompose { system, .. } => {
                let verb = Verb::Decompose {
                    system: system.clone(),
                    devices: None,
                };
                (order(verb, None), system.clone())
            }
        };
        let result = run_to_outcome(service, principal, request).await;
        if let Err(error) = result {
            for undo in composed.iter().rev() {
                let verb = Verb::Decompose {
                    system: undo.clone(),
                    devices: None,
                };
                let _ = run_to_outcome(service, principal, order(verb, None)).await;
                let verb = Verb::DeleteSystem { name: undo.clone() };
                let _ = carry_out(service, principal, order(verb, None)).await;
            }
            return Err(error);
        }
        if matches!(stanza, Stanza::Compose { .. }) {
            composed.push(system);
        }
    }
    Ok(())
}

/// An order and, if it starts an operation, its outcome (without a time limit: the manifest
/// is all or nothing).
async fn run_to_outcome(
    service: &Arc<Service>,
    principal: &Principal,
    request: Request,
) -> Result<(), RfError> {
    let reply = carry_out(service, principal, request).await?;
    let Some(op) = accepted_op(&reply) else {
        return Ok(());
    };
    let core = service.context.core.clone();
    let done = service
        .blocking(move || {
            core.wait_finished(op, Duration::from_millis(crate::api::OUTCOME_WAIT_MS))
        })
        .await?
        .map_err(|e| from_api(&ApiError::from(e)))?;
    match done.outcome {
        Some(Outcome::Failed(failure)) => {
            let mut error = RfError::new(StatusCode::CONFLICT, messages::OPERATION_FAILED, &[]);
            error.messages[0]["Message"] = Value::String(format!(
                "operation {op} failed ({}): {failure}",
                failure.code()
            ));
            Err(error)
        }
        _ => Ok(()),
    }
}

/// `Apply` with a `ReservationId`: composes the devices the reservation holds, as previewed.
async fn apply_reservation(
    service: &Arc<Service>,
    principal: &Principal,
    id: &str,
) -> Result<Response<Body>, RfError> {
    let state = service.context.core.state();
    let Some(reservation) = state.reservations.get(id).cloned() else {
        return Err(RfError::new(
            StatusCode::NOT_FOUND,
            messages::RESOURCE_NOT_FOUND,
            &["CompositionReservation", id],
        ));
    };
    drop(state);
    let manifest: Value = serde_json::from_str(&reservation.manifest).unwrap_or(Value::Null);
    let stanzas = compose::stanzas(&manifest, principal.scope.as_ref())?;
    let mut found = Vec::new();
    for stanza in &stanzas {
        let Stanza::Compose {
            verb:
                Verb::Compose {
                    system,
                    create,
                    tenant,
                    ..
                },
            ..
        } = stanza
        else {
            found.push(None);
            continue;
        };
        let devices: Vec<_> = manifest["Stanzas"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["Response"]["Name"] == system.as_str()))
            .map(|s| compose::blocks(&s["Response"]["Links"]["ResourceBlocks"], "Response"))
            .transpose()?
            .unwrap_or_default();
        let verb = Verb::Compose {
            system: system.clone(),
            selection: Selection::Specific(devices.clone()),
            create: create.clone(),
            tenant: tenant.clone(),
            reservation: Some(id.to_string()),
        };
        run_to_outcome(service, principal, order(verb, None)).await?;
        found.push(Some(devices));
    }
    let answer = json!({
        "RequestFormat": "Manifest",
        "RequestType": "Apply",
        "Manifest": compose::answered(&manifest, &found, true),
    });
    Ok(json_response(StatusCode::OK, &answer))
}

/// A role as typed (`Administrator`, `Operator`, `ReadOnly`) for the property at `path`.
pub(super) fn role_at(value: &Value, path: &str) -> Result<AccountRole, RfError> {
    let text = value.as_str().ok_or_else(|| {
        RfError::bad_request(PROPERTY_VALUE_TYPE_ERROR, &[&value.to_string(), path])
    })?;
    text.parse::<AccountRole>()
        .ok()
        .filter(|role| role.name() == text)
        .ok_or_else(|| RfError::bad_request(PROPERTY_VALUE_NOT_IN_LIST, &[text, path]))
}

fn role_of(value: &Value) -> Result<AccountRole, RfError> {
    role_at(value, "RoleId")
}

/// A password for the property at `path` (an error never shows it).
pub(super) fn secret_at(value: &Value, path: &str) -> Result<Secret, RfError> {
    value
        .as_str()
        .map(|p| Secret(p.to_string()))
        .ok_or_else(|| RfError::bad_request(PROPERTY_VALUE_TYPE_ERROR, &["(hidden)", path]))
}

fn password_of(value: &Value) -> Result<Password, RfError> {
    secret_at(value, "Password").map(Password::Plain)
}

/// `Oem.Appliance.Tenant` of `object` (None when absent); `at` is where `object` stands in the
/// body (empty at its root).
pub(super) fn oem_tenant(
    object: &Value,
    at: &str,
) -> Result<Option<crate::model::TenantName>, RfError> {
    match &object["Oem"]["Appliance"]["Tenant"] {
        Value::Null => Ok(None),
        Value::String(tenant) => Ok(Some(tenant.as_str().into())),
        other => {
            let path = match at.is_empty() {
                true => "Oem/Appliance/Tenant".to_string(),
                false => format!("{at}/Oem/Appliance/Tenant"),
            };
            Err(RfError::bad_request(
                PROPERTY_VALUE_TYPE_ERROR,
                &[&other.to_string(), &path],
            ))
        }
    }
}

/// POST to Accounts: `UserName`, `Password`, `RoleId` (and `Enabled`).
async fn create_account(
    service: &Arc<Service>,
    principal: &Principal,
    asked: &Asked,
) -> Result<Response<Body>, RfError> {
    let body = json_body(asked)?;
    let object = body.as_object().cloned().unwrap_or_default();
    let unknown = object.keys().find(|k| {
        !matches!(
            k.as_str(),
            "UserName" | "Password" | "RoleId" | "Enabled" | "Oem"
        ) && !k.starts_with('@')
    });
    if let Some(key) = unknown {
        return Err(RfError::bad_request(PROPERTY_UNKNOWN, &[key]));
    }
    // The account's tenant: `Oem.Appliance.Tenant`, else the tenant of who creates it (a
    // tenant's administrator makes accounts of its tenant only; decide refuses the others).
    let tenant = oem_tenant(&body, "")?.or_else(|| principal.scope.clone());
    let name = body["UserName"]
        .as_str()
        .ok_or_else(|| RfError::bad_request(PROPERTY_MISSING, &["UserName"]))?;
    let password = password_of(
        body.get("Password")
            .ok_or_else(|| RfError::bad_request(PROPERTY_MISSING, &["Password"]))?,
    )?;
    let role = role_of(
        body.get("RoleId")
            .ok_or_else(|| RfError::bad_request(PROPERTY_MISSING, &["RoleId"]))?,
    )?;
    let verb = Verb::CreateAccount {
        name: name.into(),
        role,
        tenant,
        password,
        password_change_required: false,
    };
    carry_out(service, principal, order(verb, None)).await?;
    if body["Enabled"] == Value::Bool(false) {
        let verb = Verb::ChangeAccount {
            name: name.into(),
            change: AccountChange::Enabled(false),
        };
        carry_out(service, principal, order(verb, None)).await?;
    }
    let state = service.context.core.state();
    let lens = Lens::new(&state, Some(principal), service);
    let body =
        resources::visible_account(&lens, name).map(|a| resources::account_resource(&lens, a));
    Ok(located(
        StatusCode::CREATED,
        &account_uri(name),
        body.as_ref(),
    ))
}

/// PATCH of an account: `Password`, `RoleId`, `Enabled`, `Locked` (false), and
/// `PasswordChangeRequired`. Unknown properties beside known ones are reported, not fatal.
async fn patch_account(
    service: &Arc<Service>,
    principal: &Principal,
    asked: &Asked,
    name: &str,
) -> Result<Response<Body>, RfError> {
    may_change_account(principal, name)?;
    let (built, mut version) = current_if_match(service, principal, asked)?;
    let body = json_body(asked)?;
    let object = body.as_object().cloned().unwrap_or_default();
    let mut changes = Vec::new();
    let mut ignored = Vec::new();
    for (key, value) in &object {
        let change = match key.as_str() {
            "Password" => AccountChange::Password {
                password: password_of(value)?,
                change_required: false,
            },
            "RoleId" => AccountChange::Role(role_of(value)?),
            "Enabled" => AccountChange::Enabled(value.as_bool().ok_or_else(|| {
                RfError::bad_request(PROPERTY_VALUE_TYPE_ERROR, &[&value.to_string(), "Enabled"])
            })?),
            "Locked" if *value == Value::Bool(false) => AccountChange::Locked { until_ms: None },
            "Locked" => {
                return Err(RfError::bad_request(
                    PROPERTY_VALUE_NOT_IN_LIST,
                    &[&value.to_string(), "Locked"],
                ))
            }
            "PasswordChangeRequired" => {
                AccountChange::PasswordChangeRequired(value.as_bool().ok_or_else(|| {
                    RfError::bad_request(
                        PROPERTY_VALUE_TYPE_ERROR,
                        &[&value.to_string(), "PasswordChangeRequired"],
                    )
                })?)
            }
            key if key.starts_with('@') => continue,
            key if built.value.get(key).is_some() => {
                ignored.push(PROPERTY_NOT_WRITABLE.about_property(key));
                continue;
            }
            key => {
                ignored.push(PROPERTY_UNKNOWN.about_property(key));
                continue;
            }
        };
        changes.push(change);
    }
    if changes.is_empty() {
        let error = match ignored.is_empty() {
            true => RfError::bad_request(NO_OPERATION, &[]),
            false => RfError::with(StatusCode::BAD_REQUEST, ignored),
        };
        return Err(error);
    }
    for change in changes {
        let verb = Verb::ChangeAccount {
            name: AccountName::from(name),
            change,
        };
        carry_out(service, principal, order(verb, version.take())).await?;
    }
    service.forget_basic();
    let state = service.context.core.state();
    let lens = Lens::new(&state, Some(principal), service);
    let mut body = resources::visible_account(&lens, name)
        .map(|a| resources::account_resource(&lens, a))
        .unwrap_or_else(|| json!({}));
    if !ignored.is_empty() {
        body["@Message.ExtendedInfo"] = Value::Array(ignored);
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// DELETE: the resource's one verb. A system that holds devices is decomposed first (a task,
/// then it is deleted); another's account takes ConfigureUsers, refused before its existence
/// is looked at; a session is one's own, or anyone's with ConfigureManager (`api::handle`).
async fn delete(
    service: &Arc<Service>,
    principal: &Principal,
    asked: &Asked,
) -> Result<Response<Body>, RfError> {
    use Route as R;
    if let R::Account(name) = &asked.route {
        may_change_account(principal, name)?;
    }
    let (built, version) = current_if_match(service, principal, asked)?;
    let verb = match &asked.route {
        R::System(name) => {
            let holds = built.value["Links"]["ResourceBlocks"]
                .as_array()
                .is_some_and(|blocks| !blocks.is_empty());
            if holds {
                let verb = Verb::Decompose {
                    system: name.as_str().into(),
                    devices: None,
                };
                let kind = TaskKind::DeleteSystem {
                    system: name.to_string(),
                };
                return operation(service, principal, order(verb, version), kind).await;
            }
            Verb::DeleteSystem {
                name: name.as_str().into(),
            }
        }
        R::Account(name) => Verb::DeleteAccount {
            name: name.as_str().into(),
        },
        R::Session(id) => Verb::CloseSession {
            id: id.clone(),
            end: SessionEnd::Logout,
        },
        R::Subscription(id) => Verb::DeleteSubscription { id: id.clone() },
        R::Reservation(id) => Verb::EndReservation {
            id: id.clone(),
            end: ReservationEnd::Cancelled,
        },
        _ => return Err(not_allowed(asked)),
    };
    carry_out(service, principal, order(verb, version)).await?;
    match &asked.route {
        R::Account(_) => service.forget_basic(),
        R::Session(id) => {
            service
                .seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id);
        }
        _ => {}
    }
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// Another account than one's own takes ConfigureUsers: refused (403) before its existence is
/// looked at, so a ReadOnly account learns nothing from the answer.
fn may_change_account(principal: &Principal, name: &str) -> Result<(), RfError> {
    if principal.is(&AccountName::from(name)) {
        return Ok(());
    }
    principal
        .require(crate::model::Privilege::ConfigureUsers)
        .map_err(|e| from_api(&e))
}

/// `ManagerAccount.GenerateSecretKey` (the key, once, base32) and `ClearSecretKey`.
async fn account_action(
    service: &Arc<Service>,
    principal: &Principal,
    asked: &Asked,
    name: &str,
    action: &str,
) -> Result<Response<Body>, RfError> {
    json_body(asked)?;
    may_change_account(principal, name)?;
    let state = service.context.core.state();
    let lens = Lens::new(&state, Some(principal), service);
    // A directory user has no account resource; its own key (or, for an administrator, a
    // key it set) is changed at the same URI.
    let local = resources::visible_account(&lens, name).is_some();
    let directory_user = !local
        && state.directory.is_some()
        && (principal.is(&AccountName::from(name))
            || state
                .directory_users
                .get(name)
                .is_some_and(|u| u.totp.is_some()));
    if !local && !directory_user {
        return Err(RfError::not_found(&account_uri(name)));
    }
    drop(state);
    let (totp, key) = match action {
        "ManagerAccount.GenerateSecretKey" => {
            let secret = shared::new_totp_secret();
            (
                Some(service.keyring.seal(&secret)),
                Some(shared::totp_secret_base32(&secret)),
            )
        }
        "ManagerAccount.ClearSecretKey" => (None, None),
        other => return Err(RfError::bad_request(ACTION_NOT_SUPPORTED, &[other])),
    };
    let verb = match local {
        true => Verb::ChangeAccount {
            name: name.into(),
            change: AccountChange::Totp(totp),
        },
        false => Verb::ChangeDirectoryUser {
            name: name.into(),
            change: DirectoryUserChange::Totp(totp),
        },
    };
    carry_out(service, principal, order(verb, None)).await?;
    match key {
        Some(key) => Ok(json_response(StatusCode::OK, &json!({"SecretKey": key}))),
        None => Ok(empty_response(StatusCode::NO_CONTENT)),
    }
}

/// POST to Subscriptions: `Destination` (https), `Context`, `Protocol` (Redfish).
async fn create_subscription(
    service: &Arc<Service>,
    principal: &Principal,
    asked: &Asked,
) -> Result<Response<Body>, RfError> {
    let body = json_body(asked)?;
    let destination = body["Destination"]
        .as_str()
        .ok_or_else(|| RfError::bad_request(PROPERTY_MISSING, &["Destination"]))?;
    if let Some(protocol) = body["Protocol"].as_str() {
        if protocol != "Redfish" {
            return Err(RfError::bad_request(
                PROPERTY_VALUE_NOT_IN_LIST,
                &[protocol, "Protocol"],
            ));
        }
    }
    if !destination.starts_with("https://")
        || destination.len() > 2048
        || super::events::host_of(destination).is_none()
    {
        return Err(RfError::bad_request(
            messages::PROPERTY_VALUE_FORMAT_ERROR,
            &[destination, "Destination"],
        ));
    }
    let id = shared::random_hex(4);
    let subscription = Subscription {
        id: id.clone(),
        destination: destination.to_string(),
        context: body["Context"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(256)
            .collect(),
        account: principal.account.clone().unwrap_or_default(),
        created_ms: crate::api::time::now_ms(),
    };
    carry_out(
        service,
        principal,
        order(Verb::CreateSubscription { subscription }, None),
    )
    .await?;
    let location = crate::api::redfish::routes::uri(&format!("EventService/Subscriptions/{id}"));
    let state = service.context.core.state();
    let lens = Lens::new(&state, Some(principal), service);
    let body = resources::build(&lens, &Route::Subscription(id), &location)
        .ok()
        .map(|b| b.value);
    Ok(located(StatusCode::CREATED, &location, body.as_ref()))
}

/// `Manager.Reset` (`GracefulRestart`): the service stops cleanly (its journal durable) and its
/// supervisor, PID 1, starts it again. Under `appliance serve` there is no supervisor: the
/// process ends.
async fn manager_reset(
    service: &Arc<Service>,
    principal: &Principal,
    asked: &Asked,
) -> Result<Response<Body>, RfError> {
    const ACTION: &str = "Manager.Reset";
    principal
        .require(crate::model::Privilege::ConfigureManager)
        .map_err(|e| from_api(&e))?;
    let body = json_body(asked)?;
    match body["ResetType"].as_str() {
        None | Some("GracefulRestart") => {}
        Some(other) => {
            return Err(RfError::bad_request(
                ACTION_PARAMETER_VALUE_NOT_IN_LIST,
                &[other, "ResetType", ACTION],
            ))
        }
    }
    info!(by = %principal.by, "Manager.Reset: restarting the service");
    service.runtime.spawn(async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGTERM);
    });
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// The appliance's own door for its CLI: the body is one control-protocol request, the answer
/// the control protocol's JSON (200) or a Redfish error carrying the appliance's code.
async fn appliance_request(
    service: &Arc<Service>,
    principal: &Principal,
    asked: &Asked,
) -> Result<Response<Body>, RfError> {
    let text =
        std::str::from_utf8(&asked.body).map_err(|_| RfError::bad_request(MALFORMED_JSON, &[]))?;
    let request = decode_request(text.trim()).map_err(|e| from_api(&e))?;
    let (context, principal) = (service.context.clone(), principal.clone());
    let answer = service
        .blocking(move || handle(&context, &principal, request))
        .await?;
    match &answer {
        Ok(_) => {
            let bytes = encode_answer(&answer);
            let mut response = json_response(StatusCode::OK, &Value::Null);
            *response.body_mut() = super::full(bytes);
            Ok(response)
        }
        Err(error) => Err(from_api(error)),
    }
}
