//! The Docker API's errors: an HTTP status and a message, sent as
//! `{"message": "…"}` as dockerd does (the docker CLI prints it after
//! "Error response from daemon:").

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// What went wrong and, where it helps, how to fix it.
    pub message: String,
}

impl ApiError {
    /// 400: the request is malformed or asks for something invalid.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::with(400, message)
    }

    /// 404: no such container, image or page.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::with(404, message)
    }

    /// 409: a conflict with the current state (a name in use, a running
    /// container, an image in use).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::with(409, message)
    }

    /// 500: the daemon failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::with(500, message)
    }

    /// 501: a feature this host does not offer.
    pub fn unsupported(what: &str) -> Self {
        Self::with(
            501,
            format!("{what} is not supported by this host (mkhost hostd); see docs/docker-api.md"),
        )
    }

    fn with(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "message": self.message })).unwrap_or_default()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}
