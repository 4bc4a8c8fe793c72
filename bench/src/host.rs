//! `host`: the fleet's issuer host under load. Authorized loads per second and latency per load
//! with 1, 16 and 64 simulated sites against one `cardd-host` (the release binary, a real
//! process) on PostgreSQL with durable commits, then 64 sites split between two `cardd-host`
//! processes on the same database; next to them, `pgbench -N` on the same cluster in the same
//! run, as the ceiling of what this machine's PostgreSQL commits.
//!
//! **A simulated site** is a thread of this process with its own site certificate (issued by a
//! fleet CA made for the run, enrolled at the host with `cardd_store_pg::PgSites`), its own
//! simulated ETC card and the site's real wire code (`cardd_hostlink::HttpsLink` behind
//! `cardd_authority::RemoteSam`). It loads in a closed loop: INITIALIZE FOR LOAD → authorize
//! (host round trip) → CREDIT FOR LOAD → confirm (host round trip), each load paid by a recharge
//! record seeded at the host before the timed part (bulk SQL, never more than
//! [`SEED_LOADS_PER_S_MAX`] × the step's seconds, so a site never runs out). The site keeps no
//! journal here: the host's work is measured, not the site's disk.
//!
//! **Counted, not assumed:** host round trips per load are the sites' requests written
//! (`HostClient::stats`) over loads done; PostgreSQL transactions per load are the bench
//! database's `xact_commit + xact_rollback` deltas (`pg_stat_database`) over loads done; WAL
//! flushes per load come from `pg_stat_wal`. CPU is split between this process (the sites),
//! the host processes and the rest of the machine (PostgreSQL, and whatever else runs).
//!
//! Needs a PostgreSQL cluster: `cargo xtask bench` starts a throw-away one (fsync and
//! `synchronous_commit` on) and passes its URL in `CARDD_TEST_DATABASE_URL`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cardd_authority::RemoteSam;
use cardd_fleet::ca::{host_files, site_files};
use cardd_fleet::{site_client_config, FleetCa, SiteId};
use cardd_hostlink::HttpsLink;
use cardd_purse::{
    CardIdentity, CardKeyContext, Funding, LoadAuthorization, LoadPlan, LoadSession, Pin, Purse,
    SecurityModule,
};
use cardd_reader::Reader;

use crate::report::{self, Samples};

/// The simulated site counts of the one-host steps.
const SITES: &[usize] = &[1, 16, 64];
/// Sites of the two-host step (split evenly).
const TWO_HOST_SITES: usize = 64;
/// The host certificate's name.
const HOST_NAME: &str = "host.bench.test";
/// Validity of the run's certificates, in days.
const DAYS: u32 = 2;
/// The bench's own database and pgbench's, created afresh in the cluster.
const HOST_DB: &str = "cardd_bench_host";
const PGBENCH_DB: &str = "cardd_bench_pgbench";
/// pgbench's clients and scale.
const PGBENCH_CLIENTS: usize = 16;
const PGBENCH_SCALE: u32 = 10;
/// Records seeded per step: enough for this many loads per second, more than the machine's
/// PostgreSQL commits (pgbench), so no site runs out.
const SEED_LOADS_PER_S_MAX: f64 = 9_000.0;
/// How long a host may take to print its address.
const HOST_START_MS: u64 = 30_000;
/// A site's call timeout, in ms.
const CALL_TIMEOUT_MS: u64 = 10_000;
/// How long PostgreSQL's backends may take to report their statistics (a busy backend flushes
/// them at most once a second, an idle one within 10 s).
const STATS_SETTLE_MS: u64 = 11_000;
/// Each load's amount, in fen.
const AMOUNT_FEN: u32 = 1;

pub fn run(quick: bool) -> Result<()> {
    let seconds = if quick { 1.5 } else { 5.0 };
    let url = std::env::var(cardd_pg_throwaway::URL_VAR).with_context(|| {
        format!(
            "{} is not set: run the host section through `cargo xtask bench` (it starts a \
             throw-away PostgreSQL)",
            cardd_pg_throwaway::URL_VAR
        )
    })?;
    let host_bin = sibling("cardd-host")?;
    let dir = tempfile::tempdir().context("temp dir")?;
    let admin = Pg::connect(&url)?;
    admin.fresh_database(HOST_DB)?;
    admin.fresh_database(PGBENCH_DB)?;
    let host_url = with_database(&url, HOST_DB);
    let pg = Pg::connect(&host_url)?;
    report::note(
        "host.postgresql",
        &format!(
            "{}, synchronous_commit={}, fsync={}",
            pg.one("SHOW server_version")?,
            pg.one("SHOW synchronous_commit")?,
            pg.one("SHOW fsync")?
        ),
    );

    // The fleet: CA, host certificate, sites enrolled; the schema made by opening it.
    let ca_dir = dir.path().join("ca");
    FleetCa::init(&ca_dir, DAYS).context("fleet CA")?;
    let ca = FleetCa::open(&ca_dir).context("fleet CA")?;
    ca.issue_host(HOST_NAME, &["127.0.0.1".to_owned()], DAYS, false)
        .context("host certificate")?;
    let db = Arc::new(cardd_store_pg::Database::open(&host_url).context("host database")?);
    let sites =
        cardd_store_pg::PgSites::new(db.clone(), Arc::new(cardd_journal::clock::SystemClock));
    let most = SITES.iter().copied().max().unwrap_or(1).max(TWO_HOST_SITES);
    for i in 0..most {
        let site = site_id(i);
        let issued = ca
            .issue_site(&site, DAYS, false)
            .context("site certificate")?;
        sites.enrol(&site, &issued.fingerprint)?;
    }
    drop(sites);
    drop(db);
    pg.seed_vehicles(most)?;
    let config = write_config(dir.path(), &ca_dir, &host_url)?;

    // The ceiling: pgbench -N on the same cluster, now; and one client alone, whose rate is
    // one durable commit after another (the floor of a load's latency: two of them).
    let pgbench_url = with_database(&url, PGBENCH_DB);
    pgbench_init(&pgbench_url)?;
    let pgbench = pgbench_run(&pgbench_url, PGBENCH_CLIENTS, seconds)?;
    report::figure(
        &format!("host.pgbench_n_{PGBENCH_CLIENTS}_clients.tps"),
        pgbench,
        "txn/s",
    );
    let alone = pgbench_run(&pgbench_url, 1, seconds)?;
    report::figure("host.pgbench_n_1_client.tps", alone, "txn/s");
    report::figure(
        "host.pgbench_n_1_client.latency",
        1e3 / alone.max(1e-9),
        "ms",
    );

    let mut hosts = vec![Host::start(&host_bin, &config, dir.path(), 0)?];
    let mut step = 0;
    let mut one_host_64 = 0.0;
    for &n in SITES {
        step += 1;
        let outcome = run_step(
            &pg,
            &ca_dir,
            &hosts,
            n,
            step,
            seconds,
            &format!("host.sites_{n}"),
        )?;
        if n == 64 {
            one_host_64 = outcome.rate;
            report::ratio("host.sites_64.vs_pgbench", outcome.rate, pgbench);
            report::ratio(
                "host.sites_64.pg_xacts_vs_pgbench",
                outcome.rate * outcome.xacts_per_load,
                pgbench,
            );
            target(&outcome);
        }
    }
    hosts.push(Host::start(&host_bin, &config, dir.path(), 1)?);
    step += 1;
    let two = run_step(
        &pg,
        &ca_dir,
        &hosts,
        TWO_HOST_SITES,
        step,
        seconds,
        &format!("host.sites_{TWO_HOST_SITES}_hosts_2"),
    )?;
    report::ratio(
        &format!("host.sites_{TWO_HOST_SITES}.two_hosts_vs_one"),
        two.rate,
        one_host_64,
    );
    for host in &mut hosts {
        host.stop();
    }
    Ok(())
}

/// The issue's target at 64 sites: at least 3,000 loads/s with p99 under 20 ms.
fn target(outcome: &Outcome) {
    const LOADS_PER_S: f64 = 3_000.0;
    const P99_MS: f64 = 20.0;
    let met = outcome.rate >= LOADS_PER_S && outcome.p99_ms < P99_MS;
    report::note(
        "host.target_64_sites",
        &format!(
            "{} ({:.0} loads/s of {LOADS_PER_S:.0}: {:.0}%; p99 {:.1} ms of < {P99_MS:.0} ms)",
            if met { "met" } else { "missed" },
            outcome.rate,
            100.0 * outcome.rate / LOADS_PER_S,
            outcome.p99_ms
        ),
    );
}

/// What a step measured.
struct Outcome {
    rate: f64,
    p99_ms: f64,
    xacts_per_load: f64,
}

/// The binary `name` next to this one (cargo builds them into the same directory).
fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current exe")?;
    let path = exe
        .parent()
        .map(|d| d.join(name))
        .context("the bench binary has no directory")?;
    if !path.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release -p cardd-host` (cargo xtask \
             bench does)",
            path.display()
        );
    }
    Ok(path)
}

fn site_id(i: usize) -> SiteId {
    format!("B{i:03}").parse().expect("B000… are site ids")
}

/// The number of site `i`'s simulated card.
fn card_number(i: usize) -> String {
    format!("6101{}", internal_number(i))
}

fn internal_number(i: usize) -> String {
    format!("18029{i:011}")
}

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{database}"),
        None => url.to_owned(),
    }
}

/// The host's configuration file: demo keys (the simulated cards are personalised with them).
fn write_config(dir: &Path, ca_dir: &Path, url: &str) -> Result<PathBuf> {
    let files = host_files(ca_dir, HOST_NAME);
    let path = dir.join("cardd-host.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndatabase_url = {url:?}\n\n[tls]\nca_cert = {:?}\ncert = {:?}\nkey = {:?}\n\n[keys]\nsource = \"demo\"\n",
        files.ca_cert, files.cert, files.key
    );
    std::fs::write(&path, text).context("writing the host's configuration")?;
    Ok(path)
}

/// A running `cardd-host serve`.
struct Host {
    child: Child,
    addr: SocketAddr,
}

impl Host {
    fn start(bin: &Path, config: &Path, dir: &Path, n: usize) -> Result<Host> {
        let log = std::fs::File::create(dir.join(format!("cardd-host-{n}.log")))?;
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(config)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("the host's stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening ") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_millis(HOST_START_MS)) {
            Ok(addr) => addr.parse().context("the host's address")?,
            Err(_) => {
                let _ = child.kill();
                bail!(
                    "cardd-host did not start in time (log in {})",
                    dir.display()
                );
            }
        };
        Ok(Host { child, addr })
    }

    /// CPU time the host process used so far.
    fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        report::cpu_from_stat(&stat)
    }

    fn stop(&mut self) {
        // SIGTERM through kill(1): the host stops serving and exits.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// A blocking PostgreSQL client on a small runtime of its own.
struct Pg {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Pg {
    fn connect(url: &str) -> Result<Pg> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            Ok::<_, tokio_postgres::Error>(client)
        });
        let client = client.context("connecting to PostgreSQL")?;
        Ok(Pg { runtime, client })
    }

    fn execute(&self, sql: &str) -> Result<()> {
        self.runtime
            .block_on(self.client.batch_execute(sql))
            .with_context(|| format!("PostgreSQL: {sql}"))
    }

    fn one(&self, sql: &str) -> Result<String> {
        let row = self
            .runtime
            .block_on(self.client.query_one(sql, &[]))
            .with_context(|| format!("PostgreSQL: {sql}"))?;
        Ok(row.get(0))
    }

    fn fresh_database(&self, name: &str) -> Result<()> {
        self.execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
        self.execute(&format!("CREATE DATABASE {name}"))
    }

    /// One vehicle per simulated card.
    fn seed_vehicles(&self, n: usize) -> Result<()> {
        self.execute(&format!(
            "INSERT INTO vehicles (colour, plate, owner_name, vehicle_class, created_at, \
                 updated_at, updated_by) \
             SELECT 0, 'BENCH' || i, 'bench', 1, now(), now(), 'bench' \
             FROM generate_series(0, {last}) i; \
             INSERT INTO vehicle_cards (card_number, colour, plate, position) \
             SELECT '610118029' || lpad(i::text, 11, '0'), 0, 'BENCH' || i, 0 \
             FROM generate_series(0, {last}) i;",
            last = n - 1
        ))
    }

    /// `per_card` funded (未圈存) records of 1 fen for each of the first `n` cards, named
    /// `S<step>-<card>-<k>` (k from 1), with their history's first entry.
    fn seed_records(&self, step: usize, n: usize, per_card: usize) -> Result<()> {
        self.execute(&format!(
            "INSERT INTO recharge_records (record_id, card_number, colour, plate, amount_fen, \
                 recharged_at, channel, status) \
             SELECT 'S{step}-' || i || '-' || k, '610118029' || lpad(i::text, 11, '0'), 0, \
                 'BENCH' || i, {AMOUNT_FEN}, now(), 'bench', 'not_loaded' \
             FROM generate_series(0, {last}) i, generate_series(1, {per_card}) k; \
             INSERT INTO record_history (record_id, seq, at, operator, action, to_status) \
             SELECT record_id, 0, recharged_at, 'bench', 'recharge', 'not_loaded' \
             FROM recharge_records WHERE record_id LIKE 'S{step}-%'; \
             ANALYZE vehicles, vehicle_cards, recharge_records, record_history;",
            last = n - 1
        ))
    }

    /// The bench database's transactions so far: commits + rollbacks, rollbacks, and the
    /// sequential scans of its tables.
    fn xacts(&self) -> Result<(i64, i64, i64)> {
        let row = self.runtime.block_on(self.client.query_one(
            "SELECT (xact_commit + xact_rollback)::bigint, xact_rollback::bigint, \
                 (SELECT coalesce(sum(seq_scan), 0)::bigint FROM pg_stat_user_tables) \
             FROM pg_stat_database WHERE datname = current_database()",
            &[],
        ))?;
        Ok((row.get(0), row.get(1), row.get(2)))
    }

    /// The cluster's WAL flushes (`pg_stat_wal.wal_sync`) and WAL records so far, if readable.
    fn wal(&self) -> Option<(i64, i64)> {
        let row = self
            .runtime
            .block_on(self.client.query_one(
                "SELECT wal_sync::bigint, wal_records::bigint FROM pg_stat_wal",
                &[],
            ))
            .ok()?;
        Some((row.get(0), row.get(1)))
    }
}

fn pgbench_bin() -> Result<PathBuf> {
    cardd_pg_throwaway::bin_dir()
        .map(|d| d.join("pgbench"))
        .filter(|p| p.exists())
        .context("pgbench is not installed (Debian's postgresql-15: cargo xtask setup)")
}

/// `pgbench -i` on the scratch database.
fn pgbench_init(url: &str) -> Result<()> {
    let init = Command::new(pgbench_bin()?)
        .args(["-i", "-q", "-s", &PGBENCH_SCALE.to_string(), url])
        .output()
        .context("pgbench -i")?;
    if !init.status.success() {
        bail!(
            "pgbench -i: {}",
            String::from_utf8_lossy(&init.stderr).trim()
        );
    }
    Ok(())
}

/// `pgbench -N` with `clients` clients for `seconds`: its transactions per second.
fn pgbench_run(url: &str, clients: usize, seconds: f64) -> Result<f64> {
    let run = Command::new(pgbench_bin()?)
        .args([
            "-N",
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
            "-T",
            &format!("{}", seconds.ceil() as u64),
            url,
        ])
        .output()
        .context("pgbench -N")?;
    let text = String::from_utf8_lossy(&run.stdout);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        })
        .with_context(|| {
            format!(
                "pgbench -N printed no rate: {}",
                String::from_utf8_lossy(&run.stderr).trim()
            )
        })
}

/// One simulated site: its card in a simulated reader, its link to a host.
struct Site {
    index: usize,
    reader: Reader,
    link: HttpsLink,
    sam: RemoteSam,
}

impl Site {
    fn new(ca_dir: &Path, index: usize, host: SocketAddr) -> Result<Site> {
        let spec = cardd_sim::EtcCardSpec {
            internal_number: internal_number(index),
            max_balance_fen: u32::MAX / 2,
            ..cardd_sim::demo::demo_etc_spec()
        };
        let card = cardd_sim::EtcCard::issue(&spec, &cardd_sim::demo::demo_masters())
            .map_err(|e| anyhow::anyhow!("issuing card {index}: {e}"))?;
        let world = cardd_sim::SimWorld::new();
        world.add_reader(
            cardd_sim::SimReaderConfig::new("r", cardd_sim::SimReaderKind::Contact)
                .with_card(card.into()),
        )?;
        let session = cardd_reader::ReaderFactory::open(
            &cardd_sim::SimFactory::new(world),
            &cardd_reader::ReaderSelector::Id("sim:r".into()),
        )?;
        let tls = site_client_config(&site_files(ca_dir, &site_id(index))).context("site TLS")?;
        let link = HttpsLink::new(
            host,
            HOST_NAME,
            Arc::new(tls),
            Duration::from_millis(CALL_TIMEOUT_MS),
        )?;
        Ok(Site {
            index,
            reader: Reader::new(session, Duration::from_secs(5)),
            sam: RemoteSam::new(Arc::new(link.clone())),
            link,
        })
    }
}

/// The start of a step's timed part: sites count themselves warmed up (or failed), then wait
/// for `go`.
#[derive(Default)]
struct Gate {
    warmed: AtomicUsize,
    failed: AtomicUsize,
    go: AtomicBool,
}

/// How long the sites of a step may take to connect and load once, in ms.
const WARM_UP_MS: u64 = 60_000;

/// Loads on `site` until `stop`, paid by records `S<step>-<site>-<k>` from `k = first`: the
/// loads done and their latencies, or the first failure.
fn load_loop(
    site: &mut Site,
    step: usize,
    first: usize,
    last: usize,
    stop: &AtomicBool,
    gate: &Gate,
) -> (u64, Samples, Option<String>) {
    let mut samples = Samples::default();
    let mut done = 0;
    let sam = &site.sam;
    let mut purse = Purse::new(&mut site.reader);
    let failure = (|| -> Result<()> {
        let CardIdentity::Etc(info) = purse.identify_payment_card()? else {
            bail!("the simulated card is not an ETC card");
        };
        let card = CardKeyContext::etc(&info);
        let number = card_number(site.index);
        purse.select_etc_adf()?;
        purse.verify_pin(
            &number,
            &Pin::ascii("123456")?,
            &cardd_purse::MemoryPinRefusals::default(),
        )?;
        for k in first..=last {
            // The warm-up load (k == first) runs before the timed part starts.
            if k > first && stop.load(Ordering::Relaxed) {
                break;
            }
            let began = Instant::now();
            let plan = LoadPlan::new(
                card,
                AMOUNT_FEN,
                [0x11, 0x22, 0x33, 0x44, 0x55, 0x66],
                cardd_crypto::bcd::date(2026, 12, 7),
                cardd_crypto::bcd::time(12, 0, 0),
            );
            sam.authorize_load(&LoadAuthorization {
                txn_id: txn_id(step, site.index, k),
                card_number: number.clone(),
                card: plan.card,
                terms: plan.terms,
                funding: Funding::EtcRecord {
                    record_id: format!("S{step}-{}-{k}", site.index),
                },
            })?;
            let init = purse.init_load_for(&plan)?;
            let session = LoadSession::start(plan, init, sam)?;
            let tac = purse.credit_for(&session)?;
            session.verify_tac(sam, tac)?;
            if k > first {
                samples.push(began.elapsed());
                done += 1;
            } else {
                // Warmed up: the timed part starts when every site is.
                gate.warmed.fetch_add(1, Ordering::SeqCst);
                while !gate.go.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        Ok(())
    })()
    .err()
    .map(|e| format!("{e:#}"));
    (done, samples, failure)
}

/// One step: `n` sites spread over `hosts`, loading for `seconds`.
fn run_step(
    pg: &Pg,
    ca_dir: &Path,
    hosts: &[Host],
    n: usize,
    step: usize,
    seconds: f64,
    name: &str,
) -> Result<Outcome> {
    let per_card = ((SEED_LOADS_PER_S_MAX * seconds) / n as f64).ceil() as usize + 1;
    pg.seed_records(step, n, per_card)?;
    let mut sites = (0..n)
        .map(|i| Site::new(ca_dir, i, hosts[i % hosts.len()].addr))
        .collect::<Result<Vec<_>>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    // Every site connected and loaded once (untimed) before the timed part.
    let gate = Arc::new(Gate::default());
    let results = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = sites
        .drain(..)
        .map(|mut site| {
            let (stop, gate, results, failures, name) = (
                stop.clone(),
                gate.clone(),
                results.clone(),
                failures.clone(),
                name.to_owned(),
            );
            std::thread::spawn(move || {
                let (done, samples, failure) =
                    load_loop(&mut site, step, 1, per_card, &stop, &gate);
                if failure.is_some() {
                    gate.failed.fetch_add(1, Ordering::SeqCst);
                }
                if let Some(why) = failure {
                    if failures.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("{name}: site {} stopped: {why}", site.index);
                    }
                }
                let stats = site.link.0.stats();
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((done, samples, stats));
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_millis(WARM_UP_MS);
    while gate.warmed.load(Ordering::SeqCst) + gate.failed.load(Ordering::SeqCst) < n
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Every site's first load is done (and its connection open): the timed part.
    std::thread::sleep(Duration::from_millis(STATS_SETTLE_MS));
    let xacts_before = pg.xacts()?;
    let wal_before = pg.wal();
    let host_cpu_before: Duration = hosts.iter().map(Host::cpu).sum();
    let bench_cpu_before = report::process_cpu();
    let machine_before = machine_cpu();
    let started = Instant::now();
    gate.go.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let wall = started.elapsed().as_secs_f64();
    let host_cpu = (hosts.iter().map(Host::cpu).sum::<Duration>() - host_cpu_before).as_secs_f64();
    let bench_cpu = (report::process_cpu() - bench_cpu_before).as_secs_f64();
    let machine = machine_cpu().since(&machine_before);
    std::thread::sleep(Duration::from_millis(STATS_SETTLE_MS));
    // Less the two statistics queries of this bench's own connection.
    let xacts_after = pg.xacts()?;
    let xacts = (xacts_after.0 - xacts_before.0 - 2).max(0) as f64;
    let rollbacks = (xacts_after.1 - xacts_before.1).max(0) as f64;
    let seq_scans = (xacts_after.2 - xacts_before.2).max(0) as f64;
    let wal = pg
        .wal()
        .zip(wal_before)
        .map(|(a, b)| (a.0 - b.0, a.1 - b.1));

    let results = std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
    let mut samples = Samples::default();
    let (mut loads, mut requests, mut connections) = (0u64, 0u64, 0u64);
    for (done, s, stats) in &results {
        loads += done;
        samples.extend(s);
        requests += stats.requests;
        connections += stats.connections;
    }
    // Each site's warm-up load: two requests on its first connection.
    let warm = results.len() as u64;
    let timed_requests = requests.saturating_sub(2 * warm);
    let rate = loads as f64 / wall;
    let per_load = |x: f64| if loads > 0 { x / loads as f64 } else { 0.0 };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    report::figure(&format!("{name}.loads_per_s"), rate, "loads/s");
    report::figure(&format!("{name}.p50"), samples.percentile(50.0) / 1e3, "ms");
    report::figure(&format!("{name}.p99"), samples.percentile(99.0) / 1e3, "ms");
    report::figure(
        &format!("{name}.round_trips_per_load"),
        per_load(timed_requests as f64),
        "requests",
    );
    report::figure(
        &format!("{name}.connections_opened"),
        connections as f64,
        "connections",
    );
    report::figure(
        &format!("{name}.pg_xacts_per_load"),
        per_load(xacts),
        "xacts",
    );
    report::figure(
        &format!("{name}.pg_rollbacks_per_load"),
        per_load(rollbacks),
        "xacts",
    );
    report::figure(
        &format!("{name}.pg_seq_scans_per_load"),
        per_load(seq_scans),
        "scans",
    );
    if let Some((syncs, records)) = wal {
        report::figure(
            &format!("{name}.wal_flushes_per_load"),
            per_load(syncs as f64),
            "fsyncs",
        );
        report::figure(
            &format!("{name}.wal_records_per_load"),
            per_load(records as f64),
            "records",
        );
    }
    report::figure(
        &format!("{name}.cpu_busy"),
        100.0 * machine.busy / machine.total.max(1e-9),
        "% of all cores",
    );
    report::figure(
        &format!("{name}.cpu_host"),
        100.0 * host_cpu / wall / cores,
        "% of all cores",
    );
    report::figure(
        &format!("{name}.cpu_sites"),
        100.0 * bench_cpu / wall / cores,
        "% of all cores",
    );
    report::figure(
        &format!("{name}.cpu_iowait"),
        100.0 * machine.iowait / machine.total.max(1e-9),
        "% of all cores",
    );
    report::figure(
        &format!("{name}.host_cpu_per_load"),
        per_load(host_cpu) * 1e6,
        "us",
    );
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        report::figure(&format!("{name}.sites_failed"), failed as f64, "sites");
    }
    std::io::stdout().flush().ok();
    Ok(Outcome {
        rate,
        p99_ms: samples.percentile(99.0) / 1e3,
        xacts_per_load: per_load(xacts),
    })
}

/// The machine's CPU time from `/proc/stat`, in seconds: all, busy (not idle or iowait), iowait.
#[derive(Debug, Clone, Copy, Default)]
struct MachineCpu {
    total: f64,
    busy: f64,
    iowait: f64,
}

impl MachineCpu {
    fn since(&self, before: &MachineCpu) -> MachineCpu {
        MachineCpu {
            total: self.total - before.total,
            busy: self.busy - before.busy,
            iowait: self.iowait - before.iowait,
        }
    }
}

fn machine_cpu() -> MachineCpu {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return MachineCpu::default();
    };
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse::<f64>().ok())
        .map(|t| t / 100.0)
        .collect();
    let total: f64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0.0);
    let iowait = ticks.get(4).copied().unwrap_or(0.0);
    MachineCpu {
        total,
        busy: total - idle - iowait,
        iowait,
    }
}

/// A load's transaction id as a site makes one: the flow run's random 96-bit id in hex, `#1`
/// (`cardd::flows`). Deterministic here (a SplitMix64 of step, site and load), but spread over
/// the key space like the daemon's, so the host's indexes see what they see in service.
fn txn_id(step: usize, site: usize, k: usize) -> String {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let seed = ((step as u64) << 48) ^ ((site as u64) << 32) ^ k as u64;
    let (a, b) = (mix(seed), mix(seed ^ 0xA5A5_A5A5));
    format!("{a:016x}{:08x}#1", b as u32)
}
