//! Deciding the orders about access: accounts, sessions, event subscriptions, and composition
//! reservations. Pure, as the rest of `decide`. A password reaches here hashed or not at all:
//! a plain one is refused (the doors hash through `api::handle`), so no event can carry one.

use crate::decide::command::{CommandError, Decision};
use crate::model::{
    Account, AccountChange, AccountName, AccountRole, DeviceId, Event, Made, Password,
    ReservationEnd, SessionEnd, State, Subscription, TenantName,
};

/// Longest account name.
pub const ACCOUNT_NAME_BYTES_MAX: usize = 64;
/// Accounts the appliance keeps at most.
pub const ACCOUNTS_MAX: usize = 1024;
/// Open sessions at most.
pub const SESSIONS_MAX: usize = 256;
/// The most directory users the appliance keeps a lockout or a TOTP key for.
pub const DIRECTORY_USERS_MAX: usize = 10_000;
/// The longest directory login name kept.
pub const DIRECTORY_NAME_BYTES_MAX: usize = 256;
/// Event subscriptions at most.
pub const SUBSCRIPTIONS_MAX: usize = 64;
/// Open reservations at most.
pub const RESERVATIONS_MAX: usize = 64;

fn plain(events: Vec<Event>) -> Result<Decision, CommandError> {
    Ok(Decision::Events { events, op: None })
}

/// An account name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with a dot or a dash.
pub fn valid_account_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= ACCOUNT_NAME_BYTES_MAX
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn hashed(password: &Password) -> Result<String, CommandError> {
    match password {
        Password::Hashed(hash) => Ok(hash.clone()),
        Password::Plain(_) => Err(CommandError::PasswordNotHashed),
    }
}

fn account<'a>(state: &'a State, name: &AccountName) -> Result<&'a Account, CommandError> {
    state
        .accounts
        .get(name)
        .ok_or_else(|| CommandError::UnknownAccount {
            account: name.to_string(),
        })
}

/// Enabled administrators other than `name`.
fn other_administrators(state: &State, name: &AccountName) -> usize {
    state
        .accounts
        .values()
        .filter(|a| a.name != *name && a.enabled && a.role == AccountRole::Administrator)
        .count()
}

pub fn create_account(
    state: &State,
    name: &AccountName,
    role: AccountRole,
    tenant: &Option<TenantName>,
    password: &Password,
    password_change_required: bool,
    made: Made,
) -> Result<Decision, CommandError> {
    if !valid_account_name(&name.0) {
        return Err(CommandError::InvalidName {
            what: "account".into(),
            value: name.to_string(),
        });
    }
    if state.accounts.contains_key(name) {
        return Err(CommandError::AccountExists {
            account: name.to_string(),
        });
    }
    if state.accounts.len() >= ACCOUNTS_MAX {
        return Err(CommandError::OverLimit {
            what: "accounts".into(),
            requested: state.accounts.len() + 1,
            limit: ACCOUNTS_MAX,
        });
    }
    if let Some(tenant) = tenant {
        if !state.tenants.contains_key(tenant) {
            return Err(CommandError::UnknownTenant {
                tenant: tenant.to_string(),
            });
        }
    }
    plain(vec![Event::AccountCreated {
        name: name.clone(),
        role,
        tenant: tenant.clone(),
        password_hash: hashed(password)?,
        password_change_required,
        made,
    }])
}

pub fn change_account(
    state: &State,
    name: &AccountName,
    change: &AccountChange<Password>,
    expected_version: Option<u64>,
    made: Made,
) -> Result<Decision, CommandError> {
    let found = account(state, name)?;
    super::command::stale("account", name.as_ref(), expected_version, found.version)?;
    let demotes = match change {
        AccountChange::Role(role) => *role != AccountRole::Administrator,
        AccountChange::Enabled(enabled) => !enabled,
        _ => false,
    };
    if demotes && found.role == AccountRole::Administrator && other_administrators(state, name) == 0
    {
        return Err(CommandError::LastAdministrator {
            account: name.to_string(),
        });
    }
    let change = match change {
        AccountChange::Role(role) => AccountChange::Role(*role),
        AccountChange::Password {
            password,
            change_required,
        } => AccountChange::Password {
            password: hashed(password)?,
            change_required: *change_required,
        },
        AccountChange::PasswordChangeRequired(required) => {
            AccountChange::PasswordChangeRequired(*required)
        }
        AccountChange::Enabled(enabled) => AccountChange::Enabled(*enabled),
        AccountChange::Locked { until_ms } => AccountChange::Locked {
            until_ms: *until_ms,
        },
        AccountChange::Totp(sealed) => AccountChange::Totp(sealed.clone()),
    };
    // A changed password, role or a disabled account ends the account's other sessions.
    let ends_sessions = matches!(
        change,
        AccountChange::Password { .. } | AccountChange::Role(_) | AccountChange::Enabled(false)
    );
    let mut events = vec![Event::AccountChanged {
        name: name.clone(),
        change,
        made: made.clone(),
    }];
    if ends_sessions {
        events.extend(end_sessions_of(state, name, &made));
    }
    plain(events)
}

/// Closes the account's sessions, except the one the order came through.
fn end_sessions_of(state: &State, name: &AccountName, made: &Made) -> Vec<Event> {
    state
        .sessions
        .values()
        .filter(|s| s.account == *name && made.by.session.as_deref() != Some(s.id.as_str()))
        .map(|s| Event::SessionClosed {
            id: s.id.clone(),
            end: SessionEnd::AccountChanged,
            made: Made::by(made.by.clone()),
        })
        .collect()
}

pub fn delete_account(
    state: &State,
    name: &AccountName,
    expected_version: Option<u64>,
    made: Made,
) -> Result<Decision, CommandError> {
    let found = account(state, name)?;
    super::command::stale("account", name.as_ref(), expected_version, found.version)?;
    if found.role == AccountRole::Administrator && other_administrators(state, name) == 0 {
        return Err(CommandError::LastAdministrator {
            account: name.to_string(),
        });
    }
    // Its sessions go with it (State drops them when it applies the deletion).
    plain(vec![Event::AccountDeleted {
        name: name.clone(),
        made,
    }])
}

/// A new session needs a new id and room under SESSIONS_MAX.
fn room_for_session(state: &State, id: &str) -> Result<(), CommandError> {
    if state.sessions.contains_key(id) {
        return Err(CommandError::SessionExists { id: id.to_string() });
    }
    if state.sessions.len() >= SESSIONS_MAX {
        return Err(CommandError::OverLimit {
            what: "sessions".into(),
            requested: state.sessions.len() + 1,
            limit: SESSIONS_MAX,
        });
    }
    Ok(())
}

/// A directory user's session: only while a directory is set, and never in the name of a
/// local account (local accounts log in locally).
pub fn open_directory_session(
    state: &State,
    id: &str,
    name: &AccountName,
    token_sha256: &str,
    at_ms: u64,
    grant: &crate::model::directory::DirectoryGrant,
    made: Made,
) -> Result<Decision, CommandError> {
    if state.directory.is_none() {
        return Err(CommandError::BadOrder {
            reason: "no directory is set".into(),
        });
    }
    if state.accounts.contains_key(name) {
        return Err(CommandError::AccountExists {
            account: name.to_string(),
        });
    }
    room_for_session(state, id)?;
    plain(vec![Event::DirectorySessionOpened {
        id: id.to_string(),
        account: name.clone(),
        token_sha256: token_sha256.to_string(),
        at_ms,
        grant: grant.clone(),
        made,
    }])
}

/// A directory user's lockout or TOTP key. Not in the name of a local account (its own
/// lockout and key are the account's).
pub fn change_directory_user(
    state: &State,
    name: &AccountName,
    change: &crate::model::directory::DirectoryUserChange,
    made: Made,
) -> Result<Decision, CommandError> {
    let fits = !name.is_empty()
        && name.len() <= DIRECTORY_NAME_BYTES_MAX
        && !name.chars().any(char::is_control);
    if !fits {
        return Err(CommandError::InvalidName {
            what: "directory user".into(),
            value: name.to_string(),
        });
    }
    if state.accounts.contains_key(name) {
        return Err(CommandError::BadOrder {
            reason: format!("{name} is a local account, not a directory user"),
        });
    }
    let known = state.directory_users.contains_key(name);
    if !known && state.directory_users.len() >= DIRECTORY_USERS_MAX {
        return Err(CommandError::OverLimit {
            what: "directory users".into(),
            requested: state.directory_users.len() + 1,
            limit: DIRECTORY_USERS_MAX,
        });
    }
    plain(vec![Event::DirectoryUserChanged {
        name: name.clone(),
        change: change.clone(),
        made,
    }])
}

pub fn open_session(
    state: &State,
    id: &str,
    name: &AccountName,
    token_sha256: &str,
    at_ms: u64,
    made: Made,
) -> Result<Decision, CommandError> {
    let found = account(state, name)?;
    if !found.enabled {
        return Err(CommandError::AccountDisabled {
            account: name.to_string(),
        });
    }
    room_for_session(state, id)?;
    plain(vec![Event::SessionOpened {
        id: id.to_string(),
        account: name.clone(),
        token_sha256: token_sha256.to_string(),
        at_ms,
        made,
    }])
}

pub fn close_session(
    state: &State,
    id: &str,
    end: SessionEnd,
    made: Made,
) -> Result<Decision, CommandError> {
    if !state.sessions.contains_key(id) {
        return Err(CommandError::UnknownSession { id: id.to_string() });
    }
    plain(vec![Event::SessionClosed {
        id: id.to_string(),
        end,
        made,
    }])
}

pub fn create_subscription(
    state: &State,
    subscription: &Subscription,
    made: Made,
) -> Result<Decision, CommandError> {
    if state.subscriptions.contains_key(&subscription.id) {
        return Err(CommandError::SubscriptionExists {
            id: subscription.id.clone(),
        });
    }
    if state.subscriptions.len() >= SUBSCRIPTIONS_MAX {
        return Err(CommandError::OverLimit {
            what: "event subscriptions".into(),
            requested: state.subscriptions.len() + 1,
            limit: SUBSCRIPTIONS_MAX,
        });
    }
    plain(vec![Event::SubscriptionCreated {
        subscription: Box::new(subscription.clone()),
        made,
    }])
}

pub fn delete_subscription(state: &State, id: &str, made: Made) -> Result<Decision, CommandError> {
    if !state.subscriptions.contains_key(id) {
        return Err(CommandError::UnknownSubscription { id: id.to_string() });
    }
    plain(vec![Event::SubscriptionDeleted {
        id: id.to_string(),
        made,
    }])
}

#[allow(clippy::too_many_arguments)]
pub fn reserve(
    state: &State,
    id: &str,
    devices: &[DeviceId],
    manifest: &str,
    at_ms: u64,
    expires_ms: u64,
    made: Made,
) -> Result<Decision, CommandError> {
    if state.reservations.contains_key(id) {
        return Err(CommandError::ReservationExists { id: id.to_string() });
    }
    if state.reservations.len() >= RESERVATIONS_MAX {
        return Err(CommandError::OverLimit {
            what: "reservations".into(),
            requested: state.reservations.len() + 1,
            limit: RESERVATIONS_MAX,
        });
    }
    if devices.is_empty() {
        return Err(CommandError::Empty {
            reason: "a reservation holds at least one device".into(),
        });
    }
    for device in devices {
        super::command::available(state, device, None)?;
    }
    plain(vec![Event::ReservationMade {
        id: id.to_string(),
        devices: devices.to_vec(),
        manifest: manifest.to_string(),
        at_ms,
        expires_ms,
        made,
    }])
}

pub fn end_reservation(
    state: &State,
    id: &str,
    end: ReservationEnd,
    made: Made,
) -> Result<Decision, CommandError> {
    if !state.reservations.contains_key(id) {
        return Err(CommandError::UnknownReservation { id: id.to_string() });
    }
    plain(vec![Event::ReservationEnded {
        id: id.to_string(),
        end,
        made,
    }])
}
