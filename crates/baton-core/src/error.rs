//! The error catalogue: one table of stable codes, each with its HTTP status and whether a
//! retry can help. Every surface (CLI, HTTP, MCP) renders [`Error`] the same way, so an agent
//! learns one vocabulary of failures.

use serde::Serialize;
use serde_json::Value;
use std::fmt;

macro_rules! codes {
    ($($name:ident => $text:literal, $status:literal, $retryable:literal;)*) => {
        /// A stable, machine-readable error code. The wire form is the SCREAMING_SNAKE text.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $(#[doc = $text] $name,)*
        }

        impl Code {
            /// Every code, for documentation and parity tests.
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            /// The wire form of the code, e.g. `LEASE_LOST`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$name => $text,)* }
            }

            /// The code with this wire form, if any.
            pub fn parse(text: &str) -> Option<Code> {
                match text { $($text => Some(Code::$name),)* _ => None }
            }

            /// The HTTP status this code maps to.
            pub fn http_status(self) -> u16 {
                match self { $(Code::$name => $status,)* }
            }

            /// Whether repeating the same call unchanged can succeed.
            pub fn retryable(self) -> bool {
                match self { $(Code::$name => $retryable,)* }
            }
        }
    };
}

codes! {
    InvalidInput => "INVALID_INPUT", 400, false;
    InvalidDuration => "INVALID_DURATION", 400, false;
    TooLarge => "TOO_LARGE", 413, false;
    SchemaViolation => "SCHEMA_VIOLATION", 422, false;
    InvalidPlan => "INVALID_PLAN", 422, false;
    NotFound => "NOT_FOUND", 404, false;
    MethodNotAllowed => "METHOD_NOT_ALLOWED", 405, false;
    InvalidTransition => "INVALID_TRANSITION", 409, false;
    LeaseLost => "LEASE_LOST", 409, false;
    // Not retryable: the same call, with the same stale version, fails the same way; the
    // hint says to read the task again and send the change anew.
    VersionConflict => "VERSION_CONFLICT", 409, false;
    Cycle => "CYCLE", 409, false;
    AlreadyExists => "ALREADY_EXISTS", 409, false;
    OpenChildren => "OPEN_CHILDREN", 409, false;
    // Not retryable: the agent holds as many leases as it may until it ends one.
    AtCapacity => "AT_CAPACITY", 409, false;
    IdempotencyMismatch => "IDEMPOTENCY_MISMATCH", 422, false;
    Killed => "KILLED", 403, false;
    Unauthorized => "UNAUTHORIZED", 401, false;
    Forbidden => "FORBIDDEN", 403, false;
    RateLimited => "RATE_LIMITED", 429, true;
    Busy => "BUSY", 503, true;
    Unavailable => "UNAVAILABLE", 503, true;
    Storage => "STORAGE", 500, true;
    Internal => "INTERNAL", 500, false;
}

/// A failure of an operation: a code from the catalogue, a message for the reader, a hint
/// saying what to do next, and optional structured details (current state, allowed
/// operations, the cycle's path...).
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    /// The stable code.
    pub code: Code,
    /// What went wrong, in one sentence.
    pub message: String,
    /// What the caller can do about it.
    pub hint: String,
    /// Machine-readable facts about the failure.
    pub details: Option<Value>,
}

/// The result type of every operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with a code, message and hint.
    pub fn new(code: Code, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            hint: hint.into(),
            details: None,
        }
    }

    /// Replaces the hint with one that knows more of the caller's situation.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = hint.into();
        self
    }

    /// Attaches structured details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Bad input: the request itself is wrong and must be changed.
    pub fn invalid(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::new(Code::InvalidInput, message, hint)
    }

    /// An entity that does not exist (or is not visible to the caller).
    pub fn not_found(kind: &str, id: &str) -> Self {
        Error::new(
            Code::NotFound,
            format!("{kind} {id} not found"),
            format!("check the {kind} id; list {kind}s to see what exists"),
        )
        .with_details(serde_json::json!({ "kind": kind, "id": id }))
    }

    /// A storage failure; logged in full by the caller, shown to clients without internals.
    pub fn storage(message: impl fmt::Display) -> Self {
        Error::new(
            Code::Storage,
            format!("storage error: {message}"),
            "retry the call; if it persists, check the data directory",
        )
    }

    /// Whether repeating the call unchanged can succeed.
    pub fn retryable(&self) -> bool {
        self.code.retryable()
    }

    /// Reads the wire form back (as an HTTP client receives it).
    pub fn from_json(body: &Value) -> Option<Error> {
        let e = body.get("error")?;
        Some(Error {
            code: Code::parse(e.get("code")?.as_str()?)?,
            message: e.get("message")?.as_str()?.to_string(),
            hint: e
                .get("hint")
                .and_then(|h| h.as_str())
                .unwrap_or_default()
                .to_string(),
            details: e.get("details").cloned(),
        })
    }

    /// The wire form: `{"error": {"code", "message", "hint", "retryable", "details"?}}`.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.body()).unwrap_or(Value::Null)
    }

    /// The wire form as a typed value (the OpenAPI document is generated from it).
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
                hint: self.hint.clone(),
                retryable: self.retryable(),
                details: self.details.clone(),
            },
        }
    }
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// An error as every surface renders it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// The stable code; branch on it.
    pub code: Code,
    /// What went wrong, in one sentence.
    pub message: String,
    /// What to do about it.
    pub hint: String,
    /// Whether repeating the same call unchanged can succeed.
    pub retryable: bool,
    /// Machine-readable facts: current state, allowed operations, a cycle's path...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// OpenAPI: the code is one of the catalogue's wire names.
impl utoipa::PartialSchema for Code {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Code::ALL.iter().map(|c| c.as_str())))
            .description(Some(
                "A stable error code; retryable codes (the same call again may succeed) are RATE_LIMITED, BUSY, UNAVAILABLE, STORAGE",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Code {}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)?;
        if !self.hint.is_empty() {
            write!(f, " (hint: {})", self.hint)?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl Serialize for Error {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}
