//! A fleet of real processes: a throw-away PostgreSQL, one `cardd-host` and two `cardd` sites
//! (simulated readers, no keys), all started from the built binaries and driven the way
//! operators and tellers drive them: the host's command line, the sites' JSON-RPC.
//!
//! [`Fleet`] sets it up: the fleet CA and certificates (`cardd_fleet`), the host's
//! configuration (demo keys: the simulated cards are personalised with them), its database
//! migrated, sites S01 and S02 (or the sites a test names) enrolled, the demo vehicles and
//! groups seeded, and the fleet's operators created at the host (`cardd-host operators add`): a
//! teller, an administrator and an operator of group G001, who log in at any site (the sites
//! keep no operators); each site gets its own data and configuration directories and simulated
//! readers:
//! the demo ETC card in `sim:etc` and a city one-card of its own in `sim:city`
//! ([`city_card_number`], 50 yuan).
//!
//! [`Fleet::create_with`] can run the host inside a network namespace ([`FleetOptions`]): the
//! sites then reach it only over the namespace's veth pair, so cutting the pair
//! ([`Netns::cut`]) is a real partition, and the host reaches PostgreSQL (on 127.0.0.1 of the
//! root namespace only) through a [`Relay`] on the root end of the pair. Everything is still
//! driven from the root namespace: the host's command line uses the relay's address too, which
//! is local to the root namespace and so stays reachable while the pair is cut.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::netns::Netns;

/// The host's certificate name.
pub const HOST_NAME: &str = "host.fleet.test";
/// The demo vehicle whose card the simulated ETC readers hold.
pub const PLATE: &str = "陕A12345";
/// Validity of the test certificates, in days.
const DAYS: u32 = 30;
/// How long a process may take to answer after it starts.
const START_WAIT: Duration = Duration::from_secs(60);
/// Longest wait for one JSON-RPC answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The group operator each site has (group G001), and the password.
pub const GROUP_OPERATOR: (&str, &str) = ("group1", "group-pass-1");
/// The balance of each site's city one-card at the start, in fen.
pub const CITY_START_FEN: u32 = 5_000;

/// The number of the city one-card in the `n`-th site's `sim:city` (from 0).
pub fn city_card_number(n: usize) -> String {
    format!("6101000000000001{:04}", n + 1)
}

/// The directory cargo put the binaries in (this test binary lives in its `deps/`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_owned()
}

/// A built binary of the workspace.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build -p cardd -p cardd-host` first (`cargo xtask test` does)",
        path.display()
    );
    path
}

/// A free TCP port on loopback (bound and released: a test-only race, in practice unused).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process, killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut command: Command, log: PathBuf) -> Result<Proc> {
        let out = std::fs::File::create(&log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
        })
    }

    /// SIGKILL, then reap: what a power cut or `kill -9` leaves.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process has ended (a crash point killed it), reaping it if so.
    pub fn exited(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(Some(_))),
            None => true,
        }
    }

    /// What the process logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs a command to completion; its stdout, or an error with its output.
pub fn run(mut command: Command, stdin: Option<&str>) -> Result<String> {
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{command:?} failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// Waits until `addr` accepts TCP connections.
fn wait_listening(addr: SocketAddr, proc: &Proc) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < START_WAIT {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{} did not listen on {addr}: {}", proc.name, proc.log())
}

/// The issuer host: its configuration and, while it runs, its process (inside `netns` when
/// it has one).
pub struct Host {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub addr: SocketAddr,
    // Declared before `netns`: the process is killed before its namespace is deleted.
    pub proc: Option<Proc>,
    /// The namespace the host runs in ([`FleetOptions::host_netns`]).
    pub netns: Option<Netns>,
}

impl Host {
    /// `cardd-host --config … <args>`.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        self.cli_with_input(args, None)
    }

    /// `cardd-host --config … <args>` with `stdin` on its standard input (a password).
    pub fn cli_with_input(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut command = Command::new(binary("cardd-host"));
        command.arg("--config").arg(&self.config).args(args);
        run(command, stdin)
    }

    /// Starts `cardd-host serve` (inside its namespace when it has one: `ip netns exec` execs
    /// it, so the child is the host itself) and waits until it listens.
    pub fn start(&mut self) -> Result<()> {
        self.start_with(&[])
    }

    /// Starts `cardd-host serve` with extra environment variables (a crash point:
    /// `CARDD_CRASH_AT`) and waits until it listens.
    pub fn start_with(&mut self, env: &[(&str, &str)]) -> Result<()> {
        let mut command = match &self.netns {
            Some(netns) => netns.command(binary("cardd-host")),
            None => Command::new(binary("cardd-host")),
        };
        command.arg("--config").arg(&self.config).arg("serve");
        command.envs(env.iter().copied());
        let proc = Proc::spawn("cardd-host", command, self.dir.join("host.log"))?;
        wait_listening(self.addr, &proc)?;
        self.proc = Some(proc);
        Ok(())
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

    /// The host's namespace ([`FleetOptions::host_netns`]), to cut it off and restore it.
    pub fn netns(&mut self) -> Result<&mut Netns> {
        self.netns
            .as_mut()
            .context("the host does not run in a network namespace")
    }

    /// A recharge paid at the host for [`PLATE`]: the new record's id.
    pub fn recharge(&self, amount_yuan: &str) -> Result<String> {
        self.recharge_for(PLATE, 0, amount_yuan)
    }

    /// A recharge paid at the host for the vehicle `plate` of colour `colour`: the new
    /// record's id.
    pub fn recharge_for(&self, plate: &str, colour: u16, amount_yuan: &str) -> Result<String> {
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
            .with_context(|| format!("no record id in {out:?}"))
    }
}

/// A site daemon: its directories and, while it runs, its process.
pub struct Site {
    pub id: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub addr: SocketAddr,
    pub proc: Option<Proc>,
    pub teller: String,
    pub admin: String,
}

impl Site {
    /// Starts `cardd --config …` and logs the teller and the administrator in.
    pub fn start(&mut self) -> Result<()> {
        let mut command = Command::new(binary("cardd"));
        command.arg("--config").arg(&self.config);
        let proc = Proc::spawn(
            &format!("cardd {}", self.id),
            command,
            self.dir.join("cardd.log"),
        )?;
        wait_listening(self.addr, &proc)?;
        self.proc = Some(proc);
        self.teller = self.login("teller", "teller-pass-1")?;
        self.admin = self.login("admin", "admin-pass-1")?;
        Ok(())
    }

    /// `auth.login`: the session's token.
    pub fn login(&self, user: &str, password: &str) -> Result<String> {
        let r = self.ok(
            "auth.login",
            json!({"username": user, "password": password}),
            None,
        )?;
        r["token"].as_str().map(str::to_owned).context("no token")
    }

    /// One JSON-RPC call over HTTP: the whole reply.
    pub fn call(&self, method: &str, params: Value, token: Option<&str>) -> Result<Value> {
        let body =
            json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(CALL_TIMEOUT))?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{auth}Connection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        let json = reply
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .with_context(|| format!("{method}: no HTTP body in {reply:?}"))?;
        serde_json::from_str(json).with_context(|| format!("{method}: {json:?}"))
    }

    /// A call that must succeed: its result.
    pub fn ok(&self, method: &str, params: Value, token: Option<&str>) -> Result<Value> {
        let reply = self.call(method, params, token)?;
        match reply.get("result") {
            Some(r) => Ok(r.clone()),
            None => bail!("{} {method} failed: {reply}", self.id),
        }
    }

    /// Runs `etc.load` for `record_id` on the site's ETC reader, confirming every question;
    /// the finished run (`state`, `result` or `failure`).
    pub fn load(&self, record_id: &str, key: &str) -> Result<Value> {
        self.run_flow(
            &self.teller,
            json!({"flow": "etc.load", "params": {"record_id": record_id},
                   "idempotency_key": key, "reader_id": "sim:etc"}),
        )
    }

    /// The group operator of G001 logged in (集团充值登录): the token.
    pub fn group_login(&self) -> Result<String> {
        let (user, password) = GROUP_OPERATOR;
        let r = self.ok(
            "group.login",
            json!({"group_id": "G001", "username": user, "password": password}),
            None,
        )?;
        r["token"].as_str().map(str::to_owned).context("no token")
    }

    /// Runs `group.recharge` of `amount_yuan` on the site's city reader as the group operator
    /// (`token`), confirming every question; the finished run.
    pub fn group_recharge(&self, token: &str, amount_yuan: &str, key: &str) -> Result<Value> {
        self.run_flow(
            token,
            json!({"flow": "group.recharge", "params": {"amount": amount_yuan},
                   "idempotency_key": key, "reader_id": "sim:city"}),
        )
    }

    /// Starts a flow (`start`: the `flows.start` params) as `token` and follows it to its end,
    /// confirming every question; the finished run (`state`, `result` or `failure`).
    fn run_flow(&self, token: &str, start: Value) -> Result<Value> {
        let run = self.ok("flows.start", start, Some(token))?;
        let run_id = run["run_id"].as_str().context("run_id")?.to_owned();
        let (mut since, mut answered) = (0u64, 0u64);
        for _ in 0..300 {
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
                    json!({"run_id": run_id, "prompt_id": prompt_id, "answer": true}),
                    Some(token),
                )?;
            }
            if !matches!(polled["state"].as_str(), Some("running") | Some("waiting")) {
                return self.ok("flows.get", json!({ "run_id": run_id }), Some(token));
            }
        }
        bail!("{}: run {run_id} did not finish", self.id)
    }

    /// The balance of the card in `reader_id` as the teller reads it (`card.summary`), in fen.
    pub fn card_balance_fen(&self, reader_id: &str) -> Result<i64> {
        let summary = self.ok(
            "card.summary",
            json!({ "reader_id": reader_id }),
            Some(&self.teller),
        )?;
        summary["balance_fen"]
            .as_i64()
            .with_context(|| format!("no balance in {summary}"))
    }

    /// The balance of the card in the ETC reader, in fen (`None`: no card there).
    pub fn balance_fen(&self) -> Result<Option<i64>> {
        let view = self.ok("sim.readers", json!({}), Some(&self.admin))?;
        let reader = view["readers"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["reader_id"] == "sim:etc"))
            .cloned()
            .context("no sim:etc")?;
        Ok(reader["card"]["balance"].as_str().map(|yuan| {
            let (y, f) = yuan.split_once('.').unwrap_or((yuan, "0"));
            y.parse::<i64>().unwrap_or(0) * 100 + f.parse::<i64>().unwrap_or(0)
        }))
    }

    /// A record as the site reads it (from the host).
    pub fn record(&self, record_id: &str) -> Result<Value> {
        self.ok(
            "etc.records.get",
            json!({ "record_id": record_id }),
            Some(&self.teller),
        )
    }

    /// `/health`.
    pub fn health(&self) -> Result<Value> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(CALL_TIMEOUT))?;
        write!(
            stream,
            "GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        let body = reply.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        Ok(serde_json::from_str(body)?)
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill9();
        }
    }
}

/// How a [`Fleet`] is set up beyond the default ([`Fleet::create`]: sites S01 and S02,
/// everything on loopback).
#[derive(Debug, Default)]
pub struct FleetOptions {
    /// The sites' ids (none: S01 and S02).
    pub sites: Vec<String>,
    /// Run the host inside this namespace: it listens on the namespace's inner address (its
    /// certificate names that address), the sites reach it over the veth pair, and it reaches
    /// PostgreSQL through a [`Relay`] on the pair's root end.
    pub host_netns: Option<Netns>,
}

/// PostgreSQL, the host and its sites, set up (the host not yet started).
pub struct Fleet {
    pub root: tempfile::TempDir,
    pub pg: cardd_pg_throwaway::Cluster,
    pub host: Host,
    pub sites: Vec<Site>,
    /// The host's way to PostgreSQL when it runs in a namespace.
    pub relay: Option<Relay>,
}

impl Fleet {
    /// Sites S01 and S02, everything on loopback of the root namespace.
    pub fn create() -> Result<Fleet> {
        Fleet::create_with(FleetOptions::default())
    }

    /// PostgreSQL, the host and the sites `ids`.
    pub fn with_sites(ids: &[&str]) -> Result<Fleet> {
        Fleet::create_with(FleetOptions {
            sites: ids.iter().map(|s| (*s).to_owned()).collect(),
            ..FleetOptions::default()
        })
    }

    /// A fleet set up as `options` say.
    pub fn create_with(options: FleetOptions) -> Result<Fleet> {
        let ids: Vec<String> = if options.sites.is_empty() {
            vec!["S01".into(), "S02".into()]
        } else {
            options.sites.clone()
        };
        let root = tempfile::tempdir()?;
        let pg = cardd_pg_throwaway::Cluster::start().map_err(|e| anyhow::anyhow!("{e}"))?;
        let (host_ip, relay, database_url) = match &options.host_netns {
            None => (IpAddr::from([127, 0, 0, 1]), None, pg.url()),
            Some(netns) => {
                let relay = Relay::start(
                    IpAddr::V4(netns.host_addr()),
                    SocketAddr::from(([127, 0, 0, 1], pg.port())),
                )?;
                let direct = format!("@127.0.0.1:{}/", pg.port());
                let url = pg.url();
                anyhow::ensure!(url.contains(&direct), "expected {direct:?} in {url:?}");
                let url = url.replace(&direct, &format!("@{}/", relay.addr()));
                (IpAddr::V4(netns.inner_addr()), Some(relay), url)
            }
        };
        let ca_dir = root.path().join("ca");
        cardd_fleet::FleetCa::init(&ca_dir, DAYS)?;
        let ca = cardd_fleet::FleetCa::open(&ca_dir)?;
        ca.issue_host(HOST_NAME, &[host_ip.to_string()], DAYS, false)?;
        let host_tls = cardd_fleet::ca::host_files(&ca_dir, HOST_NAME);
        let host_dir = root.path().join("host");
        std::fs::create_dir_all(&host_dir)?;
        let addr = SocketAddr::new(host_ip, free_port());
        let host_config = host_dir.join("cardd-host.toml");
        std::fs::write(
            &host_config,
            format!(
                "listen = \"{addr}\"\ndatabase_url = \"{database_url}\"\n\n[tls]\nca_cert = {:?}\ncert = {:?}\nkey = {:?}\n\n[keys]\nsource = \"demo\"\n",
                host_tls.ca_cert,
                host_tls.cert,
                host_tls.key
            ),
        )?;
        let host = Host {
            dir: host_dir,
            config: host_config,
            addr,
            proc: None,
            netns: options.host_netns,
        };
        host.cli(&["migrate"])?;
        host.cli(&["seed-demo"])?;
        let (group_user, group_password) = GROUP_OPERATOR;
        for (user, role, password, group) in [
            ("teller", "teller", "teller-pass-1", None),
            ("admin", "admin", "admin-pass-1", None),
            (group_user, "group", group_password, Some("G001")),
        ] {
            let mut args = vec!["operators", "add", "--role", role];
            if let Some(group) = group {
                args.extend(["--group", group]);
            }
            args.push(user);
            host.cli_with_input(&args, Some(&format!("{password}\n")))?;
        }
        let mut sites = Vec::new();
        for (n, id) in ids.iter().map(String::as_str).enumerate() {
            let site_id: cardd_fleet::SiteId = id.parse()?;
            ca.issue_site(&site_id, DAYS, false)?;
            let files = cardd_fleet::ca::site_files(&ca_dir, &site_id);
            host.cli(&[
                "sites",
                "enrol",
                id,
                "--cert",
                &files.cert.display().to_string(),
            ])?;
            sites.push(Fleet::site(root.path(), id, n, &files, addr)?);
        }
        Ok(Fleet {
            root,
            pg,
            host,
            sites,
            relay,
        })
    }

    /// A site's directories and configuration (its operators are the host's); its TLS files copied into its
    /// configuration directory, as an installer would.
    fn site(
        root: &Path,
        id: &str,
        n: usize,
        files: &cardd_fleet::TlsFiles,
        host: SocketAddr,
    ) -> Result<Site> {
        let dir = root.join(id);
        let etc = dir.join("etc");
        let data = dir.join("data");
        std::fs::create_dir_all(&etc)?;
        std::fs::create_dir_all(&data)?;
        for (from, to) in [
            (&files.ca_cert, "ca.crt"),
            (&files.cert, "site.crt"),
            (&files.key, "site.key"),
        ] {
            std::fs::copy(from, etc.join(to))?;
        }
        set_owner_only(&etc.join("site.key"))?;
        let city_card = etc.join("city-card.json");
        let card: cardd_sim::SimCard = cardd_sim::CityCard::issue(
            &cardd_sim::CityCardSpec {
                app_serial: city_card_number(n),
                balance_fen: CITY_START_FEN,
                ..cardd_sim::demo::demo_city_spec()
            },
            &cardd_sim::demo::demo_masters(),
        )?
        .into();
        std::fs::write(&city_card, card.to_json()?)?;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let config = etc.join("cardd.toml");
        std::fs::write(
            &config,
            format!(
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
        })
    }
}

/// Most connections a [`Relay`] carries at once; one more is closed as soon as it is accepted.
pub const RELAY_CONNECTIONS_MAX: usize = 32;
/// Longest wait for the relay's own connection to its target, in milliseconds.
pub const RELAY_CONNECT_MS: u64 = 5_000;
/// Pause between two looks for a new connection, in milliseconds.
const RELAY_POLL_MS: u64 = 20;

/// A TCP relay thread: every connection accepted on its address is carried, both ways, to one
/// target (a thread per direction); the relay stops accepting and shuts every carried
/// connection down when dropped. What lets a process inside a namespace reach a server that
/// listens on 127.0.0.1 of the root namespace only.
pub struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Both streams of every carried connection, to shut them down on drop.
    open: Arc<Mutex<HashMap<u64, [TcpStream; 2]>>>,
    /// Connections accepted and not yet ended (at most [`RELAY_CONNECTIONS_MAX`]).
    carried: Arc<AtomicUsize>,
    acceptor: Option<JoinHandle<()>>,
}

impl Relay {
    /// Listens on `listen` (a port of the system's choice) and carries to `target`.
    pub fn start(listen: IpAddr, target: SocketAddr) -> Result<Relay> {
        let listener = TcpListener::bind((listen, 0))
            .with_context(|| format!("relay: cannot listen on {listen}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<HashMap<u64, [TcpStream; 2]>>> = Arc::default();
        let carried = Arc::new(AtomicUsize::new(0));
        let acceptor = {
            let (stop, open, carried) = (stop.clone(), open.clone(), carried.clone());
            std::thread::Builder::new()
                .name(format!("relay {addr}"))
                .spawn(move || {
                    static NEXT: AtomicU64 = AtomicU64::new(0);
                    while !stop.load(Ordering::Relaxed) {
                        let client = match listener.accept() {
                            Ok((client, _)) => client,
                            Err(_) => {
                                std::thread::sleep(Duration::from_millis(RELAY_POLL_MS));
                                continue;
                            }
                        };
                        if carried.load(Ordering::Relaxed) >= RELAY_CONNECTIONS_MAX {
                            drop(client);
                            continue;
                        }
                        carried.fetch_add(1, Ordering::Relaxed);
                        let id = NEXT.fetch_add(1, Ordering::Relaxed);
                        let (open, done) = (open.clone(), carried.clone());
                        let spawned = std::thread::Builder::new()
                            .name(format!("relay {id}"))
                            .spawn(move || {
                                let _ = carry(id, client, target, &open);
                                if let Ok(mut open) = open.lock() {
                                    open.remove(&id);
                                }
                                done.fetch_sub(1, Ordering::Relaxed);
                            });
                        if spawned.is_err() {
                            carried.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                })?
        };
        Ok(Relay {
            addr,
            stop,
            open,
            carried,
            acceptor: Some(acceptor),
        })
    }

    /// Where the relay listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Carries one accepted connection to `target` until both directions end.
fn carry(
    id: u64,
    client: TcpStream,
    target: SocketAddr,
    open: &Mutex<HashMap<u64, [TcpStream; 2]>>,
) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    let server = TcpStream::connect_timeout(&target, Duration::from_millis(RELAY_CONNECT_MS))?;
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    if let Ok(mut open) = open.lock() {
        open.insert(id, [client.try_clone()?, server.try_clone()?]);
    }
    let (mut up_from, mut up_to) = (client.try_clone()?, server.try_clone()?);
    let up = std::thread::Builder::new()
        .name(format!("relay {id} up"))
        .spawn(move || pipe(&mut up_from, &mut up_to))?;
    let (mut down_from, mut down_to) = (server, client);
    pipe(&mut down_from, &mut down_to);
    let _ = up.join();
    Ok(())
}

/// Copies `from` to `to` until `from` ends; then passes the end on (an error ends both ways).
fn pipe(from: &mut TcpStream, to: &mut TcpStream) {
    match std::io::copy(from, to) {
        Ok(_) => {
            let _ = to.shutdown(Shutdown::Write);
        }
        Err(_) => {
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        if let Ok(open) = self.open.lock() {
            for stream in open.values().flatten() {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

#[cfg(unix)]
fn set_owner_only(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

#[cfg(not(unix))]
fn set_owner_only(_path: &Path) -> Result<()> {
    Ok(())
}

/// Waits until `check` holds, polling; fails with `what` after `limit`.
pub fn eventually(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if check()? {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("{what}: not within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback: every connection gets back what it sends, then its end.
    fn echo_server() -> SocketAddr {
        let server = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = server.local_addr().expect("address");
        std::thread::spawn(move || {
            for stream in server.incoming() {
                let Ok(mut stream) = stream else { break };
                std::thread::spawn(move || {
                    if let Ok(mut from) = stream.try_clone() {
                        let _ = std::io::copy(&mut from, &mut stream);
                    }
                });
            }
        });
        addr
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream
    }

    fn echoes(stream: &mut TcpStream, text: &[u8]) -> bool {
        let mut back = vec![0; text.len()];
        stream.write_all(text).is_ok() && stream.read_exact(&mut back).is_ok() && back == text
    }

    /// Whether the peer has ended the connection (end of stream or reset, not a timeout).
    fn ended(stream: &mut TcpStream) -> bool {
        let mut byte = [0; 1];
        match stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }

    #[test]
    fn a_relay_carries_both_ways_bounds_its_connections_and_ends_them_when_dropped() {
        let relay = Relay::start(IpAddr::from([127, 0, 0, 1]), echo_server()).expect("relay");

        // Both ways, and an end passed on.
        let mut one = connect(relay.addr());
        assert!(echoes(&mut one, b"ping"));
        one.shutdown(Shutdown::Write).expect("half close");
        assert!(ended(&mut one), "the end comes back through the relay");
        drop(one);

        // At most RELAY_CONNECTIONS_MAX at once (the ended one is gone by now).
        eventually(
            Duration::from_secs(5),
            "the ended connection released",
            || Ok(relay.carried.load(Ordering::Relaxed) == 0),
        )
        .expect("released");
        let mut carried: Vec<TcpStream> = (0..RELAY_CONNECTIONS_MAX)
            .map(|_| connect(relay.addr()))
            .collect();
        for (i, stream) in carried.iter_mut().enumerate() {
            assert!(echoes(stream, format!("n{i}").as_bytes()), "connection {i}");
        }
        let mut extra = connect(relay.addr());
        assert!(ended(&mut extra), "one more than the bound is closed");

        // Dropped: every carried connection ends.
        drop(relay);
        for (i, stream) in carried.iter_mut().enumerate() {
            assert!(ended(stream), "connection {i} ended with the relay");
        }
    }
}
