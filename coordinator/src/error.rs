//! Errors the coordinator returns, and their mapping to gRPC status codes.

use dispatch_core::limits::InvalidInput;
use thiserror::Error;

/// What went wrong in a coordinator operation. Each message says what to do next.
#[derive(Debug, Error)]
pub enum CoordinatorError {
    /// The request breaks a rule (limit, format, unknown name).
    #[error("{0}")]
    Invalid(String),
    /// A named task or node does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The name is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but not in the current state (e.g. cancelling a finished task).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller has no credential, or a bad one.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// A quota is spent.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The store failed.
    #[error("store error: {0}")]
    Store(#[from] sqlx::Error),
    /// A stored record could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// This replica is no longer the leader (another took the store's lease): nothing it
    /// writes is committed.
    #[error("{0}")]
    Fenced(String),
}

impl From<InvalidInput> for CoordinatorError {
    fn from(e: InvalidInput) -> Self {
        CoordinatorError::Invalid(e.to_string())
    }
}

impl From<CoordinatorError> for tonic::Status {
    fn from(e: CoordinatorError) -> Self {
        match e {
            CoordinatorError::Invalid(m) => tonic::Status::invalid_argument(m),
            CoordinatorError::NotFound(m) => tonic::Status::not_found(m),
            CoordinatorError::AlreadyExists(m) => tonic::Status::already_exists(m),
            CoordinatorError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            CoordinatorError::Unauthenticated(m) => tonic::Status::unauthenticated(m),
            CoordinatorError::PermissionDenied(m) => tonic::Status::permission_denied(m),
            CoordinatorError::ResourceExhausted(m) => tonic::Status::resource_exhausted(m),
            CoordinatorError::Store(e) => {
                tracing::error!(error = %e, "store error");
                tonic::Status::unavailable(format!(
                    "the coordinator's store failed: {e}; check the coordinator's log and disk"
                ))
            }
            CoordinatorError::Corrupt(m) => tonic::Status::internal(m),
            CoordinatorError::Fenced(m) => tonic::Status::unavailable(m),
        }
    }
}

/// Result of coordinator operations.
pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;
