//! Test support: a fresh database per test on the test cluster (`CARDD_TEST_DATABASE_URL`,
//! or a throw-away cluster this test process starts), dropped afterwards.

use std::sync::atomic::{AtomicU32, Ordering};

use tokio_postgres::NoTls;

/// Runs `sql` statements on the database at `url`, on a runtime of their own.
pub fn admin(url: &str, sql: &str) -> Vec<String> {
    try_admin(url, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// [`admin`], answering the database's refusal instead of panicking.
pub fn try_admin(url: &str, sql: &str) -> Result<Vec<String>, tokio_postgres::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .expect("connect to the test cluster");
        let driver = tokio::spawn(connection);
        let rows = client.simple_query(sql).await;
        drop(client);
        let _ = driver.await;
        Ok(rows?
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    Some(row.get(0).unwrap_or("NULL").to_owned())
                }
                _ => None,
            })
            .collect())
    })
}

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let (server, _) = base.rsplit_once('/').expect("a URL with a database");
    match query {
        Some(q) => format!("{server}/{database}?{q}"),
        None => format!("{server}/{database}"),
    }
}

/// How many times a test database's drop is tried before it is left behind.
const DROP_TRIES: u32 = 50;

/// A new, empty database of its own on the test cluster, dropped with it.
pub struct FreshDatabase {
    admin_url: String,
    name: String,
    /// Its URL.
    pub url: String,
}

impl FreshDatabase {
    pub fn create() -> FreshDatabase {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let admin_url = cardd_pg_throwaway::shared_url().expect("a test cluster");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "t_{}_{nanos}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        admin(&admin_url, &format!("CREATE DATABASE {name}"));
        FreshDatabase {
            url: with_database(&admin_url, &name),
            admin_url,
            name,
        }
    }
}

impl Drop for FreshDatabase {
    /// A connection of another role may still be closing (a pool dropped on another thread);
    /// the test's role cannot terminate it, so the drop is tried again for a while. A database
    /// still in use then is left to the throw-away cluster, which goes with the run.
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        for _ in 0..DROP_TRIES {
            match try_admin(&self.admin_url, &sql) {
                Ok(_) => return,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
        if let Err(e) = try_admin(&self.admin_url, &sql) {
            eprintln!("left database {} to the throw-away cluster: {e}", self.name);
        }
    }
}
