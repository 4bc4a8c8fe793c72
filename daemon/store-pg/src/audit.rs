//! [`PgAudit`]: the issuer host's hash-chained audit log (`host_audit`). What the host is asked
//! to change is recorded before it is changed; a load's authorisation and its booking are
//! recorded in the same transaction as the change itself ([`append_in`]).
//!
//! **Chains.** One chain per site (its id) and `host` for the host's own commands: a record's
//! `seq` follows the last of its chain and its hash covers the previous record's hash and every
//! field, so a record removed, inserted or edited breaks the chain at that place
//! ([`PgAudit::verify`]). Sites do not contend with each other for one chain; two calls of one
//! site at the same moment are ordered by the serializable transaction (one is retried).

use std::sync::Arc;

use cardd_journal::clock::{china_seconds, Clock};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio_postgres::Client;

use crate::db::{body, Database, DbFailure, Mode, TxError, TxResult};

/// The chain of the host's own commands.
pub const HOST_CHAIN: &str = "host";
/// Longest `detail`, in bytes of JSON (larger details are refused: record less).
pub const AUDIT_DETAIL_BYTES_MAX: usize = 16 * 1024;
/// Longest actor, action, target or outcome, in characters.
pub const AUDIT_FIELD_CHARS_MAX: usize = 128;
/// Most records one listing returns.
pub const AUDIT_LIST_MAX: i64 = 1_000;

/// What is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAuditEntry {
    /// The chain: the site's id, or [`HOST_CHAIN`].
    pub chain: String,
    /// Who: the site and its operator (`S01/teller`), or the host's command.
    pub actor: String,
    /// What, e.g. `host.authorize`, `records.recharge`, `sites.disable`.
    pub action: String,
    /// To what: a record, a card, a site.
    pub target: Option<String>,
    /// Parameters worth keeping (never passwords or keys).
    pub detail: serde_json::Value,
    /// `started` before the change, or how it ended.
    pub outcome: String,
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAuditRecord {
    pub chain: String,
    pub seq: i64,
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    /// The exact JSON text that was hashed.
    pub detail: String,
    pub outcome: String,
    pub prev_hash: String,
    pub hash: String,
}

/// Why the audit log refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("audit entry refused: {0}; record less detail")]
    Invalid(String),
    #[error(
        "the host's audit chain {chain} breaks at record {seq}: {reason}; stop and have an \
         administrator compare the database with its backup"
    )]
    Broken {
        chain: String,
        seq: i64,
        reason: String,
    },
    #[error(transparent)]
    Db(#[from] DbFailure),
}

/// What [`PgAudit::verify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditReport {
    pub chains: u64,
    pub records: u64,
}

/// The hash of a record: SHA-256 over the previous hash and every field, each length-prefixed.
pub fn record_hash(r: &HostAuditRecord) -> String {
    let at = r.at.format(&Rfc3339).unwrap_or_default();
    let seq = r.seq.to_string();
    let mut h = Sha256::new();
    for part in [
        r.prev_hash.as_str(),
        r.chain.as_str(),
        seq.as_str(),
        at.as_str(),
        r.actor.as_str(),
        r.action.as_str(),
        r.target.as_deref().unwrap_or("\u{0}"),
        r.detail.as_str(),
        r.outcome.as_str(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

fn check(entry: &HostAuditEntry) -> Result<String, AuditError> {
    for (name, value) in [
        ("chain", entry.chain.as_str()),
        ("actor", entry.actor.as_str()),
        ("action", entry.action.as_str()),
        ("outcome", entry.outcome.as_str()),
        ("target", entry.target.as_deref().unwrap_or("")),
    ] {
        if value.chars().count() > AUDIT_FIELD_CHARS_MAX {
            return Err(AuditError::Invalid(format!(
                "{name} is longer than {AUDIT_FIELD_CHARS_MAX} characters"
            )));
        }
    }
    if entry.chain.is_empty() || entry.action.is_empty() {
        return Err(AuditError::Invalid("chain and action are required".into()));
    }
    let detail =
        serde_json::to_string(&entry.detail).map_err(|e| AuditError::Invalid(e.to_string()))?;
    if detail.len() > AUDIT_DETAIL_BYTES_MAX {
        return Err(AuditError::Invalid(format!(
            "detail is larger than {AUDIT_DETAIL_BYTES_MAX} bytes"
        )));
    }
    Ok(detail)
}

/// Appends `entry` in the caller's transaction (its serializable isolation orders the chain).
pub(crate) async fn append_in<E>(
    c: &Client,
    entry: &HostAuditEntry,
    at: OffsetDateTime,
) -> TxResult<HostAuditRecord, E>
where
    E: From<AuditError>,
{
    let detail = check(entry).map_err(|e| TxError::Refused(E::from(e)))?;
    let last = c
        .query_opt(
            "SELECT seq, hash FROM host_audit WHERE chain = $1 ORDER BY seq DESC LIMIT 1",
            &[&entry.chain],
        )
        .await?;
    let (prev_seq, prev_hash) = last
        .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)))
        .unwrap_or((0, String::new()));
    let mut record = HostAuditRecord {
        chain: entry.chain.clone(),
        seq: prev_seq + 1,
        at,
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        target: entry.target.clone(),
        detail,
        outcome: entry.outcome.clone(),
        prev_hash,
        hash: String::new(),
    };
    record.hash = record_hash(&record);
    c.execute(
        "INSERT INTO host_audit (chain, seq, at, actor, action, target, detail, outcome, \
             prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &record.chain,
            &record.seq,
            &record.at,
            &record.actor,
            &record.action,
            &record.target,
            &record.detail,
            &record.outcome,
            &record.prev_hash,
            &record.hash,
        ],
    )
    .await?;
    Ok(record)
}

/// The host's audit log.
#[derive(Debug, Clone)]
pub struct PgAudit {
    db: Arc<Database>,
    clock: Arc<dyn Clock>,
}

fn row(r: &tokio_postgres::Row) -> HostAuditRecord {
    HostAuditRecord {
        chain: r.get(0),
        seq: r.get(1),
        at: china_seconds(r.get(2)),
        actor: r.get(3),
        action: r.get(4),
        target: r.get(5),
        detail: r.get(6),
        outcome: r.get(7),
        prev_hash: r.get(8),
        hash: r.get(9),
    }
}

const COLUMNS: &str = "chain, seq, at, actor, action, target, detail, outcome, prev_hash, hash";

impl PgAudit {
    pub fn new(db: Arc<Database>, clock: Arc<dyn Clock>) -> PgAudit {
        PgAudit { db, clock }
    }

    /// Appends `entry` in a transaction of its own; durable before it returns.
    pub fn append(&self, entry: &HostAuditEntry) -> Result<HostAuditRecord, AuditError> {
        let at = china_seconds(self.clock.now());
        self.db.call(self.db.transaction(
            Mode::Write,
            "记录审计日志",
            body!(|c| async { append_in::<AuditError>(c, entry, at).await }),
        ))
    }

    /// The newest records of `chain` (every chain: `None`), newest first, at most `limit`
    /// (bounded by [`AUDIT_LIST_MAX`]).
    pub fn list(
        &self,
        chain: Option<&str>,
        limit: i64,
    ) -> Result<Vec<HostAuditRecord>, AuditError> {
        let limit = limit.clamp(1, AUDIT_LIST_MAX);
        self.db.call(self.db.transaction(
            Mode::Read,
            "读取审计日志",
            body!(|c| async {
                let rows = c
                    .query(
                        &format!(
                            "SELECT {COLUMNS} FROM host_audit \
                             WHERE $1::TEXT IS NULL OR chain = $1 \
                             ORDER BY at DESC, chain, seq DESC LIMIT $2"
                        ),
                        &[&chain, &limit],
                    )
                    .await?;
                Ok::<_, TxError<AuditError>>(rows.iter().map(row).collect())
            }),
        ))
    }

    /// Walks every chain from its first record: each record's hash, and its link to the one
    /// before. The first break is the error.
    pub fn verify(&self) -> Result<AuditReport, AuditError> {
        self.db.call(self.db.transaction(
            Mode::Read,
            "核对审计日志",
            body!(|c| async {
                let rows = c
                    .query(
                        &format!("SELECT {COLUMNS} FROM host_audit ORDER BY chain, seq"),
                        &[],
                    )
                    .await?;
                let mut report = AuditReport {
                    chains: 0,
                    records: 0,
                };
                let mut last: Option<(String, i64, String)> = None;
                for r in rows.iter().map(row) {
                    let broken = |reason: &str| {
                        TxError::Refused(AuditError::Broken {
                            chain: r.chain.clone(),
                            seq: r.seq,
                            reason: reason.into(),
                        })
                    };
                    let (expected_seq, expected_prev) = match &last {
                        Some((chain, seq, hash)) if *chain == r.chain => (seq + 1, hash.clone()),
                        _ => {
                            report.chains += 1;
                            (1, String::new())
                        }
                    };
                    if r.seq != expected_seq {
                        return Err(broken(&format!("expected record {expected_seq}")));
                    }
                    if r.prev_hash != expected_prev {
                        return Err(broken("it does not follow the record before it"));
                    }
                    if record_hash(&r) != r.hash {
                        return Err(broken("its hash does not match its content"));
                    }
                    report.records += 1;
                    last = Some((r.chain, r.seq, r.hash));
                }
                Ok(report)
            }),
        ))
    }
}
