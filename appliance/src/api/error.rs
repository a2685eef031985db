//! The one list of error codes every door shows, and the error every door renders: the JSON-lines
//! protocol sends the code as is, the Redfish API maps it to an HTTP status and a MessageId, the
//! CLI and the console print the message with the code.

use serde::{Deserialize, Serialize};

use crate::core::CoreError;
use crate::decide::command::CommandError;

/// Why a request was not carried out. Stable names (snake case on every wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request does not parse or names no action.
    BadRequest,
    InvalidName,
    UnknownTenant,
    TenantExists,
    UnknownSystem,
    SystemExists,
    UnknownDevice,
    DeviceComposed,
    DeviceUnavailable,
    DeviceNotComposed,
    TenantMismatch,
    StaleVersion,
    VersionNotApplicable,
    OverLimit,
    NoPlacement,
    SystemBusy,
    SystemNotEmpty,
    DeviceMounted,
    UnknownMount,
    MountExists,
    RequestIdReused,
    NotPending,
    Empty,
    UnknownOperation,
    /// The history or state asked for cannot be read (before the journal's start, in its future).
    HistoryUnavailable,
    UnknownAccount,
    AccountExists,
    AccountDisabled,
    LastAdministrator,
    UnknownSession,
    SessionExists,
    UnknownSubscription,
    SubscriptionExists,
    UnknownReservation,
    ReservationExists,
    DeviceReserved,
    UnknownAlarm,
    UnknownSwitch,
    /// A tenant's account asked for what belongs to no tenant or to another one.
    OutOfScope,
    /// No credentials, or wrong ones (which, is not said).
    Unauthorized,
    /// The account lacks the privilege the request needs.
    Forbidden,
    /// The account must change its password first.
    PasswordChangeRequired,
    /// The new password does not meet the policy.
    PasswordPolicy,
    /// The account has a TOTP secret and the login gave no code, or a wrong one.
    OneTimeCodeRequired,
    /// The core's queue is full; retry later.
    Overloaded,
    /// The appliance is shutting down.
    Stopping,
    /// The order cannot be carried out where this service runs (a reboot outside the image).
    NotSupported,
    /// The studio's directory did not answer a login (down, slow, or its TLS refused).
    DirectoryUnavailable,
    /// The operation goes on, but its outcome did not come within the wait.
    Timeout,
    /// Something failed that the caller cannot fix (the journal's append, a bug).
    Internal,
}

impl ErrorCode {
    /// The code's stable name, as the wires carry it.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::UnknownTenant => "unknown_tenant",
            ErrorCode::TenantExists => "tenant_exists",
            ErrorCode::UnknownSystem => "unknown_system",
            ErrorCode::SystemExists => "system_exists",
            ErrorCode::UnknownDevice => "unknown_device",
            ErrorCode::DeviceComposed => "device_composed",
            ErrorCode::DeviceUnavailable => "device_unavailable",
            ErrorCode::DeviceNotComposed => "device_not_composed",
            ErrorCode::TenantMismatch => "tenant_mismatch",
            ErrorCode::StaleVersion => "stale_version",
            ErrorCode::VersionNotApplicable => "version_not_applicable",
            ErrorCode::OverLimit => "over_limit",
            ErrorCode::NoPlacement => "no_placement",
            ErrorCode::SystemBusy => "system_busy",
            ErrorCode::SystemNotEmpty => "system_not_empty",
            ErrorCode::DeviceMounted => "device_mounted",
            ErrorCode::UnknownMount => "unknown_mount",
            ErrorCode::MountExists => "mount_exists",
            ErrorCode::RequestIdReused => "request_id_reused",
            ErrorCode::NotPending => "not_pending",
            ErrorCode::Empty => "empty",
            ErrorCode::UnknownOperation => "unknown_operation",
            ErrorCode::HistoryUnavailable => "history_unavailable",
            ErrorCode::UnknownAccount => "unknown_account",
            ErrorCode::AccountExists => "account_exists",
            ErrorCode::AccountDisabled => "account_disabled",
            ErrorCode::LastAdministrator => "last_administrator",
            ErrorCode::UnknownSession => "unknown_session",
            ErrorCode::SessionExists => "session_exists",
            ErrorCode::UnknownSubscription => "unknown_subscription",
            ErrorCode::SubscriptionExists => "subscription_exists",
            ErrorCode::UnknownReservation => "unknown_reservation",
            ErrorCode::ReservationExists => "reservation_exists",
            ErrorCode::DeviceReserved => "device_reserved",
            ErrorCode::UnknownAlarm => "unknown_alarm",
            ErrorCode::UnknownSwitch => "unknown_switch",
            ErrorCode::OutOfScope => "out_of_scope",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::PasswordChangeRequired => "password_change_required",
            ErrorCode::PasswordPolicy => "password_policy",
            ErrorCode::OneTimeCodeRequired => "one_time_code_required",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Stopping => "stopping",
            ErrorCode::NotSupported => "not_supported",
            ErrorCode::DirectoryUnavailable => "directory_unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A refused or failed request, as every door renders it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({code})")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }
}

impl From<&CommandError> for ErrorCode {
    fn from(e: &CommandError) -> ErrorCode {
        use CommandError as E;
        match e {
            E::InvalidName { .. } => ErrorCode::InvalidName,
            E::UnknownTenant { .. } => ErrorCode::UnknownTenant,
            E::TenantExists { .. } => ErrorCode::TenantExists,
            E::UnknownSystem { .. } => ErrorCode::UnknownSystem,
            E::SystemExists { .. } => ErrorCode::SystemExists,
            E::UnknownDevice { .. } => ErrorCode::UnknownDevice,
            E::DeviceComposed { .. } => ErrorCode::DeviceComposed,
            E::DeviceUnavailable { .. } => ErrorCode::DeviceUnavailable,
            E::DeviceNotComposed { .. } => ErrorCode::DeviceNotComposed,
            E::TenantMismatch { .. } => ErrorCode::TenantMismatch,
            E::StaleVersion { .. } => ErrorCode::StaleVersion,
            E::VersionNotApplicable { .. } => ErrorCode::VersionNotApplicable,
            E::OverLimit { .. } => ErrorCode::OverLimit,
            E::NoPlacement { .. } => ErrorCode::NoPlacement,
            E::SystemBusy { .. } => ErrorCode::SystemBusy,
            E::SystemNotEmpty { .. } => ErrorCode::SystemNotEmpty,
            E::DeviceMounted { .. } => ErrorCode::DeviceMounted,
            E::UnknownMount { .. } => ErrorCode::UnknownMount,
            E::MountExists { .. } => ErrorCode::MountExists,
            E::BadMount { .. } => ErrorCode::BadRequest,
            E::RequestIdReused { .. } => ErrorCode::RequestIdReused,
            E::NotPending { .. } => ErrorCode::NotPending,
            E::Empty { .. } => ErrorCode::Empty,
            E::BadOrder { .. } => ErrorCode::BadRequest,
            E::UnknownAccount { .. } => ErrorCode::UnknownAccount,
            E::AccountExists { .. } => ErrorCode::AccountExists,
            E::AccountDisabled { .. } => ErrorCode::AccountDisabled,
            E::LastAdministrator { .. } => ErrorCode::LastAdministrator,
            E::PasswordNotHashed => ErrorCode::Internal,
            E::UnknownSession { .. } => ErrorCode::UnknownSession,
            E::SessionExists { .. } => ErrorCode::SessionExists,
            E::UnknownSubscription { .. } => ErrorCode::UnknownSubscription,
            E::SubscriptionExists { .. } => ErrorCode::SubscriptionExists,
            E::UnknownReservation { .. } => ErrorCode::UnknownReservation,
            E::ReservationExists { .. } => ErrorCode::ReservationExists,
            E::DeviceReserved { .. } => ErrorCode::DeviceReserved,
            E::OutOfScope { .. } => ErrorCode::OutOfScope,
            E::UnknownAlarm { .. } => ErrorCode::UnknownAlarm,
            E::UnknownSwitch { .. } => ErrorCode::UnknownSwitch,
        }
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> ApiError {
        let code = match &e {
            CoreError::Refused(refusal) => refusal.into(),
            CoreError::Overloaded { .. } => ErrorCode::Overloaded,
            CoreError::Stopped => ErrorCode::Stopping,
            CoreError::WaitTimeout { .. } => ErrorCode::Timeout,
            CoreError::UnknownOperation { .. } => ErrorCode::UnknownOperation,
            CoreError::Append(_)
            | CoreError::Replay(_)
            | CoreError::ReplayReader
            | CoreError::Apply(_)
            | CoreError::Spawn(_) => ErrorCode::Internal,
        };
        let message = match &e {
            CoreError::Refused(refusal) => refusal.to_string(),
            other => drivers::error_chain(other),
        };
        ApiError::new(code, message)
    }
}
