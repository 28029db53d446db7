//! Why the node refused or failed a request, in its own terms. The HTTP crate turns an
//! [`ErrorKind`] into a status in one place; the p2p wire carries it as a stable code.

/// The class of a refusal: who is at fault and whether a retry elsewhere can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed or breaks a rule (the caller's fault).
    Invalid,
    /// The payer cannot cover it.
    Payment,
    /// No such thing here (model, job, receipt).
    NotFound,
    /// Too much work queued right now; try again or elsewhere.
    Overloaded,
    /// This node cannot do it now (follower, chain stalled, no provider).
    Unavailable,
    /// Bigger than allowed.
    TooLarge,
    /// Something broke on this node.
    Internal,
}

impl ErrorKind {
    /// The stable code this kind travels as on the p2p wire (`Wire::Fail`). The numbers
    /// are HTTP's for the same meaning, kept so nodes of earlier versions understand them.
    pub fn code(self) -> u16 {
        match self {
            ErrorKind::Invalid => 400,
            ErrorKind::Payment => 402,
            ErrorKind::NotFound => 404,
            ErrorKind::TooLarge => 413,
            ErrorKind::Overloaded => 429,
            ErrorKind::Internal => 500,
            ErrorKind::Unavailable => 503,
        }
    }

    /// The kind a wire code names; unknown codes are read as the caller's fault (400)
    /// below 500 and as the node's (500) from 500 up.
    pub fn from_code(code: u16) -> ErrorKind {
        match code {
            402 => ErrorKind::Payment,
            404 => ErrorKind::NotFound,
            413 => ErrorKind::TooLarge,
            429 => ErrorKind::Overloaded,
            503 => ErrorKind::Unavailable,
            500..=599 => ErrorKind::Internal,
            _ => ErrorKind::Invalid,
        }
    }

    /// Whether the provider, not the request, is to blame: another provider may succeed.
    pub fn provider_fault(self) -> bool {
        matches!(
            self,
            ErrorKind::Overloaded | ErrorKind::Internal | ErrorKind::Unavailable
        )
    }
}

/// A refusal with its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ServeError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ServeError {
    pub fn new(kind: ErrorKind, m: impl Into<String>) -> Self {
        ServeError {
            kind,
            message: m.into(),
        }
    }
    pub fn invalid(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, m)
    }
    pub fn payment(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Payment, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, m)
    }
    pub fn overloaded(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Overloaded, m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, m)
    }
    pub fn too_large(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::TooLarge, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes_round_trip_and_blame_is_typed() {
        use ErrorKind::*;
        for k in [
            Invalid,
            Payment,
            NotFound,
            Overloaded,
            Unavailable,
            TooLarge,
            Internal,
        ] {
            assert_eq!(ErrorKind::from_code(k.code()), k);
        }
        assert_eq!(ErrorKind::from_code(418), Invalid);
        assert_eq!(ErrorKind::from_code(502), Internal);
        assert!(Overloaded.provider_fault() && Internal.provider_fault());
        assert!(!Invalid.provider_fault() && !Payment.provider_fault());
    }
}
