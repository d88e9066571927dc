//! The fault proxy against a small echo-and-greet server of the test's own on loopback:
//! each fault does what it says, in one direction only, on open and new connections; a
//! proxy is gone (listener and connections) when dropped, also when the test panics, and
//! after its lifetime.
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use testenv::{Direction, Fault, FaultProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIFETIME: Duration = Duration::from_secs(60);

/// A server that greets every connection with "hi\n", then echoes what it reads.
async fn echo_server() -> SocketAddr {
    let port = testenv::free_port().expect("port");
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                if s.write_all(b"hi\n").await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Reads exactly `n` bytes, or fails after `within`.
async fn read_n(s: &mut TcpStream, n: usize, within: Duration) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    match tokio::time::timeout(within, s.read_exact(&mut buf)).await {
        Ok(r) => r.map(|_| buf),
        Err(_) => Err(std::io::Error::new(ErrorKind::TimedOut, "nothing arrived")),
    }
}

async fn connect_greeted(proxy: &FaultProxy) -> TcpStream {
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect to the proxy");
    assert_eq!(read_n(&mut s, 3, Duration::from_secs(5)).await.expect("greeting"), b"hi\n");
    s
}

#[tokio::test]
async fn pass_forwards_both_ways_and_counts() {
    let proxy = FaultProxy::start(echo_server().await, LIFETIME).expect("proxy");
    let mut s = connect_greeted(&proxy).await;
    s.write_all(b"ping").await.expect("write");
    assert_eq!(read_n(&mut s, 4, Duration::from_secs(5)).await.expect("echo"), b"ping");
    assert_eq!(proxy.connections(), 1);
    // The counters move just after each write, so the client may read first.
    let start = Instant::now();
    while (proxy.forwarded(Direction::ToServer), proxy.forwarded(Direction::ToClient)) != (4, 7) {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "counted {} and {}",
            proxy.forwarded(Direction::ToServer),
            proxy.forwarded(Direction::ToClient)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn hang_holds_one_direction_on_open_connections_and_delivers_on_heal() {
    let proxy = FaultProxy::start(echo_server().await, LIFETIME).expect("proxy");
    let mut s = connect_greeted(&proxy).await;
    proxy.set(Direction::ToClient, Fault::Hang);
    s.write_all(b"ping").await.expect("write");
    // The request reaches the server (only the answers hang): the proxy forwarded it.
    let start = Instant::now();
    while proxy.forwarded(Direction::ToServer) < 4 {
        assert!(start.elapsed() < Duration::from_secs(5), "the request was not forwarded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let held = read_n(&mut s, 4, Duration::from_millis(500)).await;
    assert_eq!(held.map_err(|e| e.kind()), Err(ErrorKind::TimedOut), "the answer came through a hang");
    // A new connection hangs too: no greeting.
    let mut fresh = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert!(read_n(&mut fresh, 3, Duration::from_millis(300)).await.is_err());
    proxy.heal();
    assert_eq!(read_n(&mut s, 4, Duration::from_secs(5)).await.expect("held echo"), b"ping");
    assert_eq!(read_n(&mut fresh, 3, Duration::from_secs(5)).await.expect("held greeting"), b"hi\n");
}

#[tokio::test]
async fn drop_discards_one_direction_and_the_other_still_flows() {
    let proxy = FaultProxy::start(echo_server().await, LIFETIME).expect("proxy");
    let mut s = connect_greeted(&proxy).await;
    proxy.set(Direction::ToServer, Fault::Drop);
    s.write_all(b"lost").await.expect("write");
    assert!(read_n(&mut s, 4, Duration::from_millis(500)).await.is_err(), "a dropped request got an answer");
    assert_eq!(proxy.dropped(Direction::ToServer), 4);
    // ToClient still passes: a new connection's greeting arrives.
    let _greeted = connect_greeted(&proxy).await;
    proxy.heal();
    s.write_all(b"kept").await.expect("write");
    assert_eq!(read_n(&mut s, 4, Duration::from_secs(5)).await.expect("echo"), b"kept", "dropped bytes came back");
}

#[tokio::test]
async fn delay_adds_latency_in_order() {
    let proxy = FaultProxy::start(echo_server().await, LIFETIME).expect("proxy");
    let mut s = connect_greeted(&proxy).await;
    proxy.set(Direction::ToServer, Fault::Delay(Duration::from_millis(300)));
    let start = Instant::now();
    s.write_all(b"slow").await.expect("write");
    assert_eq!(read_n(&mut s, 4, Duration::from_secs(5)).await.expect("echo"), b"slow");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(300), "a 300 ms delay took {took:?}");
    proxy.heal();
    let start = Instant::now();
    s.write_all(b"fast").await.expect("write");
    assert_eq!(read_n(&mut s, 4, Duration::from_secs(5)).await.expect("echo"), b"fast");
    assert!(start.elapsed() < Duration::from_millis(300), "healed but still slow");
}

#[tokio::test]
async fn reset_closes_the_connection_with_an_rst_on_the_first_data() {
    let proxy = FaultProxy::start(echo_server().await, LIFETIME).expect("proxy");
    let mut s = connect_greeted(&proxy).await;
    proxy.set(Direction::ToServer, Fault::Reset);
    s.write_all(b"boom").await.expect("write");
    let mut buf = [0u8; 16];
    let got = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("an answer in time");
    assert_eq!(got.map_err(|e| e.kind()), Err(ErrorKind::ConnectionReset));
    assert_eq!(proxy.resets(), 1);
    assert_eq!(proxy.forwarded(Direction::ToServer), 0, "bytes of a reset reached the server");
}

#[tokio::test]
async fn a_dropped_proxy_closes_its_listener_and_connections() {
    let proxy = FaultProxy::start(echo_server().await, LIFETIME).expect("proxy");
    let addr = proxy.addr();
    let mut s = connect_greeted(&proxy).await;
    proxy.set_both(Fault::Hang);
    drop(proxy);
    let mut buf = [0u8; 16];
    let got = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(got, Ok(0) | Err(_)), "the connection outlived the proxy: {got:?}");
    assert!(TcpStream::connect(addr).await.is_err(), "the listener outlived the proxy");
}

#[tokio::test]
async fn a_proxy_stops_by_itself_after_its_lifetime() {
    let proxy = FaultProxy::start(echo_server().await, Duration::from_millis(500)).expect("proxy");
    let mut s = connect_greeted(&proxy).await;
    let mut buf = [0u8; 16];
    let got = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(got, Ok(0) | Err(_)), "the connection outlived the lifetime: {got:?}");
    assert!(TcpStream::connect(proxy.addr()).await.is_err(), "the listener outlived the lifetime");
}

#[test]
fn a_panicking_test_still_removes_its_proxy() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let upstream = runtime.block_on(echo_server());
    let (tx, rx) = std::sync::mpsc::channel();
    let panicked = std::thread::spawn(move || {
        let proxy = FaultProxy::start(upstream, LIFETIME).expect("proxy");
        tx.send(proxy.addr()).expect("send");
        panic!("a test failing with a proxy in scope");
    })
    .join();
    assert!(panicked.is_err());
    let addr = rx.recv().expect("addr");
    assert!(std::net::TcpStream::connect(addr).is_err(), "the proxy outlived the panicking test");
}
