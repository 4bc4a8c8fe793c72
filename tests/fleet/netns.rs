//! Network namespaces for fleet tests: a [`Netns`] is a namespace joined to the root namespace by
//! one veth pair on a private /30, so a test can run a real process (a site daemon, the host)
//! inside it ([`Netns::command`]) and partition it from the root namespace ([`Netns::cut`],
//! [`Netns::restore`]).
//!
//! **Invariants.**
//! * Only what a [`Netns`] creates is touched: its namespace (`cardd-<tag>-<pid>-<n>`), its veth
//!   pair (`cdn<slot>h` in the root namespace, `cdn<slot>p` inside) and its /30 in
//!   `10.213.0.0/16`. No other interface, route or firewall rule changes.
//! * The veth pair is created with its peer already inside the namespace (one `ip link add`),
//!   so a crash leaves at most a namespace behind; [`Netns::create`] deletes leftover
//!   namespaces of this naming whose process is dead, which also removes their veth pairs.
//! * [`Drop`] deletes the namespace and the root end of the veth pair (the peer goes with it);
//!   it kills nothing: processes started through [`Netns::command`] are their starter's.
//! * **How a partition is made.** [`Netns::cut`] puts a `blackhole` qdisc (built into the kernel
//!   with traffic control, set by `tc`, part of iproute2 like `ip`) on both ends of the veth
//!   pair: every packet either way is dropped silently, as on a cut cable, while link state,
//!   addresses and routes stay as they are. Setting a link down instead would remove the
//!   connected route, so the root namespace would send packets for the inner address to its
//!   default route, out of the machine; nft or iptables rules would need user space that is
//!   not always installed. [`Netns::restore`] deletes the two qdiscs.
//! * Needs root and iproute2 (`ip`, `tc`): without them [`Netns::create`] fails with
//!   [`Unavailable`], which a test turns into a skip ([`create_or_skip`]).

use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Every namespace a [`Netns`] creates starts with this.
pub const NAME_PREFIX: &str = "cardd-";
/// Longest tag in a namespace name (longer tags are cut).
pub const TAG_LEN_MAX: usize = 16;
/// Longest interface name Linux accepts (IFNAMSIZ less the terminating zero).
pub const IFNAME_LEN_MAX: usize = 15;
/// The /30 subnets of `10.213.0.0/16`, one per [`Netns`].
const SLOTS: u32 = 1 << 14;
/// Slots tried before [`Netns::create`] gives up (taken by another instance or overlapping a
/// route of the machine).
pub const SLOT_ATTEMPTS_MAX: u32 = 64;
/// How long one `ip` or `tc` command may take.
pub const COMMAND_WAIT_MS: u64 = 10_000;
/// Pause between two checks of a running command.
const CHECK_EVERY_MS: u64 = 10;

/// Why namespaces cannot be used here at all (not root, iproute2 missing): a test skips.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "network namespaces unavailable: {}", self.0)
    }
}

impl std::error::Error for Unavailable {}

/// A namespace joined to the root namespace by a veth pair; deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
    host_if: String,
    inner_if: String,
    host_addr: Ipv4Addr,
    inner_addr: Ipv4Addr,
    cut: bool,
}

/// [`Netns::create`], or `None` (after saying why on standard error) when namespaces are
/// [`Unavailable`] here; any other failure is an error.
pub fn create_or_skip(tag: &str) -> Result<Option<Netns>> {
    match Netns::create(tag) {
        Ok(ns) => Ok(Some(ns)),
        Err(e) => match e.downcast_ref::<Unavailable>() {
            Some(why) => {
                eprintln!("skipped: {why}");
                Ok(None)
            }
            None => Err(e),
        },
    }
}

impl Netns {
    /// Creates a namespace `cardd-<tag>-<pid>-<n>` with a veth pair on a /30 of its own
    /// (`.1` in the root namespace, `.2` inside), both ends and the inner loopback up.
    pub fn create(tag: &str) -> Result<Netns> {
        check_available()?;
        clean_leftovers()?;
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag: String = tag
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(TAG_LEN_MAX)
            .collect();
        let name = format!("{NAME_PREFIX}{tag}-{pid}-{n}");
        ip(&["netns", "add", &name])?;
        let mut ns = Netns {
            name,
            host_if: String::new(),
            inner_if: String::new(),
            host_addr: Ipv4Addr::UNSPECIFIED,
            inner_addr: Ipv4Addr::UNSPECIFIED,
            cut: false,
        };
        // From here on, dropping `ns` on an error deletes what exists.
        let routes = ip_output(&["-4", "-o", "route", "show"])?;
        let first = pid
            .wrapping_mul(2_654_435_761)
            .wrapping_add(n.wrapping_mul(97))
            % SLOTS;
        let mut last = String::from("no slot tried");
        for attempt in 0..SLOT_ATTEMPTS_MAX {
            let slot = (first + attempt) % SLOTS;
            let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + slot * 4;
            if overlaps_route(&routes, base) {
                last = format!("slot {slot} overlaps a route of this machine");
                continue;
            }
            let host_if = format!("cdn{slot}h");
            let inner_if = format!("cdn{slot}p");
            // Fails when another instance (in any process) holds the slot.
            match ip(&[
                "link", "add", &host_if, "type", "veth", "peer", "name", &inner_if, "netns",
                &ns.name,
            ]) {
                Ok(()) => {
                    ns.host_if = host_if;
                    ns.inner_if = inner_if;
                    ns.host_addr = Ipv4Addr::from(base + 1);
                    ns.inner_addr = Ipv4Addr::from(base + 2);
                    break;
                }
                Err(e) => last = format!("{e:#}"),
            }
        }
        if ns.host_if.is_empty() {
            bail!("no free veth slot after {SLOT_ATTEMPTS_MAX} attempts (last: {last})");
        }
        debug_assert!(ns.host_if.len() <= IFNAME_LEN_MAX && ns.inner_if.len() <= IFNAME_LEN_MAX);
        let host_cidr = format!("{}/30", ns.host_addr);
        let inner_cidr = format!("{}/30", ns.inner_addr);
        ip(&["addr", "add", &host_cidr, "dev", &ns.host_if])?;
        ip(&["link", "set", &ns.host_if, "up"])?;
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &inner_cidr,
            "dev",
            &ns.inner_if,
        ])?;
        ip(&["-n", &ns.name, "link", "set", &ns.inner_if, "up"])?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (`cardd-<tag>-<pid>-<n>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The root namespace's end of the veth pair.
    pub fn host_if(&self) -> &str {
        &self.host_if
    }

    /// The namespace's end of the veth pair.
    pub fn inner_if(&self) -> &str {
        &self.inner_if
    }

    /// The address of the root namespace's end (what a process inside reaches the root by).
    pub fn host_addr(&self) -> Ipv4Addr {
        self.host_addr
    }

    /// The address inside the namespace (what the root namespace reaches a process inside by).
    pub fn inner_addr(&self) -> Ipv4Addr {
        self.inner_addr
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`); add
    /// its arguments, environment and pipes as usual. Whoever spawns it owns the process.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Partitions the namespace from the root namespace: every packet on the veth pair, either
    /// way, is dropped silently (connections time out; nothing is refused or reset).
    pub fn cut(&mut self) -> Result<()> {
        tc(&[
            "qdisc",
            "replace",
            "dev",
            &self.host_if,
            "root",
            "blackhole",
        ])?;
        self.cut = true;
        tc(&[
            "-n",
            &self.name,
            "qdisc",
            "replace",
            "dev",
            &self.inner_if,
            "root",
            "blackhole",
        ])
    }

    /// Ends a partition made by [`Netns::cut`] (nothing to do when there is none).
    pub fn restore(&mut self) -> Result<()> {
        if !self.cut {
            return Ok(());
        }
        tc(&["qdisc", "del", "dev", &self.host_if, "root"])?;
        tc(&[
            "-n",
            &self.name,
            "qdisc",
            "del",
            "dev",
            &self.inner_if,
            "root",
        ])?;
        self.cut = false;
        Ok(())
    }

    /// Whether the namespace is partitioned ([`Netns::cut`]).
    pub fn is_cut(&self) -> bool {
        self.cut
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // The root end first: deleting it removes the peer at once, even when a process
        // started inside still keeps the namespace alive.
        if !self.host_if.is_empty() {
            if let Err(e) = ip(&["link", "del", &self.host_if]) {
                eprintln!("deleting veth {}: {e:#}", self.host_if);
            }
        }
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("deleting namespace {}: {e:#}", self.name);
        }
    }
}

/// Fails with [`Unavailable`] unless this process is root and iproute2 (`ip`, `tc`) runs.
fn check_available() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("");
    if euid != "0" {
        return Err(Unavailable(format!(
            "creating network namespaces needs root (effective uid {euid:?}); run the fleet \
             tests as root"
        ))
        .into());
    }
    for program in ["ip", "tc"] {
        let runs = Command::new(program)
            .arg("-V")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !runs {
            return Err(Unavailable(format!(
                "`{program}` does not run; install iproute2 (Debian package iproute2)"
            ))
            .into());
        }
    }
    Ok(())
}

/// Deletes namespaces named `cardd-<tag>-<pid>-<n>` whose process is dead (left by a crashed
/// run) and their veth pairs. The veth pair is deleted by its root end, because a process
/// still running inside (a daemon the crashed run started) keeps the namespace, and with it
/// the pair, alive after its name is gone; such processes are named on standard error, not
/// killed.
fn clean_leftovers() -> Result<()> {
    for name in leftover_namespaces(&ip_output(&["netns", "list"])?) {
        // Another process may clean it at the same moment: every step may fail.
        let links = ip_output(&["-n", &name, "-o", "link", "show"]).unwrap_or_default();
        for inner_if in veth_peers(&links) {
            if let Some(slot) = inner_if.strip_suffix('p') {
                let _ = ip(&["link", "del", &format!("{slot}h")]);
            }
        }
        let pids = ip_output(&["netns", "pids", &name]).unwrap_or_default();
        let pids: Vec<&str> = pids.split_whitespace().collect();
        if !pids.is_empty() {
            eprintln!(
                "leftover namespace {name}: processes {pids:?} still run in it (now cut off); \
                 stop them if they are from a crashed test run"
            );
        }
        let _ = ip(&["netns", "del", &name]);
    }
    Ok(())
}

/// The veth ends named like a [`Netns`]'s (`cdn<slot>p`) in `ip -o link show` output.
fn veth_peers(links: &str) -> Vec<&str> {
    links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name))
        .filter(|name| {
            name.strip_prefix("cdn")
                .and_then(|rest| rest.strip_suffix('p'))
                .is_some_and(|slot| !slot.is_empty() && slot.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect()
}

/// The namespaces in `ip netns list` output named like a [`Netns`] whose process is dead.
fn leftover_namespaces(list: &str) -> Vec<String> {
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with(NAME_PREFIX))
        .filter(|name| {
            let mut parts = name.rsplitn(3, '-');
            let n = parts.next().and_then(|n| n.parse::<u32>().ok());
            let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
            let has_tag = parts.next().is_some_and(|t| t.len() > NAME_PREFIX.len());
            match (n, pid, has_tag) {
                (Some(_), Some(pid), true) => !Path::new(&format!("/proc/{pid}")).exists(),
                _ => false,
            }
        })
        .map(str::to_owned)
        .collect()
}

/// Whether the /30 at `base` overlaps a route in `ip -4 -o route show` output (the default
/// route aside).
fn overlaps_route(routes: &str, base: u32) -> bool {
    routes
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .any(|dest| {
            if dest == "default" {
                return false;
            }
            let (addr, len) = dest.split_once('/').unwrap_or((dest, "32"));
            let (Ok(addr), Ok(len)) = (addr.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
                return false;
            };
            // Two prefixes overlap when the shorter one contains the other's start.
            let shorter = len.min(30);
            let mask = if shorter == 0 {
                0
            } else {
                u32::MAX << (32 - shorter)
            };
            u32::from(addr) & mask == base & mask
        })
}

fn ip(args: &[&str]) -> Result<()> {
    ip_output(args).map(drop)
}

fn ip_output(args: &[&str]) -> Result<String> {
    run_bounded("ip", args)
}

fn tc(args: &[&str]) -> Result<()> {
    run_bounded("tc", args).map(drop)
}

/// Runs `program args` to completion within [`COMMAND_WAIT_MS`]; its standard output, or its
/// standard error as the error.
fn run_bounded(program: &str, args: &[&str]) -> Result<String> {
    let what = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{what}`"))?;
    let deadline = Instant::now() + Duration::from_millis(COMMAND_WAIT_MS);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{what}` did not finish within {COMMAND_WAIT_MS} ms");
        }
        std::thread::sleep(Duration::from_millis(CHECK_EVERY_MS));
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "`{what}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

// Self-tests.

/// Set in a child process of the self-tests: `listen ADDR` or `connect ADDR:PORT` (see
/// [`probe_process`]).
const PROBE_VAR: &str = "CARDD_FLEET_NETNS_PROBE";
/// How long a probe's connection attempt may take before it counts as failed.
const PROBE_CONNECT_MS: u64 = 1_000;
/// How long a listening probe lives at most (its parent kills it sooner).
const PROBE_LIFETIME_MS: u64 = 30_000;

/// Not a test: the process the self-tests run inside a namespace (this test binary again, with
/// [`PROBE_VAR`] set). `listen ADDR` prints `PORT=<port>` and accepts connections; `connect
/// ADDR:PORT` succeeds when a connection is made within [`PROBE_CONNECT_MS`].
#[test]
fn probe_process() {
    let Ok(mode) = std::env::var(PROBE_VAR) else {
        return;
    };
    match mode.split_once(' ') {
        Some(("listen", addr)) => {
            let listener = std::net::TcpListener::bind((addr, 0)).expect("bind");
            println!("PORT={}", listener.local_addr().expect("address").port());
            listener.set_nonblocking(true).expect("nonblocking");
            let deadline = Instant::now() + Duration::from_millis(PROBE_LIFETIME_MS);
            while Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => drop(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(CHECK_EVERY_MS)),
                }
            }
        }
        Some(("connect", addr)) => {
            let addr: std::net::SocketAddr = addr.parse().expect("ADDR:PORT");
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(PROBE_CONNECT_MS))
                .expect("connect");
        }
        _ => panic!("{PROBE_VAR}: expected `listen ADDR` or `connect ADDR:PORT`, got {mode:?}"),
    }
}

/// This test binary run as [`probe_process`] inside `ns` in `mode`.
fn probe(ns: &Netns, mode: &str) -> Command {
    let mut command = ns.command(std::env::current_exe().expect("test binary"));
    command
        .args([
            "--exact",
            "netns::probe_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE_VAR, mode)
        .stdin(Stdio::null());
    command
}

/// Whether a process inside `ns` connects to `addr` (within [`PROBE_CONNECT_MS`]).
fn connects_from_inside(ns: &Netns, addr: std::net::SocketAddr) -> bool {
    probe(ns, &format!("connect {addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("probe runs")
        .success()
}

/// Whether the root namespace connects to `addr` (within [`PROBE_CONNECT_MS`]).
fn connects_from_root(addr: std::net::SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(PROBE_CONNECT_MS)).is_ok()
}

/// Waits (bounded) until `connects` holds: the first packets after a restore may wait for the
/// neighbour (ARP) entry to be resolved again.
fn connects_again(mut connects: impl FnMut() -> bool) -> bool {
    const AGAIN_WAIT_MS: u64 = 5_000;
    let deadline = Instant::now() + Duration::from_millis(AGAIN_WAIT_MS);
    while Instant::now() < deadline {
        if connects() {
            return true;
        }
    }
    false
}

/// Asserts that a connection attempt fails, within a bounded time.
fn assert_fails_in_time(what: &str, connects: impl FnOnce() -> bool) {
    // The probe's own timeout and a process start.
    const FAIL_WAIT_MS: u64 = PROBE_CONNECT_MS + 4_000;
    let started = Instant::now();
    assert!(!connects(), "{what}: connected across the cut");
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(FAIL_WAIT_MS),
        "{what}: failing took {took:?}"
    );
}

/// A process this test started; killed and reaped when dropped.
struct Started(std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_process_inside_reaches_the_root_namespace_until_cut() {
    let Some(mut ns) = create_or_skip("inout").expect("create") else {
        return;
    };
    let listener = std::net::TcpListener::bind((ns.host_addr(), 0)).expect("bind host side");
    let addr = listener.local_addr().expect("address");
    assert!(connects_from_inside(&ns, addr), "connects before the cut");

    ns.cut().expect("cut");
    assert!(ns.is_cut());
    assert_fails_in_time("inside to root", || connects_from_inside(&ns, addr));

    ns.restore().expect("restore");
    assert!(!ns.is_cut());
    assert!(
        connects_again(|| connects_from_inside(&ns, addr)),
        "connects after the restore"
    );
}

#[test]
fn the_root_namespace_reaches_a_process_inside_until_cut() {
    use std::io::BufRead;
    let Some(mut ns) = create_or_skip("outin").expect("create") else {
        return;
    };
    let mut child = probe(&ns, &format!("listen {}", ns.inner_addr()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("listener starts");
    let stdout = child.stdout.take().expect("stdout");
    let listener = Started(child);
    let port: u16 = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        // libtest's "test … " may precede it on the same line.
        .find_map(|l| {
            l.split_once("PORT=")
                .and_then(|(_, p)| p.trim().parse().ok())
        })
        .expect("the listener said its port");
    let addr = std::net::SocketAddr::from((ns.inner_addr(), port));
    assert!(connects_from_root(addr), "connects before the cut");
    ns.cut().expect("cut");
    assert_fails_in_time("root to inside", || connects_from_root(addr));
    ns.restore().expect("restore");
    assert!(
        connects_again(|| connects_from_root(addr)),
        "connects after the restore"
    );
    drop(listener);
}

#[test]
fn instances_get_their_own_names_links_and_addresses_and_are_gone_when_dropped() {
    let Some(a) = create_or_skip("a-very-long-tag-that-is-cut-short").expect("create a") else {
        return;
    };
    let b = Netns::create("b").expect("create b");
    assert_ne!(a.name(), b.name());
    assert_ne!(a.host_if(), b.host_if());
    assert_ne!(a.inner_addr(), b.inner_addr());
    for ns in [&a, &b] {
        assert!(ns.name().starts_with(NAME_PREFIX));
        assert!(ns.name().ends_with(&format!("-{}-{}", std::process::id(), {
            ns.name().rsplit('-').next().expect("n")
        })));
        assert!(ns.host_if().len() <= IFNAME_LEN_MAX, "{}", ns.host_if());
        assert!(ns.inner_if().len() <= IFNAME_LEN_MAX, "{}", ns.inner_if());
        assert_eq!(u32::from(ns.inner_addr()), u32::from(ns.host_addr()) + 1);
        assert_eq!(ns.host_addr().octets()[..2], [10, 213]);
        let inside = ns
            .command("ip")
            .args(["-o", "-4", "addr", "show"])
            .output()
            .expect("ip runs inside");
        let inside = String::from_utf8_lossy(&inside.stdout);
        assert!(
            inside.contains(&format!("{}/30", ns.inner_addr())),
            "{inside}"
        );
        assert!(
            inside.contains("127.0.0.1/8"),
            "loopback is up inside: {inside}"
        );
    }
    assert!(
        a.name().len() <= NAME_PREFIX.len() + TAG_LEN_MAX + 24,
        "{}",
        a.name()
    );

    let (name, host_if) = (a.name().to_owned(), a.host_if().to_owned());
    drop(a);
    let namespaces = ip_output(&["netns", "list"]).expect("ip netns list");
    assert!(!namespaces.contains(&name), "{namespaces}");
    assert!(
        ip(&["link", "show", &host_if]).is_err(),
        "veth {host_if} is gone"
    );
    drop(b);
}

#[test]
fn a_namespace_left_by_a_dead_process_is_deleted_at_create() {
    if check_available().is_err() {
        return eprintln!("skipped: network namespaces unavailable");
    }
    // The pid of a process that has ended.
    let mut gone = Command::new("true").spawn().expect("true runs");
    let dead = gone.id();
    gone.wait().expect("true ends");
    let leftover = format!("{NAME_PREFIX}leak-{dead}-0");
    let alive = format!("{NAME_PREFIX}alive-{}-999999", std::process::id());
    ip(&["netns", "add", &leftover]).expect("make a leftover");
    ip(&["netns", "add", &alive]).expect("make a live one");

    let ns = Netns::create("leak").expect("create");
    let namespaces = ip_output(&["netns", "list"]).expect("ip netns list");
    let remains = namespaces.contains(&alive);
    let _ = ip(&["netns", "del", &alive]);
    assert!(!namespaces.contains(&leftover), "{namespaces}");
    assert!(remains, "a live process's namespace stays: {namespaces}");
    drop(ns);
}

#[test]
fn leftovers_and_overlaps_are_recognised() {
    let list = "cardd-x-4194304999-0 (id: 3)\ncardd-x-1-0\nother-5-0\ncardd-9-0\ncardd-a-b-c-1-x\n";
    // pid 1 is alive; the huge pid cannot exist; `cardd-9-0` has no tag.
    assert_eq!(leftover_namespaces(list), ["cardd-x-4194304999-0"]);
    let links = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536\n\
                 2: cdn42p@if49: <BROADCAST,UP> mtu 1500\n3: eth0@if7: <UP> mtu 1500\n";
    assert_eq!(veth_peers(links), ["cdn42p"]);
    let base = u32::from(Ipv4Addr::new(10, 213, 1, 4));
    let routes = "default via 192.0.2.1 dev eth0\n192.0.2.0/24 dev eth0 proto kernel\n";
    assert!(!overlaps_route(routes, base));
    assert!(overlaps_route("10.0.0.0/8 dev x\n", base));
    assert!(overlaps_route("10.213.1.6 dev x\n", base));
    assert!(!overlaps_route("10.213.1.8/30 dev x\n", base));
}
