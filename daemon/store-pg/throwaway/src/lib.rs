//! A throw-away PostgreSQL cluster for tests: `cargo xtask test` starts one around the whole
//! suite and exports its URL as [`URL_VAR`]; a test that needs PostgreSQL and finds no such URL
//! starts one of its own through [`shared_url`], so `cargo test -p <crate>` works alone too.
//!
//! **How.** [`Cluster::start`] finds PostgreSQL's binaries (`/usr/lib/postgresql/<version>/bin`,
//! newest first; `cargo xtask setup` installs Debian's `postgresql-15`), creates a directory
//! under the system temporary directory, runs `initdb` there and starts `postgres` on
//! `127.0.0.1` with a free port and its unix socket in that directory, with `fsync=on` and
//! `synchronous_commit=on` (the settings production runs with, so tests see real commit
//! costs), then creates the login role [`ROLE`] (allowed to create databases, so each test can
//! make its own) and the database [`DATABASE`]. PostgreSQL refuses to run as root, and CI runs
//! as root: then the system user [`CLUSTER_USER`] is created (idempotently) and owns the
//! directory, and `initdb` and `postgres` run as that user through `runuser`.
//!
//! **Gone afterwards, whatever happens.** `postgres` runs under a small supervising shell that
//! reads its standard input from the [`Cluster`]'s owner. When the owner drops the cluster,
//! exits, panics or is killed (Ctrl-C included), that pipe closes and the shell stops
//! PostgreSQL (fast shutdown) and deletes the directory. So a test binary may keep its cluster
//! in a `static` ([`shared_url`]) without leaking it.
//!
//! **Crashes.** A test that owns its cluster ([`Cluster::start`], never the shared one) may
//! crash it with [`Cluster::kill`] (SIGKILL to the postmaster; the data directory stays as the
//! crash left it) and bring it back with [`Cluster::restart`] (same directory and port, so crash
//! recovery runs and [`Cluster::url`] is unchanged).
//!
//! **Architecture Invariants.**
//! * Depends on no cardd crate and on no PostgreSQL client: it runs PostgreSQL's own programs.
//! * Every wait is bounded ([`START_WAIT_MS`], [`STOP_WAIT_MS`], [`KILL_WAIT_MS`],
//!   [`PORT_ATTEMPTS_MAX`]).
//! * Nothing outside its own temporary directory is touched, apart from creating
//!   the system user [`CLUSTER_USER`] when running as root.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The environment variable holding the URL of a test database cluster (set by
/// `cargo xtask test` and `cargo xtask pg`).
pub const URL_VAR: &str = "CARDD_TEST_DATABASE_URL";
/// The unprivileged system user that owns the cluster when the tests run as root.
pub const CLUSTER_USER: &str = "cardd-test";
/// The login role tests connect as (it may create databases).
pub const ROLE: &str = "cardd_test";
/// The database created with the cluster.
pub const DATABASE: &str = "cardd_test";
/// The cluster's superuser (reached only through the unix socket in the cluster's directory).
const SUPERUSER: &str = "postgres";
/// How long a starting cluster may take to accept connections.
pub const START_WAIT_MS: u64 = 30_000;
/// How long a stopping cluster may take to shut down and delete its directory.
pub const STOP_WAIT_MS: u64 = 30_000;
/// How long a killed PostgreSQL (the postmaster and every process it started) may take to be
/// gone ([`Cluster::kill`]).
pub const KILL_WAIT_MS: u64 = 10_000;
/// Fresh ports tried when another process takes the chosen one first.
pub const PORT_ATTEMPTS_MAX: u32 = 5;
/// Connections the cluster accepts (tests run in parallel, each with a small pool).
pub const CONNECTIONS_MAX: u32 = 200;
/// Pause between two checks while waiting for the cluster.
const CHECK_EVERY_MS: u64 = 50;
/// Bytes of randomness in the role's password.
const PASSWORD_BYTES: usize = 16;
/// Where Debian installs PostgreSQL's versions.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// Why a cluster could not be started.
#[derive(Debug, thiserror::Error)]
#[error("throw-away PostgreSQL: {0}")]
pub struct Error(String);

fn err(message: impl Into<String>) -> Error {
    Error(message.into())
}

/// The directory of PostgreSQL's server binaries (`initdb`, `postgres`, `psql`): the newest
/// version under `/usr/lib/postgresql`, if any is installed.
pub fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_ROOT)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Whether this process runs as root (PostgreSQL then needs another user).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Creates the system user [`CLUSTER_USER`] unless it exists.
fn ensure_user() -> Result<(), Error> {
    let exists = || {
        Command::new("id")
            .arg("-u")
            .arg(CLUSTER_USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if exists() {
        return Ok(());
    }
    let output = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            CLUSTER_USER,
        ])
        .output()
        .map_err(|e| err(format!("running useradd: {e}")))?;
    // Another test binary may have created it at the same moment.
    if output.status.success() || exists() {
        Ok(())
    } else {
        Err(err(format!(
            "useradd {CLUSTER_USER} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// `program` run as `user` (through `runuser`) or as ourselves.
fn as_user(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Runs `command` to completion; its output becomes the error on failure.
fn run(mut command: Command, what: &str) -> Result<(), Error> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("running {what}: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    Err(err(format!(
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

fn random_hex(bytes: usize) -> Result<String, Error> {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| err(format!("reading /dev/urandom: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A port nobody listens on right now (another process may still take it first: the start is
/// retried on a fresh port).
fn free_port() -> Result<u16, Error> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| err(format!("finding a free port: {e}")))
}

/// A new directory for one cluster, readable only by its owner.
fn make_dir(user: Option<&str>) -> Result<PathBuf, Error> {
    use std::os::unix::fs::PermissionsExt;
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "cardd-pg-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&dir).map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| err(format!("restricting {}: {e}", dir.display())))?;
    if let Some(user) = user {
        let mut chown = Command::new("chown");
        chown.arg(user).arg(&dir);
        if let Err(e) = run(chown, "chown") {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    }
    Ok(dir)
}

/// The supervising shell: starts `postgres`, stops it (fast shutdown) when its standard input
/// closes (or notices when it exits by itself), then writes the end of PostgreSQL's log to its
/// standard error and deletes the cluster's directory. `$1` bin dir, `$2` cluster dir,
/// `$3` port, `$4` most connections.
///
/// A crash that [`Cluster::kill`] causes is announced by the file [`KILLED_MARK`]: then the
/// shell neither cleans up nor exits but says so ([`WAITING_MARK`], which `kill` waits for, so
/// that a quick [`Cluster::restart`] cannot remove the mark before the shell saw it) and waits
/// until `restart` removes the mark (and starts `postgres` again on the same directory and
/// port) or its input closes. The stop is
/// announced by the file `supervisor.stop` before the signal, and each new `postgres` checks it after its pid
/// is written, so a stop racing a restart still stops the new `postgres`.
const SUPERVISOR: &str = r#"exec 3<&0
( cat <&3 >/dev/null; : >"$2/supervisor.stop"; p=$(cat "$2/supervisor.pid" 2>/dev/null); [ -n "$p" ] && kill -INT "$p" 2>/dev/null ) >/dev/null 2>&1 &
exec 3<&-
status=0
while :; do
  "$1/postgres" -D "$2/data" -k "$2" -h 127.0.0.1 -p "$3" -c fsync=on -c synchronous_commit=on -c full_page_writes=on -c max_connections="$4" >>"$2/postgres.log" 2>&1 &
  pid=$!
  echo "$pid" >"$2/supervisor.pid"
  [ -e "$2/supervisor.stop" ] && kill -INT "$pid" 2>/dev/null
  wait "$pid"
  status=$?
  rm -f "$2/supervisor.pid"
  [ -e "$2/supervisor.killed" ] || break
  : >"$2/supervisor.waiting"
  while [ -e "$2/supervisor.killed" ] && [ ! -e "$2/supervisor.stop" ]; do sleep 0.05; done
  rm -f "$2/supervisor.waiting"
  [ -e "$2/supervisor.stop" ] && break
done
tail -n 20 "$2/postgres.log" >&2
rm -rf "$2"
exit $status
"#;
/// The file in the cluster's directory that marks a crash [`Cluster::kill`] caused (see
/// [`SUPERVISOR`]).
const KILLED_MARK: &str = "supervisor.killed";
/// The file in the cluster's directory by which the supervisor says it saw the crash
/// [`Cluster::kill`] caused and waits for [`Cluster::restart`] (see [`SUPERVISOR`]).
const WAITING_MARK: &str = "supervisor.waiting";

/// A running throw-away cluster; stopped and deleted when dropped (or when this process ends).
#[derive(Debug)]
pub struct Cluster {
    supervisor: Option<Child>,
    stdin: Option<ChildStdin>,
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    password: String,
}

impl Cluster {
    /// Creates and starts a cluster with the role [`ROLE`] and the database [`DATABASE`].
    pub fn start() -> Result<Cluster, Error> {
        let bin = bin_dir().ok_or_else(|| {
            err(format!(
                "no PostgreSQL under {DEBIAN_ROOT}; install it with `cargo xtask setup` \
                 (Debian package postgresql-15)"
            ))
        })?;
        let user = if is_root() {
            ensure_user()?;
            Some(CLUSTER_USER)
        } else {
            None
        };
        let mut last = err("no start attempted");
        for _ in 0..PORT_ATTEMPTS_MAX {
            match Cluster::start_once(&bin, user) {
                Ok(cluster) => return Ok(cluster),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn start_once(bin: &Path, user: Option<&str>) -> Result<Cluster, Error> {
        let dir = make_dir(user)?;
        let password = random_hex(PASSWORD_BYTES)?;
        let mut cluster = Cluster {
            supervisor: None,
            stdin: None,
            bin: bin.to_path_buf(),
            dir: dir.clone(),
            port: 0,
            password,
        };
        let mut initdb = as_user(user, &bin.join("initdb"));
        initdb.arg("-D").arg(dir.join("data")).args([
            "-U",
            SUPERUSER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
        ]);
        if let Err(e) = run(initdb, "initdb") {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        cluster.port = free_port()?;
        let mut supervisor = as_user(user, Path::new("/bin/sh"));
        // Its own process group: a Ctrl-C in the terminal ends the owner, whose exit closes
        // the supervisor's input, which then stops PostgreSQL and cleans up.
        supervisor.process_group(0);
        supervisor
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("cardd-pg")
            .arg(bin)
            .arg(&dir)
            .arg(cluster.port.to_string())
            .arg(CONNECTIONS_MAX.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = supervisor
            .spawn()
            .map_err(|e| err(format!("starting postgres: {e}")))?;
        cluster.stdin = child.stdin.take();
        cluster.supervisor = Some(child);
        cluster.wait_ready()?;
        cluster.psql(
            bin,
            &format!(
                "CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{}'",
                cluster.password
            ),
        )?;
        cluster.psql(bin, &format!("CREATE DATABASE {DATABASE} OWNER {ROLE}"))?;
        Ok(cluster)
    }

    /// Waits (bounded) until the cluster accepts connections on its socket.
    fn wait_ready(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_millis(START_WAIT_MS);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .arg("-q")
                .arg("-h")
                .arg(&self.dir)
                .arg("-p")
                .arg(self.port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if let Some(child) = self.supervisor.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut log = String::new();
                    if let Some(mut stderr) = child.stderr.take() {
                        let _ = stderr.read_to_string(&mut log);
                    }
                    self.supervisor = None;
                    return Err(err(format!("postgres exited at start ({status}): {log}")));
                }
            }
            if Instant::now() > deadline {
                return Err(err(format!(
                    "postgres did not accept connections within {START_WAIT_MS} ms (its log: \
                     {}/postgres.log)",
                    self.dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(CHECK_EVERY_MS));
        }
    }

    /// Runs one SQL statement as the superuser through the cluster's socket.
    fn psql(&self, bin: &Path, sql: &str) -> Result<(), Error> {
        let mut psql = Command::new(bin.join("psql"));
        psql.arg("-X")
            .arg("-q")
            .args(["-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", "postgres", "-c", sql]);
        run(psql, "psql")
    }

    /// Kills PostgreSQL as a crash would (SIGKILL to the postmaster named in its
    /// `postmaster.pid`) and waits (bounded by [`KILL_WAIT_MS`]) until the postmaster and every
    /// process it started are gone. The data directory stays as the crash left it, for
    /// [`Cluster::restart`]; dropping or stopping the cluster instead deletes it as usual.
    ///
    /// Only for a cluster the test owns ([`Cluster::start`]), never the shared one.
    pub fn kill(&mut self) -> Result<(), Error> {
        if self.supervisor.is_none() {
            return Err(err("kill: the cluster is stopped; start a new one"));
        }
        let mark = self.dir.join(KILLED_MARK);
        if mark.exists() {
            return Err(err("kill: the cluster is already killed; restart it first"));
        }
        let data = self.dir.join("data");
        let pid_file = data.join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file)
            .map_err(|e| err(format!("kill: reading {}: {e}", pid_file.display())))?;
        let pid: u32 = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| err(format!("kill: no pid in {}", pid_file.display())))?;
        // The mark first: the supervisor must see it when its `postgres` dies.
        File::create(&mark).map_err(|e| err(format!("kill: creating {}: {e}", mark.display())))?;
        let mut kill = Command::new("kill");
        kill.args(["-KILL", &pid.to_string()]);
        if let Err(e) = run(kill, "kill -KILL") {
            let _ = std::fs::remove_file(&mark);
            return Err(e);
        }
        let deadline = Instant::now() + Duration::from_millis(KILL_WAIT_MS);
        let waiting = self.dir.join(WAITING_MARK);
        while is_alive(pid) || !processes_in(&data).is_empty() || !waiting.exists() {
            if let Some(Ok(Some(status))) = self.supervisor.as_mut().map(Child::try_wait) {
                self.supervisor = None;
                return Err(err(format!(
                    "kill: the supervisor exited ({status}) instead of waiting for the restart"
                )));
            }
            if Instant::now() > deadline {
                return Err(err(format!(
                    "kill: PostgreSQL (postmaster {pid}, processes {:?}) still runs or its \
                     supervisor did not notice, {KILL_WAIT_MS} ms after SIGKILL",
                    processes_in(&data)
                )));
            }
            std::thread::sleep(Duration::from_millis(CHECK_EVERY_MS));
        }
        Ok(())
    }

    /// Starts PostgreSQL again after [`Cluster::kill`], on the same data directory and port (it
    /// runs crash recovery), and waits (bounded by [`START_WAIT_MS`]) until it accepts
    /// connections. [`Cluster::url`] is unchanged.
    pub fn restart(&mut self) -> Result<(), Error> {
        let mark = self.dir.join(KILLED_MARK);
        if self.supervisor.is_none() || !mark.exists() {
            return Err(err(
                "restart: only a killed cluster restarts; call kill first",
            ));
        }
        // The supervisor starts `postgres` again once the mark is gone.
        std::fs::remove_file(&mark)
            .map_err(|e| err(format!("restart: removing {}: {e}", mark.display())))?;
        self.wait_ready()
    }

    /// The cluster's log (PostgreSQL's standard output and error, every start of it).
    pub fn log(&self) -> Result<String, Error> {
        let path = self.dir.join("postgres.log");
        std::fs::read_to_string(&path).map_err(|e| err(format!("reading {}: {e}", path.display())))
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of [`DATABASE`] as [`ROLE`], over TCP on 127.0.0.1.
    pub fn url(&self) -> String {
        format!(
            "postgres://{ROLE}:{}@127.0.0.1:{}/{DATABASE}",
            self.password, self.port
        )
    }

    /// Stops PostgreSQL and deletes the cluster's directory and log, waiting (bounded).
    pub fn stop(mut self) -> Result<(), Error> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), Error> {
        // Closing the supervisor's input is the stop signal.
        drop(self.stdin.take());
        let Some(mut child) = self.supervisor.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_millis(STOP_WAIT_MS);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(CHECK_EVERY_MS));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(err(format!(
                        "postgres in {} did not stop within {STOP_WAIT_MS} ms",
                        self.dir.display()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Whether process `pid` runs (a zombie, dead and not yet reaped, does not).
fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

/// The processes whose working directory is `dir` (PostgreSQL's processes work in their data
/// directory). Processes this one may not inspect are not seen.
fn processes_in(dir: &Path) -> Vec<u32> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir))
        .collect()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("{e}");
        }
    }
}

/// The URL of a cluster for this test process: [`URL_VAR`] when set, otherwise a cluster this
/// process starts once and shares between its tests (stopped when the process ends).
pub fn shared_url() -> Result<String, Error> {
    if let Ok(url) = std::env::var(URL_VAR) {
        if !url.trim().is_empty() {
            return Ok(url);
        }
    }
    static SHARED: Mutex<Option<Cluster>> = Mutex::new(None);
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(cluster) = shared.as_ref() {
        return Ok(cluster.url());
    }
    let cluster = Cluster::start()?;
    let url = cluster.url();
    *shared = Some(cluster);
    Ok(url)
}
