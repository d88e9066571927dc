//! Picks free loopback ports. The OS chooses (bind port 0), we release the socket and
//! hand the number to a server; a port is never handed out twice in one process, and a
//! server that still loses the race is restarted on fresh ports by its caller.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::sync::{Mutex, PoisonError};

use crate::error::Error;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port on 127.0.0.1 that is free for both TCP and UDP right now (Consul's DNS and
/// Serf ports use both).
pub(crate) fn free_port() -> Result<u16, Error> {
    let mut last_error = None;
    for _ in 0..64 {
        let tcp = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) {
            Ok(listener) => listener,
            Err(e) => {
                last_error = Some(e);
                continue;
            }
        };
        let port = match tcp.local_addr() {
            Ok(addr) => addr.port(),
            Err(e) => {
                last_error = Some(e);
                continue;
            }
        };
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
        last_error.unwrap_or_else(|| std::io::Error::other("no free TCP+UDP port found in 64 tries")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let ports: Vec<u16> = (0..20).map(|_| free_port().expect("port")).collect();
        let unique: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
        for port in ports {
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("still free");
        }
    }
}
