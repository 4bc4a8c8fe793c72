//! The back office's one error type and the one place that maps it to a JSON-RPC error:
//! every refusal and failure a page can meet, with a code the page keys on (`data.name`) and a
//! zh-CN message that says what happened and what to do next.

use serde_json::{json, Value};

/// Why a back-office call was refused or failed. Every message is zh-CN, shown to the back
/// office's people as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackOfficeError {
    #[error("请求不是有效的 JSON：{0}；请刷新页面后重试")]
    Parse(String),
    #[error("请求格式不正确：{0}；请刷新页面后重试")]
    InvalidRequest(String),
    #[error("后台没有方法 {0}：请刷新页面（后台可能已升级）")]
    NoMethod(String),
    #[error("参数不正确：{0}")]
    InvalidParams(String),
    #[error("请先登录后台")]
    NotLoggedIn,
    #[error("登录已超时或已在别处退出，请重新登录")]
    SessionEnded,
    #[error("用户和密码错误")]
    InvalidCredentials,
    #[error(
        "用户 {user} 登录失败次数过多，请 {wait_minutes} 分钟后再试；忘记密码请联系管理员重置"
    )]
    Throttled { user: String, wait_minutes: u64 },
    #[error("{role}账号不能登录后台：请在站点的柜员控制台（或自助终端、集团充值页面）登录；后台只供管理员、审核员和主管使用")]
    NotBackOfficeRole { role: &'static str },
    #[error("您的角色（{role}）不能进行此操作，需要{needs}；如需办理请联系相应人员")]
    Forbidden { role: &'static str, needs: String },
    /// The request itself was refused by a rule (the message names the rule and the way on).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    #[error("后台无法记录审计日志，未作修改：{0}；请联系管理员检查数据库后重试")]
    AuditFailed(String),
    #[error("后台数据库暂时不可用：{0}；请稍后重试，仍然失败请联系管理员")]
    Unavailable(String),
    #[error("后台内部错误：{0}；请重试一次，仍然失败请联系管理员查看日志")]
    Internal(String),
}

impl BackOfficeError {
    /// The JSON-RPC error code.
    pub fn code(&self) -> i64 {
        match self {
            BackOfficeError::Parse(_) => -32700,
            BackOfficeError::InvalidRequest(_) => -32600,
            BackOfficeError::NoMethod(_) => -32601,
            BackOfficeError::InvalidParams(_) => -32602,
            BackOfficeError::Internal(_) => -32603,
            BackOfficeError::NotLoggedIn => -32001,
            BackOfficeError::SessionEnded => -32002,
            BackOfficeError::InvalidCredentials => -32003,
            BackOfficeError::Throttled { .. } => -32004,
            BackOfficeError::NotBackOfficeRole { .. } => -32005,
            BackOfficeError::Forbidden { .. } => -32006,
            BackOfficeError::Refused(_) => -32010,
            BackOfficeError::NotFound(_) => -32011,
            BackOfficeError::AuditFailed(_) => -32020,
            BackOfficeError::Unavailable(_) => -32021,
        }
    }

    /// The name the pages key on (`data.name`).
    pub fn name(&self) -> &'static str {
        match self {
            BackOfficeError::Parse(_) => "ParseError",
            BackOfficeError::InvalidRequest(_) => "InvalidRequest",
            BackOfficeError::NoMethod(_) => "MethodNotFound",
            BackOfficeError::InvalidParams(_) => "InvalidParams",
            BackOfficeError::Internal(_) => "Internal",
            BackOfficeError::NotLoggedIn => "NotLoggedIn",
            BackOfficeError::SessionEnded => "SessionEnded",
            BackOfficeError::InvalidCredentials => "InvalidCredentials",
            BackOfficeError::Throttled { .. } => "Throttled",
            BackOfficeError::NotBackOfficeRole { .. } => "NotBackOfficeRole",
            BackOfficeError::Forbidden { .. } => "Forbidden",
            BackOfficeError::Refused(_) => "Refused",
            BackOfficeError::NotFound(_) => "NotFound",
            BackOfficeError::AuditFailed(_) => "AuditFailed",
            BackOfficeError::Unavailable(_) => "Unavailable",
        }
    }

    /// Whether the caller was refused (as opposed to the back office failing).
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            BackOfficeError::Internal(_)
                | BackOfficeError::AuditFailed(_)
                | BackOfficeError::Unavailable(_)
        )
    }

    /// The JSON-RPC error object.
    pub fn to_json(&self) -> Value {
        json!({ "code": self.code(), "message": self.to_string(), "data": { "name": self.name() } })
    }
}

impl From<cardd_store_pg::OperatorError> for BackOfficeError {
    fn from(e: cardd_store_pg::OperatorError) -> Self {
        use cardd_store_pg::OperatorError as O;
        match e {
            O::InvalidCredentials => BackOfficeError::InvalidCredentials,
            O::NotFound(_) => BackOfficeError::NotFound(e.to_string()),
            O::Invalid(_) | O::PasswordRejected(_) | O::Exists(_) | O::Full => {
                BackOfficeError::Refused(e.to_string())
            }
            O::Audit(a) => BackOfficeError::AuditFailed(a.to_string()),
            O::Db(d) => BackOfficeError::Unavailable(d.to_string()),
            O::Internal(m) => BackOfficeError::Internal(m),
        }
    }
}

impl From<cardd_group::GroupError> for BackOfficeError {
    fn from(e: cardd_group::GroupError) -> Self {
        use cardd_group::GroupError as G;
        match &e {
            G::GroupNotFound(_) | G::NotFound { .. } => BackOfficeError::NotFound(e.to_string()),
            G::Storage(m) => BackOfficeError::Unavailable(m.clone()),
            _ if e.is_refusal() => BackOfficeError::Refused(e.to_string()),
            _ => BackOfficeError::Internal(e.to_string()),
        }
    }
}

impl From<cardd_etc::HostError> for BackOfficeError {
    fn from(e: cardd_etc::HostError) -> Self {
        if e.is_refusal() {
            BackOfficeError::Refused(e.to_string())
        } else {
            BackOfficeError::Unavailable(e.to_string())
        }
    }
}

impl From<cardd_store_pg::sites::SiteError> for BackOfficeError {
    fn from(e: cardd_store_pg::sites::SiteError) -> Self {
        match e {
            cardd_store_pg::sites::SiteError::Unknown(_) => {
                BackOfficeError::NotFound(e.to_string())
            }
            cardd_store_pg::sites::SiteError::Db(d) => BackOfficeError::Unavailable(d.to_string()),
        }
    }
}

impl From<cardd_store_pg::ReviewError> for BackOfficeError {
    fn from(e: cardd_store_pg::ReviewError) -> Self {
        use cardd_store_pg::ReviewError as R;
        match e {
            R::NotFound(_) => BackOfficeError::NotFound(e.to_string()),
            R::Db(d) => BackOfficeError::Unavailable(d.to_string()),
            other => BackOfficeError::Refused(other.to_string()),
        }
    }
}

impl From<cardd_store_pg::AuditError> for BackOfficeError {
    fn from(e: cardd_store_pg::AuditError) -> Self {
        match e {
            cardd_store_pg::AuditError::Db(d) => BackOfficeError::Unavailable(d.to_string()),
            other => BackOfficeError::Refused(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_messages_chinese() {
        let all = [
            BackOfficeError::Parse("x".into()),
            BackOfficeError::InvalidRequest("x".into()),
            BackOfficeError::NoMethod("x".into()),
            BackOfficeError::InvalidParams("x".into()),
            BackOfficeError::NotLoggedIn,
            BackOfficeError::SessionEnded,
            BackOfficeError::InvalidCredentials,
            BackOfficeError::Throttled {
                user: "a".into(),
                wait_minutes: 5,
            },
            BackOfficeError::NotBackOfficeRole { role: "柜员" },
            BackOfficeError::Forbidden {
                role: "审核员",
                needs: "管理员".into(),
            },
            BackOfficeError::Refused("x".into()),
            BackOfficeError::NotFound("x".into()),
            BackOfficeError::AuditFailed("x".into()),
            BackOfficeError::Unavailable("x".into()),
            BackOfficeError::Internal("x".into()),
        ];
        let mut codes: Vec<i64> = all.iter().map(BackOfficeError::code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        for e in &all {
            let m = e.to_string();
            assert!(
                m.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)) || m == "x",
                "{m}"
            );
        }
    }
}
