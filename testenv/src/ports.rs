//! Picks free loopback ports for the servers. They come from below the kernel's ephemeral
//! range (`ip_local_port_range`), so no outgoing connection and no `bind(0)` anywhere on
//! the machine can take a server's port, even while a killed server is down and about to
//! be restarted on the same ports. A port is never handed out twice in one process, and a
//! server that still loses a race is restarted on fresh ports by its caller.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::sync::{Mutex, PoisonError};

use crate::error::Error;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Where server ports come from: below the ephemeral range, above the well-known ports.
fn candidate_range() -> std::ops::Range<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<u16>().ok()))
        .unwrap_or(32768);
    if ephemeral_low > 12000 { 10000..ephemeral_low } else { 10000..32768 }
}

/// A port on 127.0.0.1 that is free for both TCP and UDP right now (Consul's DNS and
/// Serf ports use both). Tests use it too, for a server of their own or for a port that
/// must stay closed: a port from `bind(0)` is in the ephemeral range, and the next
/// `bind(0)` in a parallel test may get the same one.
pub fn free_port() -> Result<u16, Error> {
    let range = candidate_range();
    let mut last_error = None;
    for _ in 0..256 {
        let port = rand::random_range(range.clone());
        if HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner).contains(&port) {
            continue;
        }
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            Ok(listener) => drop(listener),
            Err(e) => {
                last_error = Some(e);
                continue;
            }
        }
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
            continue;
        }
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    Err(Error::io(
        "finding a free port on 127.0.0.1",
        last_error.unwrap_or_else(|| std::io::Error::other("no free TCP+UDP port found in 256 tries")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let ports: Vec<u16> = (0..20).map(|_| free_port().expect("port")).collect();
        let range = candidate_range();
        assert!(ports.iter().all(|p| range.contains(p)), "{ports:?} outside {range:?}");
        let unique: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
        for port in ports {
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("still free");
        }
    }
}
