//! The one error type that HTTP handlers return: it picks the status and the JSON body in one place.
//! 4xx errors say what was wrong; 5xx errors say little to the client and log the details.

use hyper::StatusCode;

/// An error answered to a client as `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    /// Unauthorized, asking for Basic credentials (`WWW-Authenticate`): for a client that sent none
    /// and cannot send a header of its own, a browser's `EventSource`.
    #[error("{0}")]
    BasicChallenge(String),
    /// Authenticated, but its scopes do not allow this.
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    /// With the methods the route does answer, for the `Allow` header.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// The state the request was judged on changed before it could commit.
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The event, as stored, is larger than the event log takes (a cluster's `max_payload`).
    #[error("the event is larger than the {0} bytes the event log takes; send less data")]
    EventTooLarge(usize),
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// Too many wrong one-time codes for this user: wait for the next window.
    #[error("too many wrong codes for this user; try again later")]
    TooManyAttempts,
    /// Too many wrong admin tokens from this client address: wait for the next minute.
    #[error("too many wrong admin tokens from this address; try again later")]
    TooManyAdminFailures,
    /// Past a per-user, per-tenant or per-address limit: answered 429 with `Retry-After`.
    #[error(transparent)]
    Limited(#[from] crate::limits::Limited),
    /// The tenant's guest failed (trap, deadline, memory, bad output): the message names the cause.
    #[error("{0}")]
    Guest(String),
    #[error("the database is full")]
    StorageFull,
    #[error("the server is shutting down")]
    Unavailable,
    /// A bounded resource is at its limit, or storage is briefly out of reach: answered 503 with
    /// `Retry-After`.
    #[error("{0}")]
    Overloaded(String),
    /// Anything unexpected: logged in full, answered as a bare "internal error".
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::Unauthorized(message.into())
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Self::Internal(error.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) | Self::BasicChallenge(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) | Self::EventTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Limited(limited) if limited.limit == crate::limits::Limit::TenantMaxBytes => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            Self::TooManyAttempts | Self::TooManyAdminFailures | Self::Limited(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Guest(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
            Self::Unavailable | Self::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<crate::accounts::AccountError> for ApiError {
    fn from(error: crate::accounts::AccountError) -> Self {
        use crate::accounts::AccountError;
        match error {
            AccountError::Invalid(message) => Self::BadRequest(message),
            AccountError::Taken | AccountError::NotFound => Self::BadRequest(error.to_string()),
            AccountError::Storage(error) => error.into(),
            AccountError::Password(error) => error.into(),
            AccountError::Internal(reason) => Self::internal(anyhow::anyhow!(reason)),
        }
    }
}

impl From<crate::auth::password_workers::PasswordJobError> for ApiError {
    fn from(error: crate::auth::password_workers::PasswordJobError) -> Self {
        use crate::auth::password_workers::PasswordJobError;
        match error {
            PasswordJobError::Busy => Self::Overloaded(error.to_string()),
            PasswordJobError::Stopped => Self::Unavailable,
            PasswordJobError::Failed(_) => Self::internal(error),
        }
    }
}

impl From<crate::storage::StorageError> for ApiError {
    fn from(error: crate::storage::StorageError) -> Self {
        use crate::storage::StorageError;
        match error {
            StorageError::Full => Self::StorageFull,
            StorageError::TenantFull => Self::Limited(crate::limits::Limited::new(
                crate::limits::Limit::TenantMaxBytes,
                std::time::Duration::ZERO,
            )),
            StorageError::TooLarge(limit) => Self::EventTooLarge(limit),
            StorageError::WriterStopped => Self::Unavailable,
            StorageError::BadKey => Self::BadRequest(error.to_string()),
            StorageError::StaleRead => Self::Conflict(error.to_string()),
            // Logged, then answered 503 with Retry-After: NATS reconnects by itself.
            StorageError::Unavailable(ref reason) => {
                tracing::warn!(reason, "storage unavailable");
                Self::Overloaded("storage is unavailable; retry shortly".into())
            }
            other => Self::internal(other),
        }
    }
}
