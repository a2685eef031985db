//! The Redfish messages the service sends (from DMTF's Base 1.22 and Composition 1.1
//! registries), Redfish error bodies, and the one mapping of the appliance's [`ErrorCode`]s to
//! HTTP statuses and MessageIds. A test checks every message here against the registries in
//! `../shared/redfish`.

use http::StatusCode;
use serde_json::{json, Value};

use crate::api::{ApiError, ErrorCode};

/// A message of a registry: its id's prefix, key, text with `%1`... placeholders, severity
/// and resolution, as the registry gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    pub registry: Registry,
    pub key: &'static str,
    pub text: &'static str,
    pub severity: &'static str,
    pub resolution: &'static str,
}

/// A message registry, and the version its MessageIds name (major.minor, no errata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registry {
    Base,
    Composition,
}

impl Registry {
    pub fn prefix(self) -> &'static str {
        match self {
            Registry::Base => "Base.1.22",
            Registry::Composition => "Composition.1.1",
        }
    }

    /// The registry file in `../shared/redfish` (for the test).
    pub fn file(self) -> &'static str {
        match self {
            Registry::Base => "Base.1.22.1.json",
            Registry::Composition => "Composition.1.1.3.json",
        }
    }
}

macro_rules! messages {
    ($($name:ident = $registry:ident $key:literal, $severity:literal, $text:literal, $resolution:literal;)*) => {
        $(pub const $name: Message = Message {
            registry: Registry::$registry,
            key: $key,
            text: $text,
            severity: $severity,
            resolution: $resolution,
        };)*
        /// Every message above (for the test against the registries).
        pub const ALL: &[Message] = &[$($name),*];
    };
}

messages! {
    RESOURCE_NOT_FOUND = Base "ResourceNotFound", "Critical",
        "The requested resource of type %1 named '%2' was not found.",
        "Provide a valid resource identifier and resubmit the request.";
    RESOURCE_MISSING_AT_URI = Base "ResourceMissingAtURI", "Critical",
        "The resource at the URI '%1' was not found.",
        "Place a valid resource at the URI or correct the URI and resubmit the request.";
    ACCESS_UNAUTHORIZED = Base "AccessUnauthorized", "Critical",
        "Unauthorized.",
        "Resubmit the request with valid credentials.";
    NO_VALID_SESSION = Base "NoValidSession", "Critical",
        "There is no valid session established with the implementation.",
        "Establish a session before attempting any operations.";
    INSUFFICIENT_PRIVILEGE = Base "InsufficientPrivilege", "Critical",
        "There are insufficient privileges for the account or credentials associated with the current session to perform the requested operation.",
        "Either abandon the operation or change the associated access rights and resubmit the request if the operation failed.";
    PASSWORD_CHANGE_REQUIRED = Base "PasswordChangeRequired", "Critical",
        "The password provided for this account must be changed before access is granted.  PATCH the Password property for this account located at the target URI '%1' to complete this process.",
        "Change the password for this account using a PATCH to the Password property at the URI provided.";
    MALFORMED_JSON = Base "MalformedJSON", "Critical",
        "The request body submitted was malformed JSON and could not be parsed by the receiving service.",
        "Ensure that the request body is valid JSON and resubmit the request.";
    UNRECOGNIZED_REQUEST_BODY = Base "UnrecognizedRequestBody", "Warning",
        "The service detected a malformed request body that it was unable to interpret.",
        "Correct the request body and resubmit the request if it failed.";
    PROPERTY_VALUE_TYPE_ERROR = Base "PropertyValueTypeError", "Warning",
        "The value '%1' for the property %2 is not a type that the property can accept.",
        "Correct the value for the property in the request body and resubmit the request if the operation failed.";
    PROPERTY_UNKNOWN = Base "PropertyUnknown", "Warning",
        "The property %1 is not in the list of valid properties for the resource.",
        "Remove the unknown property from the request body and resubmit the request if the operation failed.";
    PROPERTY_NOT_WRITABLE = Base "PropertyNotWritable", "Warning",
        "The property %1 is a read-only property and cannot be assigned a value.",
        "Remove the property from the request body and resubmit the request if the operation failed.";
    PROPERTY_VALUE_NOT_IN_LIST = Base "PropertyValueNotInList", "Warning",
        "The value '%1' for the property %2 is not in the list of acceptable values.",
        "Choose a value from the enumeration list that the implementation can support and resubmit the request if the operation failed.";
    PROPERTY_VALUE_FORMAT_ERROR = Base "PropertyValueFormatError", "Warning",
        "The value '%1' for the property %2 is not a format that the property can accept.",
        "Correct the value for the property in the request body and resubmit the request if the operation failed.";
    PROPERTY_VALUE_OUT_OF_RANGE = Base "PropertyValueOutOfRange", "Warning",
        "The value '%1' for the property %2 is not in the supported range of acceptable values.",
        "Correct the value for the property in the request body and resubmit the request if the operation failed.";
    PROPERTY_VALUE_CONFLICT = Base "PropertyValueConflict", "Warning",
        "The property '%1' could not be written because its value would conflict with the value of the '%2' property.",
        "None.";
    PROPERTY_MISSING = Base "PropertyMissing", "Warning",
        "The property %1 is a required property and must be included in the request.",
        "Ensure that the property is in the request body and has a valid value and resubmit the request if the operation failed.";
    NO_OPERATION = Base "NoOperation", "Warning",
        "The request body submitted contain no data to act upon and no changes to the resource took place.",
        "Add properties in the JSON object and resubmit the request.";
    PRECONDITION_FAILED = Base "PreconditionFailed", "Critical",
        "The ETag supplied did not match the ETag required to change this resource.",
        "Try the operation again using the appropriate ETag.";
    HEADER_INVALID = Base "HeaderInvalid", "Critical",
        "Header '%1' is invalid.",
        "Resubmit the request with a valid request header.";
    OPERATION_NOT_ALLOWED = Base "OperationNotAllowed", "Critical",
        "The HTTP method is not allowed on this resource.",
        "None.";
    QUERY_PARAMETER_UNSUPPORTED = Base "QueryParameterUnsupported", "Warning",
        "Query parameter '%1' is not supported.",
        "Correct or remove the query parameter and resubmit the request.";
    QUERY_PARAMETER_VALUE_FORMAT_ERROR = Base "QueryParameterValueFormatError", "Warning",
        "The value '%1' for the parameter %2 is not a format that the parameter can accept.",
        "Correct the value for the query parameter in the request and resubmit the request if the operation failed.";
    ACTION_NOT_SUPPORTED = Base "ActionNotSupported", "Critical",
        "The action %1 is not supported by the resource.",
        "Check the Actions property in the resource for the supported actions.";
    ACTION_PARAMETER_MISSING = Base "ActionParameterMissing", "Critical",
        "The action %1 requires the parameter %2 to be present in the request body.",
        "Supply the action with the required parameter in the request body when the request is resubmitted.";
    ACTION_PARAMETER_VALUE_NOT_IN_LIST = Base "ActionParameterValueNotInList", "Warning",
        "The value '%1' for the parameter %2 in the action %3 is not in the list of acceptable values.",
        "Choose a value from the enumeration list that the implementation can support and resubmit the request if the operation failed.";
    ACTION_PARAMETER_UNKNOWN = Base "ActionParameterUnknown", "Warning",
        "The action %1 was submitted with the invalid parameter %2.",
        "Correct the invalid action parameter and resubmit the request if the operation failed.";
    PAYLOAD_TOO_LARGE = Base "PayloadTooLarge", "Critical",
        "The supplied payload exceeds the maximum size supported by the service.",
        "Check that the supplied payload is correct and supported by this service.";
    RESOURCE_ALREADY_EXISTS = Base "ResourceAlreadyExists", "Critical",
        "The requested resource of type %1 with the property %2 with the value '%3' already exists.",
        "Do not repeat the create operation as the resource was already created.";
    RESOURCE_IN_USE = Base "ResourceInUse", "Warning",
        "The change to the requested resource failed because the resource is in use or in transition.",
        "Remove the condition and resubmit the request if the operation failed.";
    RESOURCE_CANNOT_BE_DELETED = Base "ResourceCannotBeDeleted", "Critical",
        "The delete request failed because the resource requested cannot be deleted.",
        "Do not attempt to delete a non-deletable resource.";
    CREATE_LIMIT_REACHED = Base "CreateLimitReachedForResource", "Critical",
        "The create operation failed because the resource has reached the limit of possible resources.",
        "Either delete resources and resubmit the request if the operation failed or do not resubmit the request.";
    PASSWORD_COMPLEXITY_NOT_MET = Base "PasswordComplexityNotMet", "Critical",
        "The password provided for this account does not meet the password complexity requirements of the service.",
        "Resubmit the request with a password that meets the password complexity requirements as specified by the `PasswordGuidanceMessage` property in the `AccountService` resource.";
    SERVICE_TEMPORARILY_UNAVAILABLE = Base "ServiceTemporarilyUnavailable", "Critical",
        "The service is temporarily unavailable.  Retry in %1 seconds.",
        "Wait for the indicated retry duration and retry the operation.";
    SERVICE_SHUTTING_DOWN = Base "ServiceShuttingDown", "Critical",
        "The operation failed because the service is shutting down and can no longer take incoming requests.",
        "When the service becomes available, resubmit the request if the operation failed.";
    INTERNAL_ERROR = Base "InternalError", "Critical",
        "The request failed due to an internal service error.  The service is still operational.",
        "Resubmit the request.  If the problem persists, consider resetting the service.";
    GENERAL_ERROR = Base "GeneralError", "Critical",
        "A general error has occurred.  See Resolution for information on how to resolve the error, or @Message.ExtendedInfo if Resolution is not provided.",
        "None.";
    OPERATION_FAILED = Base "OperationFailed", "Warning",
        "An error occurred internal to the service as part of the overall request.  Partial results may have been returned.",
        "Resubmit the request.  If the problem persists, consider resetting the service or provider.";
    SUCCESS = Base "Success", "OK",
        "The request completed successfully.",
        "None.";
    CREATED = Base "Created", "OK",
        "The resource was created successfully.",
        "None.";
    ACCOUNT_MODIFIED = Base "AccountModified", "OK",
        "The account was successfully modified.",
        "None.";
    RESOURCE_BLOCK_IN_USE = Composition "ResourceBlockInUse", "Warning",
        "Resource block '%1' cannot be part of any new compositions.",
        "Remove the resource block from the request and resubmit the request.";
    RESOURCE_BLOCK_NOT_FOUND = Composition "ResourceBlockNotFound", "Critical",
        "Resource block '%1' was not found.",
        "Remove the resource block and resubmit the request.";
    NO_RESOURCE_MATCH = Composition "NoResourceMatch", "Critical",
        "The requested resources of type '%1' are not available for allocation.",
        "Change parameters associated with the resource, such as quantity or performance, and resubmit the request.";
    SPECIFIED_RESOURCE_ALREADY_RESERVED = Composition "SpecifiedResourceAlreadyReserved", "Critical",
        "Resource block '%1' is already reserved under reservation '%2'.",
        "Delete the reservation containing the resource block or select a different resource block and resubmit the request.";
    EMPTY_MANIFEST = Composition "EmptyManifest", "Warning",
        "The provided manifest is empty or a stanza in the manifest contains no request.",
        "Provide a request content for the manifest and resubmit.";
    UNABLE_TO_PROCESS_STANZA = Composition "UnableToProcessStanzaRequest", "Critical",
        "The provided manifest for the Compose action of type %1 contains a stanza with Id of value '%2' with a Content parameter that could not be processed.",
        "Add the Content parameter to the stanza or remove the stanza, and resubmit the request.";
}

impl Message {
    /// `Base.1.22.ResourceNotFound`.
    pub fn id(&self) -> String {
        format!("{}.{}", self.registry.prefix(), self.key)
    }

    /// The text with its `%n` placeholders filled.
    pub fn fill(&self, args: &[&str]) -> String {
        let mut text = self.text.to_string();
        for (i, arg) in args.iter().enumerate().rev() {
            text = text.replace(&format!("%{}", i + 1), arg);
        }
        text
    }

    /// The message as an `@Message.ExtendedInfo` entry.
    pub fn info(&self, args: &[&str]) -> Value {
        json!({
            "@odata.type": "#Message.v1_3_0.Message",
            "MessageId": self.id(),
            "Message": self.fill(args),
            "MessageArgs": args,
            "MessageSeverity": self.severity,
            "Resolution": self.resolution,
        })
    }

    /// The same entry naming the request property it is about (a JSON pointer).
    pub fn info_about(&self, args: &[&str], property: &str) -> Value {
        let mut info = self.info(args);
        info["RelatedProperties"] = json!([property]);
        info
    }

    /// The entry of a message whose one argument is the property at `path` (`A/B`), which it
    /// is about.
    pub fn about_property(&self, path: &str) -> Value {
        self.info_about(&[path], &format!("/{path}"))
    }
}

/// A Redfish error: its HTTP status and the messages that explain it.
#[derive(Debug, Clone, PartialEq)]
pub struct RfError {
    pub status: StatusCode,
    pub messages: Vec<Value>,
    /// Extra headers (`Allow` on a 405, `WWW-Authenticate` on a 401, `Retry-After` on a 503).
    pub headers: Vec<(http::HeaderName, String)>,
}

impl RfError {
    pub fn new(status: StatusCode, message: Message, args: &[&str]) -> RfError {
        RfError {
            status,
            messages: vec![message.info(args)],
            headers: Vec::new(),
        }
    }

    pub fn with(status: StatusCode, messages: Vec<Value>) -> RfError {
        RfError {
            status,
            messages,
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: http::HeaderName, value: impl Into<String>) -> RfError {
        self.headers.push((name, value.into()));
        self
    }

    /// The `{"error": ...}` body.
    pub fn body(&self) -> Value {
        let first = self.messages.first();
        let code = first
            .and_then(|m| m["MessageId"].as_str())
            .map(String::from)
            .unwrap_or_else(|| GENERAL_ERROR.id());
        let message = first
            .and_then(|m| m["Message"].as_str())
            .unwrap_or(GENERAL_ERROR.text);
        json!({
            "error": {
                "code": code,
                "message": message,
                "@Message.ExtendedInfo": self.messages,
            }
        })
    }

    pub fn not_found(uri: &str) -> RfError {
        RfError::new(StatusCode::NOT_FOUND, RESOURCE_MISSING_AT_URI, &[uri])
    }

    pub fn bad_request(message: Message, args: &[&str]) -> RfError {
        RfError::new(StatusCode::BAD_REQUEST, message, args)
    }

    pub fn unauthorized() -> RfError {
        RfError::new(StatusCode::UNAUTHORIZED, ACCESS_UNAUTHORIZED, &[]).header(
            http::header::WWW_AUTHENTICATE,
            r#"Basic realm="Redfish", charset="UTF-8""#,
        )
    }

    pub fn forbidden() -> RfError {
        RfError::new(StatusCode::FORBIDDEN, INSUFFICIENT_PRIVILEGE, &[])
    }

    pub fn internal(what: &str) -> RfError {
        let mut error = RfError::new(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR, &[]);
        error.messages[0]["Message"] = Value::String(format!("{} {what}", INTERNAL_ERROR.text));
        error
    }
}

/// The one mapping of the appliance's errors to HTTP statuses and Redfish messages. The
/// appliance's own message is kept as the entry's `Message` (it names what is wrong and where),
/// the registry's MessageId tells clients what kind of error it is.
pub fn from_api(error: &ApiError) -> RfError {
    use ErrorCode as C;
    let (status, message, args): (StatusCode, Message, Vec<&str>) = match error.code {
        C::BadRequest | C::Empty | C::InvalidName | C::VersionNotApplicable => {
            (StatusCode::BAD_REQUEST, PROPERTY_VALUE_FORMAT_ERROR, vec![])
        }
        C::UnknownSystem
        | C::UnknownDevice
        | C::UnknownTenant
        | C::UnknownOperation
        | C::UnknownMount
        | C::UnknownAccount
        | C::UnknownSession
        | C::UnknownSubscription
        | C::UnknownReservation
        | C::UnknownAlarm
        | C::UnknownSwitch => (StatusCode::NOT_FOUND, RESOURCE_NOT_FOUND, vec![]),
        C::TenantExists
        | C::SystemExists
        | C::AccountExists
        | C::SessionExists
        | C::SubscriptionExists
        | C::ReservationExists
        | C::MountExists => (StatusCode::CONFLICT, RESOURCE_ALREADY_EXISTS, vec![]),
        C::DeviceComposed | C::DeviceUnavailable => {
            (StatusCode::CONFLICT, RESOURCE_BLOCK_IN_USE, vec![])
        }
        C::DeviceReserved => (
            StatusCode::CONFLICT,
            SPECIFIED_RESOURCE_ALREADY_RESERVED,
            vec![],
        ),
        C::NoPlacement => (StatusCode::CONFLICT, NO_RESOURCE_MATCH, vec![]),
        C::StaleVersion => (StatusCode::PRECONDITION_FAILED, PRECONDITION_FAILED, vec![]),
        C::SystemBusy | C::SystemNotEmpty | C::DeviceMounted | C::DeviceNotComposed => {
            (StatusCode::CONFLICT, RESOURCE_IN_USE, vec![])
        }
        C::TenantMismatch | C::RequestIdReused => (StatusCode::CONFLICT, RESOURCE_IN_USE, vec![]),
        C::OverLimit => (StatusCode::BAD_REQUEST, CREATE_LIMIT_REACHED, vec![]),
        C::LastAdministrator => (StatusCode::CONFLICT, RESOURCE_CANNOT_BE_DELETED, vec![]),
        C::AccountDisabled | C::Unauthorized | C::OneTimeCodeRequired => {
            return RfError::unauthorized();
        }
        C::Forbidden | C::OutOfScope => (StatusCode::FORBIDDEN, INSUFFICIENT_PRIVILEGE, vec![]),
        C::PasswordChangeRequired => (StatusCode::FORBIDDEN, PASSWORD_CHANGE_REQUIRED, vec![""]),
        C::PasswordPolicy => (StatusCode::BAD_REQUEST, PASSWORD_COMPLEXITY_NOT_MET, vec![]),
        C::NotPending | C::Timeout | C::HistoryUnavailable => {
            (StatusCode::CONFLICT, GENERAL_ERROR, vec![])
        }
        C::Overloaded => {
            return RfError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                SERVICE_TEMPORARILY_UNAVAILABLE,
                &["1"],
            )
            .header(http::header::RETRY_AFTER, "1");
        }
        C::Stopping => (
            StatusCode::SERVICE_UNAVAILABLE,
            SERVICE_SHUTTING_DOWN,
            vec![],
        ),
        C::NotSupported => (
            StatusCode::BAD_REQUEST,
            ACTION_NOT_SUPPORTED,
            vec!["this order"],
        ),
        C::DirectoryUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            SERVICE_TEMPORARILY_UNAVAILABLE,
            vec!["5"],
        ),
        C::Internal => return RfError::internal(&error.message),
    };
    let mut info = message.info(&args);
    // The appliance's sentence names what is wrong; the registry's text stays in `Resolution`'s
    // company as the kind of error.
    info["Message"] = Value::String(format!("{} ({})", error.message, error.code));
    RfError::with(status, vec![info])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(file: &str) -> Value {
        // The DMTF registries beside the repository (read-only, as CI has them).
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/redfish")
            .join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        serde_json::from_str(&text).expect("registry JSON")
    }

    #[test]
    fn every_message_is_the_registrys_own() {
        for message in ALL {
            let registry = registry(message.registry.file());
            let entry = &registry["Messages"][message.key];
            assert!(
                entry.is_object(),
                "{} is not in {}",
                message.key,
                message.registry.file()
            );
            assert_eq!(entry["Message"], message.text, "{}", message.key);
            assert_eq!(
                entry["MessageSeverity"], message.severity,
                "{}",
                message.key
            );
            assert_eq!(entry["Resolution"], message.resolution, "{}", message.key);
            let args = entry["NumberOfArgs"].as_u64().unwrap_or(0) as usize;
            let placeholders = (1..=9)
                .filter(|n| message.text.contains(&format!("%{n}")))
                .count();
            assert_eq!(args, placeholders, "{}", message.key);
        }
    }

    #[test]
    fn an_error_body_carries_code_message_and_extended_info() {
        let error = RfError::new(StatusCode::NOT_FOUND, RESOURCE_NOT_FOUND, &["System", "x"]);
        let body = error.body();
        assert_eq!(body["error"]["code"], "Base.1.22.ResourceNotFound");
        assert_eq!(
            body["error"]["message"],
            "The requested resource of type System named 'x' was not found."
        );
        assert_eq!(
            body["error"]["@Message.ExtendedInfo"][0]["MessageArgs"][1],
            "x"
        );
    }
}
