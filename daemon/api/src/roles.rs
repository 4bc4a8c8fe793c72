//! Operator roles and what each may do.
//!
//! The seeds show who does what: bank tellers load ETC cards and query recharge records
//! (柜员), supervisors may override a record without the card (主管), group operators recharge
//! their company's cards out of its quota (集团操作员), auditors approve quota top-ups and
//! refunds (审核员), kiosks run self-service loads (自助终端), administrators manage operators and
//! may send raw APDUs (管理员).

use serde::{Deserialize, Serialize};

/// An operator's role.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// 柜员: bank or service-point teller.
    Teller,
    /// 主管: teller supervisor; may override without the card, with a reason.
    Supervisor,
    /// 集团操作员: a group's operator, bound to exactly one group.
    GroupOperator,
    /// 审核员: approves quota top-ups and refunds.
    Auditor,
    /// 自助终端: a self-service kiosk account.
    Kiosk,
    /// 管理员: manages operators; the only role allowed raw APDUs.
    Admin,
}

impl Role {
    pub const ALL: &'static [Role] = &[
        Role::Teller,
        Role::Supervisor,
        Role::GroupOperator,
        Role::Auditor,
        Role::Kiosk,
        Role::Admin,
    ];

    /// The zh-CN name shown to tellers.
    pub fn label_zh(self) -> &'static str {
        match self {
            Role::Teller => "柜员",
            Role::Supervisor => "主管",
            Role::GroupOperator => "集团操作员",
            Role::Auditor => "审核员",
            Role::Kiosk => "自助终端",
            Role::Admin => "管理员",
        }
    }

    /// The snake_case name used on the wire and in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Teller => "teller",
            Role::Supervisor => "supervisor",
            Role::GroupOperator => "group_operator",
            Role::Auditor => "auditor",
            Role::Kiosk => "kiosk",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.iter().copied().find(|r| r.as_str() == text)
    }
}
