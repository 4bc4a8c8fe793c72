//! Who is at the other end of a loopback TCP connection: the client's process where the OS says.
//!
//! Loopback TCP carries no credentials (`SO_PEERCRED` is for Unix sockets), but on Linux the
//! kernel lists every TCP socket in `/proc/net/tcp` and `/proc/net/tcp6` with its owner's uid and
//! its inode; the process holding that inode has a `/proc/<pid>/fd/*` link `socket:[<inode>]`.
//! [`identify`] finds the row whose local end is the connection's peer and whose remote end is
//! the daemon, then the process. It reads only what the daemon's user may read: a process of
//! another user (without root) is known by its uid only, and elsewhere than Linux, or when the
//! row cannot be found, the client is [`PeerProcess::Unknown`] (all such clients share one cap).
//!
//! The scan is bounded ([`FDS_SCANNED_MAX`]) and starts with the processes recently found, so a
//! client that opens many connections is recognised quickly.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;

/// Most `/proc/<pid>/fd` entries read to find one socket's process.
pub const FDS_SCANNED_MAX: usize = 200_000;
/// Processes remembered as recent clients, looked at first.
const RECENT_PROCESSES_MAX: usize = 32;

/// The client of a connection, as precisely as the OS tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerProcess {
    /// The process holding the client's socket.
    Process { pid: u32, uid: u32 },
    /// The socket's owner, when its process cannot be read (another user's process).
    User { uid: u32 },
    /// Nothing is known (not Linux, or the socket was not found).
    Unknown,
}

impl std::fmt::Display for PeerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerProcess::Process { pid, uid } => write!(f, "pid {pid} (uid {uid})"),
            PeerProcess::User { uid } => write!(f, "uid {uid}"),
            PeerProcess::Unknown => f.write_str("unknown process"),
        }
    }
}

/// Finds client processes; keeps the few recently found to look at first.
#[derive(Debug, Default)]
pub struct PeerFinder {
    recent: Mutex<VecDeque<u32>>,
}

impl PeerFinder {
    /// The process at the `peer` end of a connection accepted on `local`. Blocking (reads /proc).
    pub fn identify(&self, peer: SocketAddr, local: SocketAddr) -> PeerProcess {
        let Some((uid, inode)) = socket_owner(peer, local) else {
            return PeerProcess::Unknown;
        };
        let recent: Vec<u32> = self
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        let Some(pid) = process_of(inode, &recent) else {
            return PeerProcess::User { uid };
        };
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.retain(|p| *p != pid);
        recent.push_front(pid);
        recent.truncate(RECENT_PROCESSES_MAX);
        PeerProcess::Process { pid, uid }
    }
}

/// The uid and inode of the TCP socket whose local end is `peer` and remote end `local`.
fn socket_owner(peer: SocketAddr, local: SocketAddr) -> Option<(u32, u64)> {
    let tables: &[&str] = match peer.ip() {
        IpAddr::V4(_) => &["/proc/net/tcp", "/proc/net/tcp6"],
        IpAddr::V6(_) => &["/proc/net/tcp6"],
    };
    tables.iter().find_map(|path| {
        let text = std::fs::read_to_string(path).ok()?;
        find_row(&text, peer, local)
    })
}

/// The `(uid, inode)` of the row of a `/proc/net/tcp{,6}` table for the connection
/// `peer` → `local`.
fn find_row(table: &str, peer: SocketAddr, local: SocketAddr) -> Option<(u32, u64)> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 {
            return None;
        }
        let ours =
            same_addr(parse_addr(fields[1])?, peer) && same_addr(parse_addr(fields[2])?, local);
        if !ours {
            return None;
        }
        Some((fields[7].parse().ok()?, fields[9].parse().ok()?))
    })
}

/// Equal addresses, an IPv4 one matching its IPv4-mapped IPv6 form.
fn same_addr(a: SocketAddr, b: SocketAddr) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit word in the kernel's
/// byte order, the port big-endian.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(ip.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The process holding socket `inode`: the `recent` ones first, then every readable process,
/// reading at most [`FDS_SCANNED_MAX`] descriptors.
fn process_of(inode: u64, recent: &[u32]) -> Option<u32> {
    let target = format!("socket:[{inode}]");
    let mut budget = FDS_SCANNED_MAX;
    let holds = |pid: u32, budget: &mut usize| -> bool {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        for fd in fds.flatten() {
            if *budget == 0 {
                return false;
            }
            *budget -= 1;
            if std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == target.as_str()) {
                return true;
            }
        }
        false
    };
    if let Some(pid) = recent.iter().copied().find(|pid| holds(*pid, &mut budget)) {
        return Some(pid);
    }
    let processes = std::fs::read_dir("/proc").ok()?;
    for entry in processes.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if recent.contains(&pid) {
            continue;
        }
        if budget == 0 {
            return None;
        }
        if holds(pid, &mut budget) {
            return Some(pid);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_addresses() {
        let v4 = parse_addr("0100007F:1F90").unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(v4, "127.0.0.1:8080".parse().unwrap());
        }
        let v6 = parse_addr("00000000000000000000000001000000:0050").unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(v6, "[::1]:80".parse().unwrap());
        }
        assert!(parse_addr("zz:1").is_none());
        assert!(same_addr(
            "[::ffff:127.0.0.1]:5".parse().unwrap(),
            "127.0.0.1:5".parse().unwrap()
        ));
    }

    #[test]
    fn finds_this_process_for_its_own_connection() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let found = PeerFinder::default().identify(peer, listener.local_addr().unwrap());
        match found {
            PeerProcess::Process { pid, .. } => assert_eq!(pid, std::process::id()),
            other => panic!("expected this process, found {other}"),
        }
    }
}
