//! [`PgSites`]: the host's site directory in PostgreSQL (`sites`): which sites may connect,
//! each known by the fingerprint of the certificate issued to it last. Enrolling a site again
//! with a new certificate replaces the old one (which is refused from then on); disabling it
//! refuses it at its next connection, whatever certificate it holds. Each site reports every few
//! seconds ([`PgSites::report`]): the back office shows when it last spoke and what waits in
//! its outbox.

use std::sync::Arc;

use cardd_fleet::{CertFingerprint, DirectoryError, SiteDirectory, SiteEntry, SiteId, SiteLookup};
use cardd_journal::clock::{china_seconds, Clock};

use crate::db::{body, Database, DbFailure, Mode, TxError};

/// A site as the directory lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRow {
    pub site_id: String,
    pub enabled: bool,
    pub cert_fingerprint: String,
    /// When the site was enrolled or changed last (China time).
    pub updated_at: time::OffsetDateTime,
    /// When the site last reported to the host (China time; `None`: never).
    pub last_seen_at: Option<time::OffsetDateTime>,
    /// How many changes waited in the site's outbox at its last report.
    pub outbox_pending: Option<i64>,
}

/// Why a site could not be changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteError {
    #[error(
        "site {0} is not enrolled at the host: enrol it with its certificate's fingerprint first"
    )]
    Unknown(String),
    #[error(transparent)]
    Db(#[from] DbFailure),
}

/// The host's site directory on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgSites {
    db: Arc<Database>,
    clock: Arc<dyn Clock>,
}

impl PgSites {
    pub fn new(db: Arc<Database>, clock: Arc<dyn Clock>) -> PgSites {
        PgSites { db, clock }
    }

    /// Enrols `site` with the certificate of `fingerprint` (enabled), or replaces its
    /// certificate (a re-issue: the old one is refused from now on) and enables it.
    pub fn enrol(&self, site: &SiteId, fingerprint: &CertFingerprint) -> Result<(), SiteError> {
        let at = china_seconds(self.clock.now());
        let (id, fp) = (site.as_str(), fingerprint.to_string());
        let fp = &fp;
        self.db.call(self.db.transaction(
            Mode::Write,
            "登记站点",
            body!(|c| async {
                c.execute(
                    "INSERT INTO sites (site_id, enabled, cert_fingerprint, created_at, updated_at) \
                     VALUES ($1, true, $2, $3, $3) \
                     ON CONFLICT (site_id) DO UPDATE \
                       SET enabled = true, cert_fingerprint = $2, updated_at = $3",
                    &[&id, fp, &at],
                )
                .await?;
                Ok::<_, TxError<SiteError>>(())
            }),
        ))?;
        tracing::info!(site = id, fingerprint = %fp, "site enrolled");
        Ok(())
    }

    /// Enables or disables `site`.
    pub fn set_enabled(&self, site: &SiteId, enabled: bool) -> Result<(), SiteError> {
        let at = china_seconds(self.clock.now());
        let id = site.as_str();
        self.db.call(self.db.transaction(
            Mode::Write,
            "修改站点状态",
            body!(|c| async {
                let n = c
                    .execute(
                        "UPDATE sites SET enabled = $2, updated_at = $3 WHERE site_id = $1",
                        &[&id, &enabled, &at],
                    )
                    .await?;
                if n == 0 {
                    return Err(TxError::Refused(SiteError::Unknown(id.to_owned())));
                }
                Ok(())
            }),
        ))?;
        tracing::info!(site = id, enabled, "site changed");
        Ok(())
    }

    /// Every site, by id.
    pub fn list(&self) -> Result<Vec<SiteRow>, SiteError> {
        self.db.call(self.db.transaction(
            Mode::Read,
            "读取站点",
            body!(|c| async {
                let rows = c
                    .query(
                        "SELECT site_id, enabled, cert_fingerprint, updated_at, last_seen_at, \
                                outbox_pending FROM sites ORDER BY site_id",
                        &[],
                    )
                    .await?;
                Ok::<_, TxError<SiteError>>(
                    rows.iter()
                        .map(|r| SiteRow {
                            site_id: r.get(0),
                            enabled: r.get(1),
                            cert_fingerprint: r.get(2),
                            updated_at: china_seconds(r.get(3)),
                            last_seen_at: r
                                .get::<_, Option<time::OffsetDateTime>>(4)
                                .map(china_seconds),
                            outbox_pending: r.get(5),
                        })
                        .collect(),
                )
            }),
        ))
    }

    /// Records a site's report: it spoke now, with `outbox_pending` changes waiting in its
    /// outbox.
    pub fn report(&self, site: &SiteId, outbox_pending: u64) -> Result<(), SiteError> {
        let at = china_seconds(self.clock.now());
        let id = site.as_str();
        let pending = i64::try_from(outbox_pending).unwrap_or(i64::MAX);
        self.db.call(self.db.transaction(
            Mode::Write,
            "记录站点状态",
            body!(|c| async {
                let n = c
                    .execute(
                        "UPDATE sites SET last_seen_at = $2, outbox_pending = $3 \
                         WHERE site_id = $1",
                        &[&id, &at, &pending],
                    )
                    .await?;
                if n == 0 {
                    return Err(TxError::Refused(SiteError::Unknown(id.to_owned())));
                }
                Ok(())
            }),
        ))
    }

    /// The site's entry, read on the calling thread.
    pub fn entry(&self, site: &SiteId) -> Result<Option<SiteEntry>, SiteError> {
        let id = site.as_str();
        let row = self.db.call(self.db.transaction(
            Mode::Read,
            "读取站点",
            body!(|c| async {
                let row = c
                    .query_opt(
                        "SELECT enabled, cert_fingerprint FROM sites WHERE site_id = $1",
                        &[&id],
                    )
                    .await?;
                Ok::<_, TxError<SiteError>>(
                    row.map(|r| (r.get::<_, bool>(0), r.get::<_, String>(1))),
                )
            }),
        ))?;
        let Some((enabled, fingerprint)) = row else {
            return Ok(None);
        };
        let cert_fingerprint = fingerprint.parse().map_err(|_| {
            SiteError::Db(DbFailure::Failed(format!(
                "site {id} has a malformed certificate fingerprint in the database"
            )))
        })?;
        Ok(Some(SiteEntry {
            enabled,
            cert_fingerprint,
        }))
    }
}

impl SiteDirectory for PgSites {
    /// Read on a thread of its own: the database's calls block, and this is asked from the
    /// host's network tasks.
    fn site<'a>(&'a self, site_id: &'a SiteId) -> SiteLookup<'a> {
        let (me, id) = (self.clone(), site_id.clone());
        Box::pin(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name("site-lookup".into())
                .spawn(move || {
                    let _ = tx.send(me.entry(&id));
                })
                .map_err(|e| DirectoryError(Box::new(e)))?;
            match rx.await {
                Ok(entry) => entry.map_err(|e| DirectoryError(Box::new(e))),
                Err(e) => Err(DirectoryError(Box::new(e))),
            }
        })
    }
}
