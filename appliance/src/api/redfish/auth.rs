//! The door's authentication: `X-Auth-Token` sessions and HTTP Basic, logins (POST to
//! Sessions, with a TOTP code for accounts that have a secret key), lockout after repeated
//! failures, the idle timeout of sessions, and what an account that must change its password
//! may still do. Credentials are checked before anything else is looked at.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use serde_json::Value;
use tracing::{info, warn};

use super::messages::{RfError, NO_VALID_SESSION, PASSWORD_CHANGE_REQUIRED, PROPERTY_MISSING};
use super::resources::{self, account_uri, session_uri, Lens};
use super::routes::Route;
use super::{json_response, Asked, Body, Service};
use crate::api::auth::{self as shared, Principal};
use crate::api::{handle, ApiError, ErrorCode, Meta, Request};
use crate::decide::command::Verb;
use crate::model::directory::{DirectoryUserChange, DirectoryUserRecord};
use crate::model::{
    Account, AccountChange, AccountName, Door, Origin, Password, ReservationEnd, SessionEnd, State,
};

/// How often expired sessions and reservations are ended.
const SWEEP_INTERVAL_S: u64 = 30;
/// Fewest milliseconds a failed login takes (whatever failed), so failures do not time the
/// difference between an unknown account and a wrong password.
const FAILURE_DELAY_MS: u64 = 200;

/// The service's UUID, kept in `DIR/service-uuid` (made at the first start).
pub fn stored_uuid(dir: &std::path::Path) -> String {
    let path = dir.join("service-uuid");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let text = text.trim();
        if text.len() == 36 {
            return text.to_string();
        }
    }
    let uuid = resources::derived_uuid(&shared::random_hex(16), "service");
    if let Err(e) = std::fs::write(&path, format!("{uuid}\n")) {
        warn!(path = %path.display(), error = %e, "service UUID not kept; it changes at the next start");
    }
    uuid
}

/// The principal of a directory user through the HTTPS door: its groups' role and tenant.
fn principal_of_directory(
    name: &str,
    grant: &crate::model::directory::DirectoryGrant,
    session: Option<&str>,
) -> Principal {
    let mut by = Origin::account(Door::Api, name);
    by.session = session.map(String::from);
    Principal {
        by,
        account: Some(name.into()),
        role: grant.role,
        scope: grant.tenant.clone(),
        password_change_required: false,
    }
}

/// The principal of an account through the HTTPS door (and the session it came through).
pub fn principal_of(account: &Account, session: Option<&str>) -> Principal {
    let mut by = Origin::account(Door::Api, account.name.as_str());
    by.session = session.map(String::from);
    Principal {
        by,
        account: Some(account.name.clone()),
        role: account.role,
        scope: account.tenant.clone(),
        password_change_required: account.password_change_required,
    }
}

/// Who the request comes from: a session's token, or Basic credentials.
pub async fn authenticate(
    service: &Arc<Service>,
    headers: &HeaderMap,
) -> Result<Principal, RfError> {
    if let Some(token) = headers.get("x-auth-token") {
        let token = token.to_str().map_err(|_| session_refused())?;
        return by_token(service, token);
    }
    let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(RfError::unauthorized());
    };
    let (name, password) = basic_credentials(basic).ok_or_else(RfError::unauthorized)?;
    by_password(service, &name, &password, Login::Basic).await
}

fn session_refused() -> RfError {
    RfError::new(StatusCode::UNAUTHORIZED, NO_VALID_SESSION, &[]).header(
        header::WWW_AUTHENTICATE,
        r#"Basic realm="Redfish", charset="UTF-8""#,
    )
}

fn by_token(service: &Arc<Service>, token: &str) -> Result<Principal, RfError> {
    let hash = shared::sha256_hex(token);
    let state = service.context.core.state();
    let session = state
        .sessions
        .values()
        .find(|s| s.token_sha256 == hash)
        .ok_or_else(session_refused)?;
    let now = Instant::now();
    let timeout = Duration::from_secs(service.config.session_timeout_s);
    {
        let mut seen = service.seen.lock().unwrap_or_else(|e| e.into_inner());
        let last = *seen.entry(session.id.clone()).or_insert(now);
        if now.duration_since(last) > timeout {
            seen.remove(&session.id);
            end_session(service, &session.id, SessionEnd::Expired);
            return Err(session_refused());
        }
        seen.insert(session.id.clone(), now);
    }
    if let Some(grant) = &session.grant {
        return Ok(principal_of_directory(
            session.account.as_str(),
            grant,
            Some(&session.id),
        ));
    }
    let account = state
        .accounts
        .get(&session.account)
        .filter(|a| a.enabled)
        .ok_or_else(session_refused)?;
    Ok(principal_of(account, Some(&session.id)))
}

/// `Basic <base64(name:password)>`.
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_string(), password.to_string()))
}

/// How credentials came: HTTP Basic on a request, or a session's login with its TOTP code (if
/// any). A directory user's Basic credentials are remembered for `DIRECTORY_BASIC_TTL`, so a
/// script's requests do not each bind to the directory; a login always asks it.
#[derive(Debug, Clone, Copy)]
pub enum Login<'a> {
    Basic,
    Session { code: Option<&'a str> },
}

impl Login<'_> {
    fn code(&self) -> Option<&str> {
        match self {
            Login::Basic => None,
            Login::Session { code } => *code,
        }
    }
}

/// How long a directory user's Basic credentials are taken without asking the directory (a
/// user taken out of a group keeps its role this long through Basic, as a session keeps it).
pub const DIRECTORY_BASIC_TTL: Duration = Duration::from_secs(60);
/// A directory login answers within this many times the settings' timeout (each of its steps,
/// two connections and four operations, is bounded by one).
const DIRECTORY_LOGIN_STEPS: u32 = 3;
/// The most directory users' Basic credentials remembered at once.
const DIRECTORY_BASIC_MAX: usize = 1024;

/// Checks a name and password (and a TOTP code, when given or the account needs one): the
/// principal, or 401 after a failure is counted toward the lockout.
pub async fn by_password(
    service: &Arc<Service>,
    name: &str,
    password: &str,
    login: Login<'_>,
) -> Result<Principal, RfError> {
    let started = Instant::now();
    let result = check_password(service, name, password, login).await;
    if result.is_err() {
        let spent = started.elapsed();
        let floor = Duration::from_millis(FAILURE_DELAY_MS);
        if spent < floor {
            tokio::time::sleep(floor - spent).await;
        }
    }
    result
}

async fn check_password(
    service: &Arc<Service>,
    name: &str,
    password: &str,
    login: Login<'_>,
) -> Result<Principal, RfError> {
    let code = login.code();
    let state = service.context.core.state();
    let Some(account) = state.accounts.get(name).cloned() else {
        // Local accounts first; a name they do not know is the directory's, if one is set.
        let directory = state.directory.clone();
        let kept = state.directory_users.get(name).cloned().unwrap_or_default();
        drop(state);
        return match directory {
            Some(settings) => by_directory(service, settings, kept, name, password, login).await,
            None => {
                service.metrics.login("local", "refused");
                Err(RfError::unauthorized())
            }
        };
    };
    drop(state);
    let now_ms = crate::api::time::now_ms();
    if !account.enabled || account.is_locked(now_ms) {
        let result = if account.enabled { "locked" } else { "refused" };
        service.metrics.login("local", result);
        return Err(RfError::unauthorized());
    }
    let cache_key = shared::sha256_hex(&format!("{name}\u{0}{password}"));
    let cached = service
        .basic
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&cache_key)
        .is_some_and(|hash| *hash == account.password_hash);
    let matches = cached || {
        let (hash, typed) = (account.password_hash.clone(), password.to_string());
        service
            .blocking(move || shared::verify_password(&hash, &typed))
            .await?
    };
    if !matches {
        service.metrics.login("local", "refused");
        count_failure(service, &account.name, Lockable::Account);
        return Err(RfError::unauthorized());
    }
    if let Some(sealed) = &account.totp {
        // An account with a secret key logs in with a code, through a session only.
        let secret = service
            .keyring
            .open(sealed)
            .ok_or_else(|| RfError::internal("the TOTP secret key does not open"))?;
        let now_s = now_ms / 1000;
        if !code.is_some_and(|c| shared::check_totp(&secret, c, now_s)) {
            service.metrics.login("local", "refused");
            count_failure(service, &account.name, Lockable::Account);
            return Err(RfError::unauthorized());
        }
    } else if !cached {
        service
            .basic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cache_key, account.password_hash.clone());
    }
    service
        .failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&account.name);
    service.metrics.login("local", "ok");
    Ok(principal_of(&account, None))
}

/// Logs a user the local accounts do not know in through the directory (on a blocking thread:
/// each step bounded by the settings' timeout), with what the appliance keeps of it: a locked
/// user is refused without asking the directory, a user with a TOTP key needs its code. A
/// directory that does not answer is a 503 that says so; a wrong password, an unknown user or
/// a user in no mapped group a plain 401. Wrong passwords and codes count toward the lockout.
async fn by_directory(
    service: &Arc<Service>,
    settings: crate::model::directory::DirectorySettings,
    kept: DirectoryUserRecord,
    name: &str,
    password: &str,
    login: Login<'_>,
) -> Result<Principal, RfError> {
    use crate::api::directory::{self, DirectoryError};
    let now_ms = crate::api::time::now_ms();
    if kept.is_locked(now_ms) {
        service.metrics.login("directory", "locked");
        return Err(RfError::unauthorized());
    }
    let code = login.code();
    // Basic without a second factor: credentials the directory accepted a moment ago, under
    // the same settings (their Debug form: everything but the bind password).
    let cache_key = (matches!(login, Login::Basic) && kept.totp.is_none())
        .then(|| shared::sha256_hex(&format!("{name}\u{0}{password}\u{0}{settings:?}")));
    if let Some(key) = &cache_key {
        let remembered = service
            .directory_basic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .filter(|(_, at)| at.elapsed() < DIRECTORY_BASIC_TTL)
            .map(|(grant, _)| grant.clone());
        if let Some(grant) = remembered {
            service.metrics.login("directory", "ok");
            return Ok(principal_of_directory(name, &grant, None));
        }
    }
    let bind_password = service
        .keyring
        .open(&settings.bind_password)
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| RfError::internal("the directory's bind password does not open"))?;
    let config = settings.with_password(bind_password);
    let (settings_timeout, settings_uri) = (config.timeout(), config.uri.clone());
    let (user, typed) = (name.to_string(), password.to_string());
    let account = AccountName::from(name);
    let started = Instant::now();
    // Each step is bounded by the timeout; the whole login by a few of them, so a directory
    // that answers every step slowly still gets an answer out in time (the thread it holds
    // ends at its next step's timeout).
    let deadline = settings_timeout * DIRECTORY_LOGIN_STEPS;
    let asked = service.blocking(move || directory::authenticate(&config, &user, &typed));
    let checked = match tokio::time::timeout(deadline, asked).await {
        Ok(checked) => checked?,
        Err(_) => Err(DirectoryError::Unreachable {
            uri: settings_uri,
            reason: format!(
                "no answer to the whole login within {} ms",
                deadline.as_millis()
            ),
        }),
    };
    service.metrics.directory_login(started.elapsed());
    match checked {
        Ok(user) => {
            if let Some(sealed) = &kept.totp {
                let secret = service
                    .keyring
                    .open(sealed)
                    .ok_or_else(|| RfError::internal("the TOTP secret key does not open"))?;
                if !code.is_some_and(|c| shared::check_totp(&secret, c, now_ms / 1000)) {
                    service.metrics.login("directory", "refused");
                    count_failure(service, &account, Lockable::DirectoryUser);
                    return Err(RfError::unauthorized());
                }
            }
            service.metrics.login("directory", "ok");
            service
                .failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&account);
            info!(account = %name, role = user.role.name(), tenant = ?user.tenant, "directory login");
            let grant = crate::model::directory::DirectoryGrant {
                role: user.role,
                tenant: user.tenant,
            };
            if let Some(key) = cache_key {
                let mut remembered = service
                    .directory_basic
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                remembered.retain(|_, (_, at)| at.elapsed() < DIRECTORY_BASIC_TTL);
                if remembered.len() >= DIRECTORY_BASIC_MAX {
                    remembered.clear();
                }
                remembered.insert(key, (grant.clone(), Instant::now()));
            }
            Ok(principal_of_directory(name, &grant, None))
        }
        Err(
            e @ (DirectoryError::WrongPassword
            | DirectoryError::UnknownUser
            | DirectoryError::NotMapped { .. }),
        ) => {
            warn!(account = %name, error = %e, "directory login refused");
            service.metrics.login("directory", "refused");
            if e == DirectoryError::WrongPassword {
                // Only users who exist count toward a lockout.
                count_failure(service, &account, Lockable::DirectoryUser);
            }
            Err(RfError::unauthorized())
        }
        Err(e) => {
            warn!(account = %name, error = %e, "the directory did not answer the login");
            service.metrics.login("directory", "unavailable");
            Err(super::messages::from_api(&ApiError::new(
                ErrorCode::DirectoryUnavailable,
                format!(
                    "the directory could not check this login: {e}; local accounts still log in"
                ),
            )))
        }
    }
}

/// Who a lockout locks: a local account, or a directory user (kept by the appliance).
#[derive(Clone, Copy)]
enum Lockable {
    Account,
    DirectoryUser,
}

/// Counts a failed login; the threshold-th failure within the window locks the name.
fn count_failure(service: &Arc<Service>, name: &AccountName, lockable: Lockable) {
    let config = &service.config;
    let window = Duration::from_secs(config.lockout_window_s);
    let now = Instant::now();
    let lock = {
        let mut failures = service.failures.lock().unwrap_or_else(|e| e.into_inner());
        let recent = failures.entry(name.clone()).or_default();
        recent.retain(|at| now.duration_since(*at) < window);
        recent.push(now);
        let lock = recent.len() >= config.lockout_threshold as usize;
        if lock {
            recent.clear();
        }
        lock
    };
    if !lock {
        return;
    }
    let until_ms = Some(crate::api::time::now_ms() + config.lockout_duration_s * 1000);
    let verb = match lockable {
        Lockable::Account => Verb::ChangeAccount {
            name: name.clone(),
            change: AccountChange::Locked { until_ms },
        },
        Lockable::DirectoryUser => Verb::ChangeDirectoryUser {
            name: name.clone(),
            change: DirectoryUserChange::Locked { until_ms },
        },
    };
    warn!(account = %name, "too many failed logins: locked");
    appliance_order(service, verb);
}

/// An order of the appliance itself (lockout, expiry), in the background.
fn appliance_order(service: &Arc<Service>, verb: Verb) {
    let context = service.context.clone();
    service.runtime.spawn_blocking(move || {
        let root = Principal::root(Door::Appliance);
        if let Err(e) = handle(&context, &root, Request::order(verb, Meta::default())) {
            warn!(error = %e, "the appliance's own order was refused");
        }
    });
}

fn end_session(service: &Arc<Service>, id: &str, end: SessionEnd) {
    appliance_order(
        service,
        Verb::CloseSession {
            id: id.to_string(),
            end,
        },
    );
}

/// POST to Sessions: `{"UserName", "Password"[, "Token"]}` -> 201, the session, its token.
pub async fn login(service: &Arc<Service>, asked: &Asked) -> Result<Response<Body>, RfError> {
    let body: Value = super::orders::json_body(asked)?;
    let text = |field: &str| -> Result<String, RfError> {
        match &body[field] {
            Value::String(text) => Ok(text.clone()),
            Value::Null => Err(RfError::bad_request(PROPERTY_MISSING, &[field])),
            other => Err(RfError::bad_request(
                super::messages::PROPERTY_VALUE_TYPE_ERROR,
                &[&other.to_string(), field],
            )),
        }
    };
    let (name, password) = (text("UserName")?, text("Password")?);
    let code = body["Token"].as_str().map(String::from);
    let login = Login::Session {
        code: code.as_deref(),
    };
    let principal = by_password(service, &name, &password, login).await?;
    let (id, token) = (shared::new_session_id(), shared::new_token());
    let local = service
        .context
        .core
        .state()
        .accounts
        .contains_key(name.as_str());
    let grant = (!local).then(|| crate::model::directory::DirectoryGrant {
        role: principal.role,
        tenant: principal.scope.clone(),
    });
    let verb = Verb::OpenSession {
        id: id.clone(),
        account: AccountName::from(name.as_str()),
        token_sha256: shared::sha256_hex(&token),
        at_ms: crate::api::time::now_ms(),
        grant,
    };
    let context = service.context.clone();
    // An account that must change its password may still log in (to change it): the session
    // is opened in its name, past the gate that refuses its other orders.
    let opener = Principal {
        password_change_required: false,
        ..principal.clone()
    };
    service
        .blocking(move || handle(&context, &opener, Request::order(verb, Meta::default())))
        .await?
        .map_err(|e| super::messages::from_api(&e))?;
    service
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone(), Instant::now());
    info!(account = %name, session = %id, "logged in");
    let state = service.context.core.state();
    let lens = Lens::new(&state, Some(&principal), service);
    let mut value = resources::session(&lens, &id).unwrap_or(Value::Null);
    if principal.password_change_required {
        value["@Message.ExtendedInfo"] =
            serde_json::json!([PASSWORD_CHANGE_REQUIRED.info(&[&account_uri(&name)])]);
    }
    let mut response = json_response(StatusCode::CREATED, &value);
    let headers = response.headers_mut();
    for (name, text) in [("location", session_uri(&id)), ("x-auth-token", token)] {
        if let Ok(value) = HeaderValue::from_str(&text) {
            headers.insert(name, value);
        }
    }
    Ok(response)
}

/// An account that must change its password may read and PATCH its own account and end its
/// session; anything else is 403 PasswordChangeRequired.
pub fn refuse_until_password_changed(
    principal: &Principal,
    route: &Route,
    method: &Method,
) -> Result<(), RfError> {
    if !principal.password_change_required {
        return Ok(());
    }
    let Some(account) = &principal.account else {
        return Ok(());
    };
    let allowed = match route {
        Route::Account(name) => {
            name == account.as_str()
                && (method == Method::GET || method == Method::HEAD || method == Method::PATCH)
        }
        Route::Session(id) => principal.by.session.as_deref() == Some(id.as_str()),
        Route::Root | Route::Versions | Route::Odata | Route::Metadata | Route::Schema(_) => true,
        Route::Sessions | Route::SessionsMembers => method == Method::POST,
        _ => false,
    };
    if allowed {
        return Ok(());
    }
    Err(RfError::new(
        StatusCode::FORBIDDEN,
        PASSWORD_CHANGE_REQUIRED,
        &[&account_uri(account.as_str())],
    ))
}

/// Ends idle sessions and expired reservations, every `SWEEP_INTERVAL_S`.
pub fn start_sweeper(service: &Arc<Service>) {
    let service = service.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(SWEEP_INTERVAL_S));
        loop {
            tick.tick().await;
            sweep(&service, &service.context.core.state());
        }
    });
}

fn sweep(service: &Arc<Service>, state: &State) {
    let timeout = Duration::from_secs(service.config.session_timeout_s);
    let now = Instant::now();
    let idle: Vec<String> = {
        let mut seen = service.seen.lock().unwrap_or_else(|e| e.into_inner());
        for id in state.sessions.keys() {
            seen.entry(id.clone()).or_insert(now);
        }
        seen.retain(|id, _| state.sessions.contains_key(id));
        seen.iter()
            .filter(|(_, last)| now.duration_since(**last) > timeout)
            .map(|(id, _)| id.clone())
            .collect()
    };
    for id in idle {
        service
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        end_session(service, &id, SessionEnd::Expired);
    }
    let now_ms = crate::api::time::now_ms();
    for reservation in state
        .reservations
        .values()
        .filter(|r| r.expires_ms <= now_ms)
    {
        appliance_order(
            service,
            Verb::EndReservation {
                id: reservation.id.clone(),
                end: ReservationEnd::Expired,
            },
        );
    }
}

/// Where a random first password is kept, in the data directory.
pub const ADMIN_PASSWORD_FILE: &str = "admin-password";

/// The first `admin` (Administrator), when the appliance has no account yet: with `password`
/// (the operator's), or a random one kept in `DIR/admin-password` (readable by root only, never
/// logged). Returns the random password, when one was made, for the caller to show once.
pub fn first_admin(
    context: &crate::api::Context,
    data_dir: &std::path::Path,
    password: Option<String>,
) -> Result<Option<String>, ApiError> {
    if !context.core.state().accounts.is_empty() {
        return Ok(None);
    }
    let (password, generated) = match password {
        Some(password) => (password, false),
        None => (shared::random_password(), true),
    };
    if generated {
        // Kept before the account exists: a crash between the two must not lose the password.
        let path = data_dir.join(ADMIN_PASSWORD_FILE);
        let _ = std::fs::remove_file(&path);
        shared::write_private(&path, format!("{password}\n").as_bytes()).map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("write {}: {e}", path.display()),
            )
        })?;
    }
    let verb = Verb::CreateAccount {
        name: "admin".into(),
        role: crate::model::AccountRole::Administrator,
        tenant: None,
        password: Password::Plain(crate::model::Secret(password.clone())),
        password_change_required: false,
    };
    let root = Principal::root(Door::Appliance);
    handle(context, &root, Request::order(verb, Meta::default()))?;
    Ok(generated.then_some(password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_decode_and_bad_ones_do_not() {
        assert_eq!(
            basic_credentials("Basic YWRtaW46cGFzczp3b3Jk"),
            Some(("admin".into(), "pass:word".into()))
        );
        assert_eq!(basic_credentials("Basic !!!"), None);
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(basic_credentials("Basic YWRtaW4="), None, "no colon");
    }
}
