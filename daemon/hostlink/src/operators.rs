//! [`RemoteOperators`]: a fleet site's view of the operators kept at the issuer host. The host
//! checks passwords (`operators.verify`; no hash ever leaves it) and tells a site which of its
//! logged-in operators were disabled or removed (`operators.status`).
//!
//! A host that cannot be reached is [`RemoteOperatorError::Unreachable`], never a wrong password
//! and never "disabled": a site neither refuses a login as 用户和密码错误 nor ends a session on
//! anything but the host's answer.

use std::sync::Arc;

use cardd_api::operators::Operator;
use cardd_api::ErrorCode;

use crate::link::{CallError, HostClient};
use crate::wire::{
    Refusal, StatusAnswer, StatusParams, VerifyParams, OPERATORS_STATUS, OPERATORS_VERIFY,
    STATUS_USERNAMES_MAX,
};

/// Why the host gave no answer a site can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteOperatorError {
    /// No answer (no connection, a timeout, a malformed reply).
    #[error("the issuer host did not answer: {0}")]
    Unreachable(String),
    /// The host answered with a refusal or failure other than wrong credentials: its API code
    /// and zh-CN message.
    #[error("{message}")]
    Remote { code: ErrorCode, message: String },
}

/// The host's operators, seen from a site.
#[derive(Debug, Clone)]
pub struct RemoteOperators {
    client: Arc<HostClient>,
}

impl RemoteOperators {
    pub fn new(client: Arc<HostClient>) -> RemoteOperators {
        RemoteOperators { client }
    }

    /// The operator if the host accepts `username` and `password` (enabled, password right);
    /// `Ok(None)` for the host's one refusal (用户和密码错误).
    pub fn verify(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<Operator>, RemoteOperatorError> {
        let params = VerifyParams {
            username: username.to_owned(),
            password: password.to_owned(),
        };
        match self.client.call::<_, Operator>(OPERATORS_VERIFY, &params) {
            Ok(operator) => Ok(Some(operator)),
            Err(e) => match remote_error(e) {
                RemoteOperatorError::Remote {
                    code: ErrorCode::InvalidCredentials,
                    ..
                } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Which of `usernames` are disabled or gone at the host (at most
    /// [`STATUS_USERNAMES_MAX`] are asked about; the rest wait for the next question).
    pub fn status(&self, usernames: &[String]) -> Result<StatusAnswer, RemoteOperatorError> {
        let params = StatusParams {
            usernames: usernames
                .iter()
                .take(STATUS_USERNAMES_MAX)
                .cloned()
                .collect(),
        };
        self.client
            .call(OPERATORS_STATUS, &params)
            .map_err(remote_error)
    }
}

fn remote_error(e: CallError) -> RemoteOperatorError {
    match e {
        CallError::Unreachable(detail) => RemoteOperatorError::Unreachable(detail),
        CallError::Refused(error) => match error.data {
            Some(Refusal::Record { code, message, .. }) => RemoteOperatorError::Remote {
                code: ErrorCode::from_code(code).unwrap_or(ErrorCode::Internal),
                message,
            },
            _ => RemoteOperatorError::Remote {
                code: ErrorCode::Internal,
                message: format!("发卡方后台出错：{}", error.message),
            },
        },
    }
}
