//! The schema, as numbered SQL files embedded in the binary and applied at open.
//!
//! [`apply`] runs in one transaction: it creates the version table if missing, reads the
//! recorded version, refuses a version newer than [`SCHEMA_VERSION`] (an older binary must not
//! write to a schema it does not know), applies every newer migration in order and records
//! each. Two hosts opening one database at once collide on the version table or on the catalog
//! (creating the same table); the loser's transaction is retried by the caller (`Database::open`)
//! and then finds nothing to do.

use tokio_postgres::GenericClient;

/// The migrations, in order: `(version, SQL)`. A new one is a new file with the next number;
/// a released file never changes.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/0001_records.sql")),
    (2, include_str!("migrations/0002_authorizations.sql")),
    (3, include_str!("migrations/0003_groups.sql")),
    (4, include_str!("migrations/0004_audit.sql")),
    (5, include_str!("migrations/0005_operators.sql")),
    (6, include_str!("migrations/0006_backoffice.sql")),
];

/// The schema version this binary writes: the last migration's.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The table recording applied migrations.
pub const VERSION_TABLE: &str = "cardd_schema_migrations";

/// What [`apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The version found before.
    pub from: i32,
    /// The version now.
    pub to: i32,
}

/// Brings the schema to [`SCHEMA_VERSION`] inside the caller's transaction.
pub async fn apply(client: &impl GenericClient) -> Result<Applied, ApplyError> {
    client
        .batch_execute(&format!(
            "SET LOCAL client_min_messages = warning; CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (\
               version    INTEGER     PRIMARY KEY, \
               applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        ))
        .await?;
    let row = client
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {VERSION_TABLE}"),
            &[],
        )
        .await?;
    let from: i32 = row.get(0);
    if from > SCHEMA_VERSION {
        return Err(ApplyError::TooNew {
            found: from,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > from) {
        client.batch_execute(sql).await?;
        client
            .execute(
                &format!("INSERT INTO {VERSION_TABLE} (version) VALUES ($1)"),
                &[version],
            )
            .await?;
        tracing::info!(version, "database schema migrated");
    }
    Ok(Applied {
        from,
        to: SCHEMA_VERSION,
    })
}

/// Why [`apply`] failed.
#[derive(Debug)]
pub enum ApplyError {
    /// The schema is newer than this binary's.
    TooNew { found: i32, supported: i32 },
    /// The database failed (the caller decides whether to retry).
    Db(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for ApplyError {
    fn from(e: tokio_postgres::Error) -> Self {
        ApplyError::Db(e)
    }
}
