//! A fleet of real processes: a throw-away PostgreSQL, one `cardd-host` and two `cardd` sites
//! (simulated readers, no keys), all started from the built binaries and driven the way
//! operators and tellers drive them: the host's command line, the sites' JSON-RPC.
//!
//! The setting up is `cardd-fleet-launch`'s ([`cardd_fleet_launch::prepare`]: the CA and
//! certificates, the host's configuration with demo keys, its database migrated and seeded,
//! the operators created at the host, the sites enrolled, each with its own directories,
//! configuration and simulated readers: the demo ETC card in `sim:etc` and a city one-card of
//! its own in `sim:city`, [`city_card_number`], 50 yuan), the same that `cargo xtask fleet`
//! runs. [`Fleet`] adds what only tests need: the test operators ([`TEST_OPERATORS`]: a
//! teller, an administrator and an operator of group G001, who log in at any site), free
//! ports, and the host inside a network namespace.
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
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cardd_fleet_launch::{Operator, Ports, Setup};

use crate::netns::Netns;

pub use cardd_fleet_launch::{city_card_number, run, Site, CITY_START_FEN};

/// The operators a test fleet has (created at the host): a teller, an administrator and an
/// operator of group G001.
pub const TEST_OPERATORS: &[Operator] = &[
    Operator {
        user: "teller",
        role: "teller",
        password: "teller-pass-1",
        group: None,
        title: "柜员 teller",
    },
    Operator {
        user: "admin",
        role: "admin",
        password: "admin-pass-1",
        group: None,
        title: "管理员 administrator",
    },
    Operator {
        user: "group1",
        role: "group",
        password: "group-pass-1",
        group: Some("G001"),
        title: "集团操作员 group operator of G001",
    },
];

/// The directory cargo put the binaries in (this test binary lives in its `deps/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_owned()
}

/// A built binary of the workspace.
pub fn binary(name: &str) -> PathBuf {
    match cardd_fleet_launch::binary(&bin_dir(), name) {
        Ok(path) => path,
        Err(e) => panic!("{e} (`cargo xtask test` does)"),
    }
}

/// The issuer host ([`cardd_fleet_launch::Host`]) and the network namespace it runs in, when
/// it has one.
pub struct Host {
    // Declared before `netns`: the process is killed before its namespace is deleted.
    inner: cardd_fleet_launch::Host,
    netns: Option<Netns>,
}

impl Deref for Host {
    type Target = cardd_fleet_launch::Host;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl DerefMut for Host {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl Host {
    /// The host's namespace ([`FleetOptions::host_netns`]), to cut it off and restore it.
    pub fn netns(&mut self) -> Result<&mut Netns> {
        self.netns
            .as_mut()
            .context("the host does not run in a network namespace")
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
    // Declared in the order a drop kills them: the sites, the host, its way to PostgreSQL,
    // PostgreSQL, then the files.
    pub sites: Vec<Site>,
    pub host: Host,
    /// The host's way to PostgreSQL when it runs in a namespace.
    pub relay: Option<Relay>,
    pub pg: cardd_pg_throwaway::Cluster,
    pub root: tempfile::TempDir,
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
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
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
        let mut ports = Ports::free(ids.len())?;
        if options.host_netns.is_some() {
            // The namespace's loopback is out of the tests' reach.
            ports.backoffice = None;
        }
        let host_launcher = options
            .host_netns
            .as_ref()
            .map(|netns| {
                ["ip", "netns", "exec", netns.name()]
                    .map(Into::into)
                    .to_vec()
            })
            .unwrap_or_default();
        let (host, sites) = cardd_fleet_launch::prepare(&Setup {
            root: root.path(),
            bin_dir: &bin_dir(),
            database_url: &database_url,
            sites: &ids,
            host_ip,
            host_launcher,
            ports: &ports,
            operators: TEST_OPERATORS,
        })?;
        Ok(Fleet {
            sites,
            host: Host {
                inner: host,
                netns: options.host_netns,
            },
            relay,
            pg,
            root,
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
