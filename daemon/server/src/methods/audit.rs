//! `audit.*`: reading and verifying the hash-chained audit log.

use crate::rpc::{audit_as_json, AuditDetail, Methods, NoParams, AUDIT_READERS};
use cardd_api::audit::{AuditListParams, AuditVerifyResult};

audit_as_json!(AuditListParams);

/// Adds these methods.
pub fn add(m: &mut Methods) {
    m.method::<cardd_api::audit::List, _, _>(
        "Audit records, oldest first, after a sequence number.",
        AUDIT_READERS,
        false,
        |d, _, p: AuditListParams| async move {
            Ok(d.audit.list(p.after_seq, p.limit.unwrap_or(100))?)
        },
    );

    m.method::<cardd_api::audit::Verify, _, _>(
        "Verify the audit log's hash chain.",
        AUDIT_READERS,
        false,
        |d, _, _: NoParams| async move {
            let records = d.audit.verify_chain()?;
            Ok(AuditVerifyResult {
                records,
                chain_ok: true,
            })
        },
    );
}
