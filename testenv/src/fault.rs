//! A TCP fault proxy of our own (Toxiproxy-style) to put between any two processes of a
//! test: a client connects to [`FaultProxy::addr`] instead of the server, and the test
//! changes, at any moment and per direction, what happens to the bytes on every
//! connection, open or new:
//!
//! - [`Fault::Pass`]: forwarded as they come;
//! - [`Fault::Delay`]: each chunk read is forwarded after the delay (in order; the delay
//!   also limits throughput, as a slow link does);
//! - [`Fault::Hang`]: nothing is forwarded, the connection stays open, and what was held
//!   back is delivered when the fault changes (a hung server, a stalled link);
//! - [`Fault::Drop`]: read and thrown away (a black hole);
//! - [`Fault::Reset`]: the first chunk in that direction closes the connection with a TCP
//!   RST on both sides, delivering nothing of it (connection reset by peer).
//!
//! Bounded and removed: the proxy runs on a thread of its own (its own runtime, so it is
//! independent of the test's), stops by itself after the `lifetime` given to
//! [`FaultProxy::start`], and stops when dropped, closing its listener and every
//! connection; dropping happens when a test panics too (unwinding runs `Drop`).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

use crate::error::Error;

/// Which way bytes flow through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client (who connected to the proxy) to the upstream server.
    ToServer,
    /// From the upstream server back to the client.
    ToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ToServer => 0,
            Direction::ToClient => 1,
        }
    }
}

/// What happens to the bytes flowing one way; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    Pass,
    Delay(Duration),
    Hang,
    Drop,
    Reset,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    forwarded: [AtomicU64; 2],
    dropped: [AtomicU64; 2],
    resets: AtomicU64,
}

/// A running proxy; stops (listener and connections closed) when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    faults: watch::Sender<[Fault; 2]>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl FaultProxy {
    /// Listens on a free 127.0.0.1 port and forwards every connection to `upstream`,
    /// faultless until told otherwise, for at most `lifetime`.
    pub fn start(upstream: SocketAddr, lifetime: Duration) -> Result<FaultProxy, Error> {
        let io = |what: &str| {
            let what = format!("fault proxy to {upstream}: {what}");
            move |source| Error::Io { what, source }
        };
        let port = crate::free_port()?;
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map_err(io("bind"))?;
        listener.set_nonblocking(true).map_err(io("set_nonblocking"))?;
        let addr = listener.local_addr().map_err(io("local_addr"))?;
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(io("start a runtime"))?;
        let (faults, faults_rx) = watch::channel([Fault::Pass; 2]);
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let counters = Arc::new(Counters::default());
        let served = counters.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{port}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                    tokio::select! {
                        _ = accept_loop(listener, upstream, faults_rx, served) => {}
                        _ = stop_rx => {}
                        _ = tokio::time::sleep(lifetime) => {
                            tracing::warn!(%addr, %upstream, ?lifetime, "fault proxy reached its lifetime; stopping");
                        }
                    }
                });
                // Every connection task is dropped here, closing its sockets.
                runtime.shutdown_timeout(Duration::from_secs(2));
            })
            .map_err(io("spawn its thread"))?;
        Ok(FaultProxy { addr, upstream, faults, stop: Some(stop), thread: Some(thread), counters })
    }

    /// Where clients connect instead of the upstream server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Sets what happens to bytes flowing `direction`, on open and new connections alike.
    pub fn set(&self, direction: Direction, fault: Fault) {
        self.faults.send_modify(|f| f[direction.index()] = fault);
    }

    /// Sets the same fault both ways.
    pub fn set_both(&self, fault: Fault) {
        self.faults.send_replace([fault; 2]);
    }

    /// Back to forwarding both ways (held-back bytes are delivered now).
    pub fn heal(&self) {
        self.set_both(Fault::Pass);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.counters.connections.load(Ordering::Relaxed)
    }

    /// Bytes forwarded `direction` so far.
    pub fn forwarded(&self, direction: Direction) -> u64 {
        self.counters.forwarded[direction.index()].load(Ordering::Relaxed)
    }

    /// Bytes thrown away by [`Fault::Drop`] `direction` so far.
    pub fn dropped(&self, direction: Direction) -> u64 {
        self.counters.dropped[direction.index()].load(Ordering::Relaxed)
    }

    /// Connections closed by [`Fault::Reset`] so far.
    pub fn resets(&self) -> u64 {
        self.counters.resets.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    upstream: SocketAddr,
    faults: watch::Receiver<[Fault; 2]>,
    counters: Arc<Counters>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors and the like: do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        counters.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(client, upstream, faults.clone(), counters.clone()));
    }
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    faults: watch::Receiver<[Fault; 2]>,
    counters: Arc<Counters>,
) {
    // A refused upstream closes the client's connection, as the server would have.
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let reset = {
        let up = pump(&mut client_read, &mut server_write, Direction::ToServer, faults.clone(), &counters);
        let down = pump(&mut server_read, &mut client_write, Direction::ToClient, faults, &counters);
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            let end = tokio::select! {
                end = &mut up, if !up_done => { up_done = true; end }
                end = &mut down, if !down_done => { down_done = true; end }
            };
            if end == End::Reset {
                break true;
            }
            if up_done && down_done {
                break false;
            }
        }
    };
    if reset {
        counters.resets.fetch_add(1, Ordering::Relaxed);
        // SO_LINGER 0: closing sends an RST instead of a FIN. Whole streams, not halves:
        // dropping a write half would send a FIN first.
        for (read, write) in [(client_read, client_write), (server_read, server_write)] {
            if let Ok(stream) = read.reunite(write) {
                let _ = stream.set_zero_linger();
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum End {
    Closed,
    Reset,
}

/// Copies `from` to `to` under the fault set for `direction`, until `from` ends (then
/// half-closes `to`) or a reset.
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    direction: Direction,
    mut faults: watch::Receiver<[Fault; 2]>,
    counters: &Counters,
) -> End {
    let i = direction.index();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // While hung, do not even read: the sender sees a stalled peer.
        if faults.wait_for(|f| f[i] != Fault::Hang).await.is_err() {
            return End::Closed;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return End::Closed;
            }
            Ok(n) => n,
        };
        // The fault may have changed while the read waited: apply the current one.
        let fault = match faults.wait_for(|f| f[i] != Fault::Hang).await {
            Ok(f) => f[i],
            Err(_) => return End::Closed,
        };
        match fault {
            Fault::Reset => return End::Reset,
            Fault::Drop => {
                counters.dropped[i].fetch_add(n as u64, Ordering::Relaxed);
                continue;
            }
            Fault::Delay(d) => tokio::time::sleep(d).await,
            Fault::Pass | Fault::Hang => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return End::Closed;
        }
        counters.forwarded[i].fetch_add(n as u64, Ordering::Relaxed);
    }
}
