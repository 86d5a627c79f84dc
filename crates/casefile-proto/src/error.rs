//! The error body every API answer uses (`../shared/spec/mde-api.md` §5):
//! `{"error":{"code","message","target"}}`, `target` being the correlation id.

use serde::{Deserialize, Serialize};

/// Error codes casefile emits, spelled as MDE spells them, with their HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ErrorCode {
    BadRequest,
    ODataError,
    InvalidInput,
    InvalidRequestBody,
    MissingRequiredParameter,
    ActiveRequestAlreadyExists,
    Unauthorized,
    Forbidden,
    DisallowedOperation,
    NotFound,
    ResourceNotFound,
    /// A wrong method on a known route (MDE answers an empty `405`; casefile says why).
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    TooManyRequests,
    InternalServerError,
    /// The server's disk is full: nothing was written; retry once space is freed.
    InsufficientStorage,
    /// A resumable upload's chunk does not start at the upload's offset (tus: `409`).
    Conflict,
    /// A protocol version this server does not speak (tus `Tus-Resumable`: `412`).
    PreconditionFailed,
    /// A resumable upload's chunk does not match its `Upload-Checksum` (tus: `460`).
    ChecksumMismatch,
}

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            Self::BadRequest
            | Self::ODataError
            | Self::InvalidInput
            | Self::InvalidRequestBody
            | Self::MissingRequiredParameter
            | Self::ActiveRequestAlreadyExists => 400,
            Self::Unauthorized => 401,
            Self::Forbidden | Self::DisallowedOperation => 403,
            Self::NotFound | Self::ResourceNotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::TooManyRequests => 429,
            Self::InternalServerError => 500,
            Self::InsufficientStorage => 507,
            Self::Conflict => 409,
            Self::PreconditionFailed => 412,
            Self::ChecksumMismatch => 460,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}
