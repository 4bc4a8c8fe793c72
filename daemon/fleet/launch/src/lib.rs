//! A whole demo fleet from the built binaries: a throw-away PostgreSQL (`cardd-pg-throwaway`),
//! one issuer host (`cardd-host`) and its site daemons (`cardd` with a `[fleet]` section,
//! simulated readers and the 模拟读卡器 panel), each in its own directory under one temporary
//! directory. `cargo xtask fleet` runs [`Fleet::launch`] on fixed ports ([`Ports::from_base`]);
//! the fleet tests (`tests/fleet`) run the same launch on free ports ([`Ports::free`]) and build
//! their own variants (a host inside a network namespace) from [`prepare`].
//!
//! What [`prepare`] sets up, in order: the fleet CA and the host's certificate
//! (`cardd_fleet::FleetCa`, valid [`CERT_DAYS`] days, naming [`HOST_NAME`] and the host's
//! address), the host's configuration (`[keys] source = "demo"`: the simulated cards are
//! personalised with the demo keys; `[backoffice]` when asked), `cardd-host migrate`,
//! `seed-demo` (the demo vehicles, [`PLATE`] among them, and groups), the fleet's operators at
//! the host (`cardd-host operators add`, password on standard input), and per site a
//! certificate, its enrolment (`cardd-host sites enrol`), its TLS files copied into its own
//! configuration directory as an installer would, a city one-card of its own
//! ([`city_card_number`], [`CITY_START_FEN`]) and its `cardd.toml`.
//!
//! **Invariants.**
//! * Depends on no crate that links libpcsclite (`cardd-pcsc`, `cardd-drivers`, `cardd`):
//!   xtask depends on this crate and builds before the system packages are installed. The
//!   daemons are run as programs, never linked.
//! * Every child runs in its own process group, so a Ctrl-C at the terminal reaches only the
//!   launcher, which stops the fleet in order: the sites, then the host ([`Proc::stop`]:
//!   SIGTERM, then SIGKILL after [`STOP_WAIT_MS`]), then PostgreSQL, then the temporary
//!   directory. A child dropped without [`Proc::stop`] is killed (SIGKILL) and reaped.
//! * Every wait is bounded ([`START_WAIT_MS`], [`CALL_TIMEOUT_MS`], [`STOP_WAIT_MS`],
//!   [`FLOW_POLLS_MAX`]); at most [`SITES_MAX`] sites.
//! * The demo passwords ([`DEMO_OPERATORS`]) are public values, like `cardd --demo`'s: a
//!   demo fleet is for one machine's loopback, never for real money.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The host's certificate name (the sites' `[fleet] host_name`).
pub const HOST_NAME: &str = "host.fleet.test";
/// The demo vehicle whose card the sites' simulated ETC readers hold (`seed-demo` adds it).
pub const PLATE: &str = "陕A12345";
/// Validity of the fleet's certificates, in days.
pub const CERT_DAYS: u32 = 30;
/// How long a process may take to listen after it starts, in milliseconds.
pub const START_WAIT_MS: u64 = 60_000;
/// Longest wait for one JSON-RPC answer, in milliseconds.
pub const CALL_TIMEOUT_MS: u64 = 60_000;
/// Longest wait for a TCP connection to a site, in milliseconds.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How long a process may take to end after SIGTERM before it is killed, in milliseconds.
pub const STOP_WAIT_MS: u64 = 15_000;
/// Most polls of a flow's events while following it to its end (each waits up to 2 s).
pub const FLOW_POLLS_MAX: u32 = 300;
/// The balance of each site's city one-card at the start, in fen.
pub const CITY_START_FEN: u32 = 5_000;
/// Most sites one fleet starts.
pub const SITES_MAX: usize = 16;
/// The sites `cargo xtask fleet` starts.
pub const DEMO_SITES: [&str; 2] = ["S01", "S02"];
/// The first of `cargo xtask fleet`'s ports ([`Ports::from_base`]): the host 7443 (as in
/// README.md's walkthrough), the back office 7444, the sites 7445, 7446, …; clear of the
/// 7420 that `cardd --demo` listens on.
pub const DEFAULT_BASE_PORT: u16 = 7443;
/// Lines of a child's log shown when it dies unexpectedly.
pub const LOG_TAIL_LINES_MAX: usize = 40;
/// Pause between two checks while waiting for a process.
const POLL_MS: u64 = 50;

/// An operator created at the host (`cardd-host operators add`); it logs in at any site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operator {
    pub user: &'static str,
    /// teller, supervisor, auditor, admin, kiosk or group.
    pub role: &'static str,
    pub password: &'static str,
    /// The group of a group operator (role `group`).
    pub group: Option<&'static str>,
    /// What the role is, in the tellers' words.
    pub title: &'static str,
}

/// The demo fleet's operators, with the same public demo passwords as `cardd --demo`.
pub const DEMO_OPERATORS: &[Operator] = &[
    Operator {
        user: "admin",
        role: "admin",
        password: "admin123",
        group: None,
        title: "管理员 administrator",
    },
    Operator {
        user: "teller",
        role: "teller",
        password: "teller123",
        group: None,
        title: "柜员 teller",
    },
    Operator {
        user: "supervisor",
        role: "supervisor",
        password: "super123",
        group: None,
        title: "主管 supervisor",
    },
    Operator {
        user: "auditor",
        role: "auditor",
        password: "audit123",
        group: None,
        title: "审核员 auditor",
    },
    Operator {
        user: "kiosk",
        role: "kiosk",
        password: "kiosk123",
        group: None,
        title: "自助终端 self-service kiosk",
    },
    Operator {
        user: "group1",
        role: "group",
        password: "group123",
        group: Some("G001"),
        title: "集团操作员 group operator of G001",
    },
];

/// What went wrong starting, driving or stopping a fleet.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not built: run `cargo build -p cardd -p cardd-host` first", path.display())]
    NotBuilt { path: PathBuf },
    #[error("{command} failed ({status}): {output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error(
        "port {port} ({what}) is taken by another program: stop that program, or choose other \
         ports (`cargo xtask fleet --base-port N`)"
    )]
    PortTaken { port: u16, what: String },
    #[error("ports from {base} for {sites} sites run past 65535: choose a lower --base-port")]
    PortsOverflow { base: u16, sites: usize },
    #[error("{sites} sites: at most {SITES_MAX}")]
    TooManySites { sites: usize },
    #[error("{name} did not listen on {addr} within {START_WAIT_MS} ms; its log:\n{log}")]
    NotListening {
        name: String,
        addr: SocketAddr,
        log: String,
    },
    #[error("{name} ended at start ({status}); its log:\n{log}")]
    EndedAtStart {
        name: String,
        status: String,
        log: String,
    },
    #[error("{name} did not end within {STOP_WAIT_MS} ms of SIGTERM and was killed")]
    DidNotStop { name: String },
    #[error("the fleet's certificates: {0}")]
    Ca(#[from] cardd_fleet::ca::CaError),
    #[error("site id: {0}")]
    SiteId(#[from] cardd_fleet::identity::SiteIdError),
    #[error("the simulated city one-card: {0}")]
    CityCard(String),
    #[error("the throw-away PostgreSQL: {0}")]
    Postgres(#[from] cardd_pg_throwaway::Error),
    #[error("{site} {method}: {detail}")]
    Rpc {
        site: String,
        method: String,
        detail: String,
    },
    #[error("{0}")]
    Unexpected(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// `bin_dir/name`, which must exist (a built binary of the workspace).
pub fn binary(bin_dir: &Path, name: &str) -> Result<PathBuf, Error> {
    let path = bin_dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::NotBuilt { path })
    }
}

/// A free TCP port on loopback (bound and released: a race in principle, unused in practice).
pub fn free_port() -> Result<u16, Error> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io("finding a free port on 127.0.0.1"))
}

/// Runs a command to completion, with `stdin` on its standard input: its standard output, or
/// an error with everything it printed.
pub fn run(mut command: Command, stdin: Option<&str>) -> Result<String, Error> {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io(format!("starting {shown}")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(io(format!("writing to {shown}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(io(format!("waiting for {shown}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(Error::Command {
            command: shown,
            status: out.status.to_string(),
            output: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(stdout)
}

/// A child process with its output in a log file; killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `command` in a process group of its own (a Ctrl-C at the terminal does not reach
    /// it), standard output and error to `log`.
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> Result<Proc, Error> {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(&log).map_err(io(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io(format!("opening {}", log.display())))?;
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io(format!("starting {name}")))?;
        Ok(Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
        })
    }

    /// What the process is (`cardd-host`, `cardd S01`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id while it has not been reaped.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What the process logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last [`LOG_TAIL_LINES_MAX`] lines of its log.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES_MAX)..].join("\n")
    }

    /// SIGKILL, then reap: what a power cut or `kill -9` leaves.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process has ended (reaping it if so).
    pub fn exited(&mut self) -> bool {
        self.ended().is_some()
    }

    /// How the process ended, if it has (reaping it); `None` while it runs.
    pub fn ended(&mut self) -> Option<String> {
        match &mut self.child {
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                Ok(None) => None,
                Err(e) => Some(format!("unknown ({e})")),
            },
            None => Some("stopped".into()),
        }
    }

    /// SIGTERM, then waits (bounded by [`STOP_WAIT_MS`]) for the process to end; killed
    /// (SIGKILL) and an error if it does not. How it ended, when it had ended already.
    pub fn stop(&mut self) -> Result<Option<ExitStatus>, Error> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Ok(Some(status));
        }
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_millis(STOP_WAIT_MS);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(Some(status)),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(POLL_MS));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::DidNotStop {
                        name: self.name.clone(),
                    });
                }
            }
        }
    }

    /// Waits until `addr` accepts TCP connections; an error with the log when the process ends
    /// first or [`START_WAIT_MS`] pass.
    fn wait_listening(&mut self, addr: SocketAddr) -> Result<(), Error> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(START_WAIT_MS) {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.ended() {
                return Err(Error::EndedAtStart {
                    name: self.name.clone(),
                    status,
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
        Err(Error::NotListening {
            name: self.name.clone(),
            addr,
            log: self.log(),
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The issuer host: its configuration and, while it runs, its process.
#[derive(Debug)]
pub struct Host {
    pub dir: PathBuf,
    pub config: PathBuf,
    /// Where it serves the sites (mutual TLS).
    pub addr: SocketAddr,
    /// Where its back office's pages are served (`[backoffice] listen`), when configured.
    pub backoffice: Option<SocketAddr>,
    pub proc: Option<Proc>,
    bin_dir: PathBuf,
    /// A program and arguments that `cardd-host serve` runs under (`ip netns exec NAME`);
    /// empty: run directly.
    launcher: Vec<OsString>,
}

impl Host {
    /// The `cardd-host` binary.
    pub fn binary(&self) -> Result<PathBuf, Error> {
        binary(&self.bin_dir, "cardd-host")
    }

    /// `cardd-host --config …`, to add a command to.
    pub fn command(&self) -> Result<Command, Error> {
        let mut command = Command::new(self.binary()?);
        command.arg("--config").arg(&self.config);
        Ok(command)
    }

    /// `cardd-host --config … <args>`.
    pub fn cli(&self, args: &[&str]) -> Result<String, Error> {
        self.cli_with_input(args, None)
    }

    /// `cardd-host --config … <args>` with `stdin` on its standard input (a password).
    pub fn cli_with_input(&self, args: &[&str], stdin: Option<&str>) -> Result<String, Error> {
        let mut command = self.command()?;
        command.args(args);
        run(command, stdin)
    }

    /// Starts `cardd-host serve` and waits until it listens.
    pub fn start(&mut self) -> Result<(), Error> {
        self.start_with(&[])
    }

    /// Starts `cardd-host serve` with extra environment variables (a crash point:
    /// `CARDD_CRASH_AT`) and waits until it listens (under its launcher, which execs it: the
    /// child is the host itself).
    pub fn start_with(&mut self, env: &[(&str, &str)]) -> Result<(), Error> {
        let mut command = match self.launcher.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(self.binary()?);
                command
            }
            None => Command::new(self.binary()?),
        };
        command.arg("--config").arg(&self.config).arg("serve");
        command.envs(env.iter().copied());
        let mut proc = Proc::spawn("cardd-host", command, self.dir.join("host.log"))?;
        proc.wait_listening(self.addr)?;
        self.proc = Some(proc);
        Ok(())
    }

    /// SIGTERM, waiting for the end ([`Proc::stop`]).
    pub fn stop(&mut self) -> Result<(), Error> {
        match self.proc.take() {
            Some(mut proc) => proc.stop().map(drop),
            None => Ok(()),
        }
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill9();
        }
    }

    /// Whether the host process has ended.
    pub fn exited(&mut self) -> bool {
        self.proc.as_mut().is_none_or(Proc::exited)
    }

    /// The back office's address as a URL, when it has one.
    pub fn backoffice_url(&self) -> Option<String> {
        self.backoffice.map(|a| format!("http://{a}/"))
    }

    /// A recharge paid at the host for [`PLATE`]: the new record's id.
    pub fn recharge(&self, amount_yuan: &str) -> Result<String, Error> {
        self.recharge_for(PLATE, 0, amount_yuan)
    }

    /// A recharge paid at the host for the vehicle `plate` of colour `colour`: the new
    /// record's id.
    pub fn recharge_for(
        &self,
        plate: &str,
        colour: u16,
        amount_yuan: &str,
    ) -> Result<String, Error> {
        let colour = colour.to_string();
        let out = self.cli(&[
            "recharge",
            "--plate",
            plate,
            "--colour",
            &colour,
            "--amount",
            amount_yuan,
        ])?;
        out.split('\t')
            .next()
            .map(str::to_owned)
            .filter(|id| id.starts_with('R'))
            .ok_or_else(|| Error::Unexpected(format!("no record id in {out:?}")))
    }

    /// The status (未圈存, 已圈存, …) of the record `record_id` of [`PLATE`] as the host's
    /// command line lists it (`cardd-host records`); `None` when it does not list it.
    pub fn record_status(&self, record_id: &str) -> Result<Option<String>, Error> {
        let out = self.cli(&["records", "--plate", PLATE])?;
        Ok(out
            .lines()
            .map(|line| line.split('\t').collect::<Vec<_>>())
            .find(|fields| fields.first() == Some(&record_id))
            .and_then(|fields| fields.get(3).map(|s| (*s).to_owned())))
    }
}

/// A site daemon: its directories and, while it runs, its process.
#[derive(Debug)]
pub struct Site {
    pub id: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub addr: SocketAddr,
    pub proc: Option<Proc>,
    /// The teller's session token ([`Site::start`], [`Site::log_in`]).
    pub teller: String,
    /// The administrator's session token.
    pub admin: String,
    bin_dir: PathBuf,
    operators: &'static [Operator],
}

impl Site {
    /// The teller console's URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Starts `cardd --config …` and waits until it listens.
    pub fn spawn(&mut self) -> Result<(), Error> {
        let mut command = Command::new(binary(&self.bin_dir, "cardd")?);
        command.arg("--config").arg(&self.config);
        let mut proc = Proc::spawn(
            &format!("cardd {}", self.id),
            command,
            self.dir.join("cardd.log"),
        )?;
        proc.wait_listening(self.addr)?;
        self.proc = Some(proc);
        Ok(())
    }

    /// Starts it ([`Site::spawn`]) and logs the teller and the administrator in.
    pub fn start(&mut self) -> Result<(), Error> {
        self.spawn()?;
        self.log_in()
    }

    /// Logs the fleet's teller and administrator in ([`Site::teller`], [`Site::admin`]).
    pub fn log_in(&mut self) -> Result<(), Error> {
        self.teller = self.login_as("teller")?;
        self.admin = self.login_as("admin")?;
        Ok(())
    }

    /// The fleet's operator of `role`.
    pub fn operator(&self, role: &str) -> Result<Operator, Error> {
        self.operators
            .iter()
            .find(|o| o.role == role)
            .copied()
            .ok_or_else(|| Error::Unexpected(format!("the fleet has no operator of role {role}")))
    }

    /// The fleet's operator of `role` logged in: the token.
    pub fn login_as(&self, role: &str) -> Result<String, Error> {
        let operator = self.operator(role)?;
        self.login(operator.user, operator.password)
    }

    /// `auth.login`: the session's token.
    pub fn login(&self, user: &str, password: &str) -> Result<String, Error> {
        let r = self.ok(
            "auth.login",
            json!({"username": user, "password": password}),
            None,
        )?;
        self.token(&r, "auth.login")
    }

    fn token(&self, reply: &Value, method: &str) -> Result<String, Error> {
        reply["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.rpc_error(method, format!("no token in {reply}")))
    }

    fn rpc_error(&self, method: &str, detail: impl Into<String>) -> Error {
        Error::Rpc {
            site: self.id.clone(),
            method: method.to_owned(),
            detail: detail.into(),
        }
    }

    /// One JSON-RPC call over HTTP: the whole reply.
    pub fn call(&self, method: &str, params: Value, token: Option<&str>) -> Result<Value, Error> {
        let body =
            json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
        let what = format!("{} {method}", self.id);
        let mut stream =
            TcpStream::connect_timeout(&self.addr, Duration::from_millis(CONNECT_TIMEOUT_MS))
                .map_err(io(what.clone()))?;
        stream
            .set_read_timeout(Some(Duration::from_millis(CALL_TIMEOUT_MS)))
            .map_err(io(what.clone()))?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{auth}Connection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .map_err(io(what.clone()))?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).map_err(io(what))?;
        let json = reply
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .ok_or_else(|| self.rpc_error(method, format!("no HTTP body in {reply:?}")))?;
        serde_json::from_str(json).map_err(|e| self.rpc_error(method, format!("{e}: {json:?}")))
    }

    /// A call that must succeed: its result.
    pub fn ok(&self, method: &str, params: Value, token: Option<&str>) -> Result<Value, Error> {
        let reply = self.call(method, params, token)?;
        match reply.get("result") {
            Some(r) => Ok(r.clone()),
            None => Err(self.rpc_error(method, format!("failed: {reply}"))),
        }
    }

    /// Runs `etc.load` for `record_id` on the site's ETC reader as the teller, confirming every
    /// question; the finished run (`state`, `result` or `failure`).
    pub fn load(&self, record_id: &str, key: &str) -> Result<Value, Error> {
        self.run_flow(
            &self.teller,
            json!({"flow": "etc.load", "params": {"record_id": record_id},
                   "idempotency_key": key, "reader_id": "sim:etc"}),
        )
    }

    /// Runs the self-service `etc.kiosk_load` on the ETC reader as the kiosk account (`token`):
    /// picks `record_id` when asked to choose, confirms; the finished run.
    pub fn kiosk_load(&self, token: &str, record_id: &str, key: &str) -> Result<Value, Error> {
        self.run_flow_answering(
            token,
            json!({"flow": "etc.kiosk_load", "params": {},
                   "idempotency_key": key, "reader_id": "sim:etc"}),
            |prompt| {
                if prompt["kind"] == "choose" {
                    if let Some(choice) = prompt["choices"].as_array().and_then(|choices| {
                        choices
                            .iter()
                            .find(|c| c.as_str().is_some_and(|c| c.contains(record_id)))
                    }) {
                        return choice.clone();
                    }
                }
                json!(true)
            },
        )
    }

    /// The fleet's group operator logged in (集团充值登录): the token.
    pub fn group_login(&self) -> Result<String, Error> {
        let operator = self.operator("group")?;
        let r = self.ok(
            "group.login",
            json!({"group_id": operator.group.unwrap_or_default(),
                   "username": operator.user, "password": operator.password}),
            None,
        )?;
        self.token(&r, "group.login")
    }

    /// Runs `group.recharge` of `amount_yuan` on the site's city reader as the group operator
    /// (`token`), confirming every question; the finished run.
    pub fn group_recharge(
        &self,
        token: &str,
        amount_yuan: &str,
        key: &str,
    ) -> Result<Value, Error> {
        self.run_flow(
            token,
            json!({"flow": "group.recharge", "params": {"amount": amount_yuan},
                   "idempotency_key": key, "reader_id": "sim:city"}),
        )
    }

    /// Starts a flow (`start`: the `flows.start` params) as `token` and follows it to its end,
    /// confirming every question; the finished run (`state`, `result` or `failure`).
    pub fn run_flow(&self, token: &str, start: Value) -> Result<Value, Error> {
        self.run_flow_answering(token, start, |_| json!(true))
    }

    /// Starts a flow as `token` and follows it to its end, answering each question with
    /// `answer(prompt)`; the finished run.
    pub fn run_flow_answering(
        &self,
        token: &str,
        start: Value,
        mut answer: impl FnMut(&Value) -> Value,
    ) -> Result<Value, Error> {
        let run = self.ok("flows.start", start, Some(token))?;
        let run_id = run["run_id"]
            .as_str()
            .ok_or_else(|| self.rpc_error("flows.start", format!("no run_id in {run}")))?
            .to_owned();
        let (mut since, mut answered) = (0u64, 0u64);
        for _ in 0..FLOW_POLLS_MAX {
            let polled = self.ok(
                "flows.events",
                json!({"run_id": run_id, "since": since, "wait_ms": 2000}),
                Some(token),
            )?;
            since = polled["next_since"].as_u64().unwrap_or(since);
            let prompt_id = polled["prompt"]["prompt_id"].as_u64().unwrap_or(0);
            if polled["state"] == "waiting" && prompt_id > answered {
                answered = prompt_id;
                self.ok(
                    "flows.answer",
                    json!({"run_id": run_id, "prompt_id": prompt_id,
                           "answer": answer(&polled["prompt"])}),
                    Some(token),
                )?;
            }
            if !matches!(polled["state"].as_str(), Some("running") | Some("waiting")) {
                return self.ok("flows.get", json!({ "run_id": run_id }), Some(token));
            }
        }
        Err(self.rpc_error(
            "flows.events",
            format!("run {run_id} did not finish within {FLOW_POLLS_MAX} polls"),
        ))
    }

    /// The balance of the card in `reader_id` as the teller reads it (`card.summary`), in fen.
    pub fn card_balance_fen(&self, reader_id: &str) -> Result<i64, Error> {
        let summary = self.ok(
            "card.summary",
            json!({ "reader_id": reader_id }),
            Some(&self.teller),
        )?;
        summary["balance_fen"]
            .as_i64()
            .ok_or_else(|| self.rpc_error("card.summary", format!("no balance in {summary}")))
    }

    /// The balance of the card in the ETC reader as the 模拟读卡器 panel shows it, in fen
    /// (`None`: no card there).
    pub fn balance_fen(&self) -> Result<Option<i64>, Error> {
        let view = self.ok("sim.readers", json!({}), Some(&self.admin))?;
        let reader = view["readers"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["reader_id"] == "sim:etc"))
            .cloned()
            .ok_or_else(|| self.rpc_error("sim.readers", "no sim:etc"))?;
        Ok(reader["card"]["balance"].as_str().map(|yuan| {
            let (y, f) = yuan.split_once('.').unwrap_or((yuan, "0"));
            y.parse::<i64>().unwrap_or(0) * 100 + f.parse::<i64>().unwrap_or(0)
        }))
    }

    /// A record as the site reads it (from the host).
    pub fn record(&self, record_id: &str) -> Result<Value, Error> {
        self.ok(
            "etc.records.get",
            json!({ "record_id": record_id }),
            Some(&self.teller),
        )
    }

    /// `/health`.
    pub fn health(&self) -> Result<Value, Error> {
        let what = format!("{} /health", self.id);
        let mut stream =
            TcpStream::connect_timeout(&self.addr, Duration::from_millis(CONNECT_TIMEOUT_MS))
                .map_err(io(what.clone()))?;
        stream
            .set_read_timeout(Some(Duration::from_millis(CALL_TIMEOUT_MS)))
            .map_err(io(what.clone()))?;
        write!(
            stream,
            "GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .map_err(io(what.clone()))?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).map_err(io(what))?;
        let body = reply.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        serde_json::from_str(body).map_err(|e| self.rpc_error("/health", format!("{e}: {body:?}")))
    }

    /// SIGTERM, waiting for the end ([`Proc::stop`]).
    pub fn stop(&mut self) -> Result<(), Error> {
        match self.proc.take() {
            Some(mut proc) => proc.stop().map(drop),
            None => Ok(()),
        }
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill9();
        }
    }
}

/// The ports of a fleet on loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports {
    /// The host's port for the sites.
    pub host: u16,
    /// The back office's (`[backoffice] listen`); none: not configured.
    pub backoffice: Option<u16>,
    /// One per site, in order.
    pub sites: Vec<u16>,
}

impl Ports {
    /// Consecutive ports from `base`: the host, the back office, then each site.
    pub fn from_base(base: u16, sites: usize) -> Result<Ports, Error> {
        if sites > SITES_MAX {
            return Err(Error::TooManySites { sites });
        }
        let at = |offset: usize| {
            u16::try_from(offset)
                .ok()
                .and_then(|o| base.checked_add(o))
                .filter(|p| *p != 0)
                .ok_or(Error::PortsOverflow { base, sites })
        };
        Ok(Ports {
            host: at(0)?,
            backoffice: Some(at(1)?),
            sites: (0..sites).map(|n| at(2 + n)).collect::<Result<_, _>>()?,
        })
    }

    /// Free ports of the system's choice, the back office's included.
    pub fn free(sites: usize) -> Result<Ports, Error> {
        if sites > SITES_MAX {
            return Err(Error::TooManySites { sites });
        }
        Ok(Ports {
            host: free_port()?,
            backoffice: Some(free_port()?),
            sites: (0..sites).map(|_| free_port()).collect::<Result<_, _>>()?,
        })
    }

    /// Every port with what it is for.
    pub fn named(&self, site_ids: &[&str]) -> Vec<(u16, String)> {
        let mut out = vec![(self.host, "cardd-host, for the sites".to_owned())];
        if let Some(port) = self.backoffice {
            out.push((port, "the back office".to_owned()));
        }
        for (n, port) in self.sites.iter().enumerate() {
            let id = site_ids.get(n).copied().unwrap_or("a site");
            out.push((*port, format!("site {id}")));
        }
        out
    }

    /// An error naming the first port another program listens on (checked by binding it on
    /// 127.0.0.1 and releasing it).
    pub fn check_free(&self, site_ids: &[&str]) -> Result<(), Error> {
        for (port, what) in self.named(site_ids) {
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                return Err(Error::PortTaken { port, what });
            }
        }
        Ok(())
    }
}

/// What [`prepare`] sets up.
#[derive(Debug)]
pub struct Setup<'a> {
    /// The directory everything is written under (the CA, the host's and each site's).
    pub root: &'a Path,
    /// Where the built `cardd` and `cardd-host` are.
    pub bin_dir: &'a Path,
    /// The host's PostgreSQL.
    pub database_url: &'a str,
    /// The sites' ids (`S01`, …), as many as `ports.sites`.
    pub sites: &'a [&'a str],
    /// The host's address: loopback, or a network namespace's (its certificate names it).
    pub host_ip: IpAddr,
    /// What `cardd-host serve` runs under ([`Host::start_with`]); empty: directly.
    pub host_launcher: Vec<OsString>,
    pub ports: &'a Ports,
    /// The operators created at the host.
    pub operators: &'static [Operator],
}

/// The CA and certificates, the host's configuration and database (migrated, seeded, its
/// operators, the sites enrolled) and each site's directories and configuration; nothing
/// started.
pub fn prepare(setup: &Setup<'_>) -> Result<(Host, Vec<Site>), Error> {
    if setup.sites.len() > SITES_MAX || setup.sites.len() != setup.ports.sites.len() {
        return Err(Error::TooManySites {
            sites: setup.sites.len(),
        });
    }
    let ca_dir = setup.root.join("ca");
    cardd_fleet::FleetCa::init(&ca_dir, CERT_DAYS)?;
    let ca = cardd_fleet::FleetCa::open(&ca_dir)?;
    ca.issue_host(HOST_NAME, &[setup.host_ip.to_string()], CERT_DAYS, false)?;
    let host_tls = cardd_fleet::ca::host_files(&ca_dir, HOST_NAME);
    let host_dir = setup.root.join("host");
    std::fs::create_dir_all(&host_dir).map_err(io(format!("creating {}", host_dir.display())))?;
    let addr = SocketAddr::new(setup.host_ip, setup.ports.host);
    let backoffice = setup
        .ports
        .backoffice
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
    let host_config = host_dir.join("cardd-host.toml");
    let mut text = format!(
        "listen = \"{addr}\"\ndatabase_url = \"{}\"\n\n[tls]\nca_cert = {:?}\ncert = {:?}\nkey = {:?}\n\n[keys]\nsource = \"demo\"\n",
        setup.database_url, host_tls.ca_cert, host_tls.cert, host_tls.key
    );
    if let Some(listen) = backoffice {
        text.push_str(&format!("\n[backoffice]\nlisten = \"{listen}\"\n"));
    }
    write(&host_config, &text)?;
    let host = Host {
        dir: host_dir,
        config: host_config,
        addr,
        backoffice,
        proc: None,
        bin_dir: setup.bin_dir.to_owned(),
        launcher: setup.host_launcher.clone(),
    };
    host.cli(&["migrate"])?;
    host.cli(&["seed-demo"])?;
    for operator in setup.operators {
        let mut args = vec!["operators", "add", "--role", operator.role];
        if let Some(group) = operator.group {
            args.extend(["--group", group]);
        }
        args.push(operator.user);
        host.cli_with_input(&args, Some(&format!("{}\n", operator.password)))?;
    }
    let mut sites = Vec::new();
    for (n, (id, port)) in setup.sites.iter().zip(&setup.ports.sites).enumerate() {
        let site_id: cardd_fleet::SiteId = id.parse()?;
        ca.issue_site(&site_id, CERT_DAYS, false)?;
        let files = cardd_fleet::ca::site_files(&ca_dir, &site_id);
        host.cli(&[
            "sites",
            "enrol",
            id,
            "--cert",
            &files.cert.display().to_string(),
        ])?;
        sites.push(site(setup, id, n, *port, &files, addr)?);
    }
    Ok((host, sites))
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(io(format!("writing {}", path.display())))
}

/// A site's directories and configuration; its TLS files copied into its configuration
/// directory, as an installer would.
fn site(
    setup: &Setup<'_>,
    id: &str,
    n: usize,
    port: u16,
    files: &cardd_fleet::TlsFiles,
    host: SocketAddr,
) -> Result<Site, Error> {
    let dir = setup.root.join(id);
    let etc = dir.join("etc");
    let data = dir.join("data");
    for d in [&etc, &data] {
        std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
    }
    for (from, to) in [
        (&files.ca_cert, "ca.crt"),
        (&files.cert, "site.crt"),
        (&files.key, "site.key"),
    ] {
        std::fs::copy(from, etc.join(to)).map_err(io(format!("copying {}", from.display())))?;
    }
    {
        use std::os::unix::fs::PermissionsExt;
        let key = etc.join("site.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(io(format!("protecting {}", key.display())))?;
    }
    let city_card = etc.join("city-card.json");
    let card: cardd_sim::SimCard = cardd_sim::CityCard::issue(
        &cardd_sim::CityCardSpec {
            app_serial: city_card_number(n),
            balance_fen: CITY_START_FEN,
            ..cardd_sim::demo::demo_city_spec()
        },
        &cardd_sim::demo::demo_masters(),
    )
    .map_err(|e| Error::CityCard(e.to_string()))?
    .into();
    let json = card.to_json().map_err(|e| Error::CityCard(e.to_string()))?;
    write(&city_card, &json)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let config = etc.join("cardd.toml");
    write(
        &config,
        &format!(
            "[server]\nlisten = \"{addr}\"\nsim_panel = true\n\n[data]\ndir = {data:?}\n\n\
             [fleet]\nhost_addr = \"{host}\"\nhost_name = \"{HOST_NAME}\"\n\
             ca_cert = {:?}\ncert = {:?}\nkey = {:?}\ncall_timeout_ms = 3000\n\n\
             [[readers]]\ndriver = \"sim\"\n[readers.options]\n\
             [[readers.options.readers]]\nid = \"etc\"\nkind = \"contact\"\ncard = \"demo-etc\"\n\
             [[readers.options.readers]]\nid = \"city\"\nkind = \"contactless\"\n\
             card = {{ json_file = {city_card:?} }}\n",
            etc.join("ca.crt"),
            etc.join("site.crt"),
            etc.join("site.key"),
        ),
    )?;
    Ok(Site {
        id: id.to_owned(),
        dir,
        config,
        addr,
        proc: None,
        teller: String::new(),
        admin: String::new(),
        bin_dir: setup.bin_dir.to_owned(),
        operators: setup.operators,
    })
}

/// The number of the city one-card in the `n`-th site's `sim:city` (from 0).
pub fn city_card_number(n: usize) -> String {
    format!("6101000000000001{:04}", n + 1)
}

/// The demo fleet, started: the sites, the host, PostgreSQL and the temporary directory they
/// live in. Dropped, everything is killed and removed; [`Fleet::stop`] stops it in order.
#[derive(Debug)]
pub struct Fleet {
    // Declared in the order a drop kills them: the sites, the host, PostgreSQL, the files.
    pub sites: Vec<Site>,
    pub host: Host,
    pub pg: cardd_pg_throwaway::Cluster,
    pub root: tempfile::TempDir,
    /// How long [`Fleet::launch`] took.
    pub started_in: Duration,
}

impl Fleet {
    /// Starts the demo fleet: the ports checked free, a throw-away PostgreSQL, everything
    /// [`prepare`] sets up for [`DEMO_SITES`] with [`DEMO_OPERATORS`] and a back office, the
    /// host, then the sites (not logged in). `bin_dir`: where `cardd` and `cardd-host` are
    /// built.
    pub fn launch(bin_dir: &Path, ports: &Ports) -> Result<Fleet, Error> {
        let start = Instant::now();
        binary(bin_dir, "cardd")?;
        binary(bin_dir, "cardd-host")?;
        ports.check_free(&DEMO_SITES)?;
        let root = tempfile::Builder::new()
            .prefix("cardd-fleet-")
            .tempdir()
            .map_err(io("creating the fleet's temporary directory"))?;
        let pg = cardd_pg_throwaway::Cluster::start()?;
        let database_url = pg.url();
        let (mut host, mut sites) = prepare(&Setup {
            root: root.path(),
            bin_dir,
            database_url: &database_url,
            sites: &DEMO_SITES,
            host_ip: IpAddr::from([127, 0, 0, 1]),
            host_launcher: Vec::new(),
            ports,
            operators: DEMO_OPERATORS,
        })?;
        host.start()?;
        for site in &mut sites {
            site.spawn()?;
        }
        Ok(Fleet {
            sites,
            host,
            pg,
            root,
            started_in: start.elapsed(),
        })
    }

    /// The first child that has ended, with how it ended and the end of its log; `None` while
    /// all run.
    pub fn ended_child(&mut self) -> Option<String> {
        let procs = self
            .sites
            .iter_mut()
            .filter_map(|s| s.proc.as_mut())
            .chain(self.host.proc.as_mut());
        for proc in procs {
            if let Some(status) = proc.ended() {
                return Some(format!(
                    "{} ended ({status}); the end of its log:\n{}",
                    proc.name(),
                    proc.log_tail()
                ));
            }
        }
        None
    }

    /// Stops everything in order: each site, then the host (SIGTERM, waiting), then
    /// PostgreSQL, then the temporary directory. Everything is stopped even when a step fails;
    /// the first failure is the error.
    pub fn stop(self) -> Result<(), Error> {
        let Fleet {
            mut sites,
            mut host,
            pg,
            root,
            ..
        } = self;
        let mut first: Option<Error> = None;
        let mut keep = |result: Result<(), Error>| {
            if let Err(e) = result {
                first.get_or_insert(e);
            }
        };
        for site in &mut sites {
            keep(site.stop());
        }
        keep(host.stop());
        keep(pg.stop().map_err(Error::from));
        keep(
            root.close()
                .map_err(io("removing the fleet's temporary directory")),
        );
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_from_a_base_are_consecutive_and_bounded() {
        let ports = Ports::from_base(DEFAULT_BASE_PORT, 2).expect("ports");
        assert_eq!(ports.host, 7443);
        assert_eq!(ports.backoffice, Some(7444));
        assert_eq!(ports.sites, vec![7445, 7446]);
        assert!(!ports.named(&DEMO_SITES).iter().any(|(p, _)| *p == 7420));
        assert!(matches!(
            Ports::from_base(65_534, 2),
            Err(Error::PortsOverflow { .. })
        ));
        assert!(matches!(
            Ports::from_base(7000, SITES_MAX + 1),
            Err(Error::TooManySites { .. })
        ));
    }

    #[test]
    fn a_taken_port_is_named() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("address").port();
        let ports = Ports {
            host: free_port().expect("free"),
            backoffice: None,
            sites: vec![port],
        };
        let err = ports.check_free(&["S07"]).expect_err("taken");
        assert!(matches!(err, Error::PortTaken { port: p, .. } if p == port));
        assert!(err.to_string().contains("site S07"), "{err}");
    }

    #[test]
    fn the_demo_operators_cover_every_role_once() {
        let mut roles: Vec<&str> = DEMO_OPERATORS.iter().map(|o| o.role).collect();
        roles.sort_unstable();
        roles.dedup();
        assert_eq!(roles.len(), DEMO_OPERATORS.len());
        assert_eq!(roles.len(), 6);
        assert!(DEMO_OPERATORS
            .iter()
            .all(|o| (o.role == "group") == o.group.is_some()));
    }

    #[test]
    fn stop_ends_a_process_with_sigterm_and_a_missing_binary_is_named() {
        let dir = tempfile::tempdir().expect("dir");
        let mut sleep = Command::new("sleep");
        sleep.arg("600");
        let mut proc = Proc::spawn("sleep", sleep, dir.path().join("sleep.log")).expect("spawn");
        assert!(proc.ended().is_none());
        let status = proc.stop().expect("stopped").expect("a status");
        assert!(!status.success(), "ended by SIGTERM: {status}");
        assert!(proc.exited());
        let missing = binary(dir.path(), "cardd").expect_err("not built");
        assert!(missing.to_string().contains("cargo build"), "{missing}");
    }
}
