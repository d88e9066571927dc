//! The network-namespace test hosts (`testenv::NetHosts`) and the Consul cluster on them
//! (`testenv::NetConsul`): addresses reachable, partitions and cuts that really drop
//! traffic and heal, and nothing left behind after drop, a panic, a lifetime, or a dead
//! test process. Needs root and iproute2.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use testenv::{NetConsul, NetHosts};

const SHORT: Duration = Duration::from_millis(500);

/// Serves a listener on each host and returns their addresses (accepting on threads
/// that end with the process; each accepted connection is just dropped).
fn serve_all(hosts: &NetHosts) -> Vec<SocketAddr> {
    (0..hosts.hosts().len())
        .map(|i| {
            let listener = hosts.listen(i, 0).expect("listener in the host");
            let addr = listener.local_addr().expect("addr");
            std::thread::spawn(move || for _ in listener.incoming() {});
            addr
        })
        .collect()
}

#[test]
fn hosts_reach_each_other_and_the_root_and_partitions_drop_traffic_until_healed() {
    let hosts = NetHosts::create(&["a", "b", "c"], Duration::from_secs(60)).expect("test hosts");
    let addrs = serve_all(&hosts);
    assert_eq!(addrs[0].ip(), std::net::IpAddr::V4(hosts.addr(0)));
    assert_ne!(hosts.addr(0), hosts.addr(1));
    for (i, addr) in addrs.iter().enumerate() {
        assert!(std::net::TcpStream::connect_timeout(addr, SHORT).is_ok(), "root reaches host {i}");
        for from in 0..3 {
            assert!(hosts.can_connect(from, *addr, SHORT), "host {from} reaches host {i}");
        }
    }

    // a | b c: a loses b and c, b and c keep each other, everyone keeps the root.
    hosts.partition(&[0], &[1, 2]).expect("partition");
    let started = Instant::now();
    assert!(!hosts.can_connect(0, addrs[1], SHORT), "a must not reach b");
    assert!(!hosts.can_connect(2, addrs[0], SHORT), "c must not reach a");
    assert!(started.elapsed() >= SHORT, "dropped silently (a timeout), not refused at once");
    assert!(hosts.can_connect(1, addrs[2], SHORT), "b still reaches c");
    for addr in &addrs {
        assert!(std::net::TcpStream::connect_timeout(addr, SHORT).is_ok(), "root still reaches {addr}");
    }

    // b cut from the root: the root loses b, the hosts do not.
    hosts.cut_from_root(1).expect("cut");
    assert!(std::net::TcpStream::connect_timeout(&addrs[1], SHORT).is_err(), "root must not reach b");
    assert!(hosts.can_connect(2, addrs[1], SHORT), "c still reaches b");

    // c isolated: nobody reaches c.
    hosts.isolate(2).expect("isolate");
    assert!(std::net::TcpStream::connect_timeout(&addrs[2], SHORT).is_err(), "root must not reach c");
    assert!(!hosts.can_connect(1, addrs[2], SHORT), "b must not reach c");

    hosts.heal().expect("heal");
    for (i, addr) in addrs.iter().enumerate() {
        assert!(std::net::TcpStream::connect_timeout(addr, SHORT).is_ok(), "healed: root reaches host {i}");
        for from in 0..3 {
            assert!(hosts.can_connect(from, *addr, SHORT), "healed: host {from} reaches host {i}");
        }
    }
}

#[test]
fn drop_a_panic_and_the_lifetime_remove_every_namespace() {
    let hosts = NetHosts::create(&["x", "y"], Duration::from_secs(60)).expect("test hosts");
    let names = hosts.namespaces();
    assert!(names.iter().all(|n| testenv::list_netns().contains(n)), "{names:?} exist");
    drop(hosts);
    let left = testenv::list_netns();
    assert!(names.iter().all(|n| !left.contains(n)), "dropped: {names:?} gone, left {left:?}");

    let recorded = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = recorded.clone();
    let outcome = std::panic::catch_unwind(move || {
        let hosts = NetHosts::create(&["x"], Duration::from_secs(60)).expect("test hosts");
        *record.lock().expect("record") = hosts.namespaces();
        panic!("a test fails while holding its hosts");
    });
    assert!(outcome.is_err(), "the closure panicked");
    let names = recorded.lock().expect("recorded").clone();
    assert_eq!(names.len(), 2, "{names:?}");
    let left = testenv::list_netns();
    assert!(names.iter().all(|n| !left.contains(n)), "panicked: {names:?} gone, left {left:?}");

    let hosts = NetHosts::create(&["x"], Duration::from_secs(1)).expect("test hosts");
    let names = hosts.namespaces();
    std::thread::sleep(Duration::from_secs(3));
    let left = testenv::list_netns();
    assert!(names.iter().all(|n| !left.contains(n)), "after the lifetime: {names:?} gone, left {left:?}");
    drop(hosts); // a second delete is a no-op
}

#[test]
fn leftovers_of_a_dead_process_are_swept() {
    // A pid above pid_max is never running.
    let name = format!("{}4194305-0-h0", testenv::NETNS_PREFIX);
    let status = std::process::Command::new("ip").args(["netns", "add", &name]).status().expect("ip");
    assert!(status.success());
    let swept = testenv::sweep_leftovers();
    assert!(swept.contains(&name), "{swept:?}");
    assert!(!testenv::list_netns().contains(&name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consul_leader_partitioned_from_its_followers_loses_leadership_and_rejoins() {
    let hosts = NetHosts::create(&["n0", "n1", "n2"], Duration::from_secs(180)).expect("test hosts");
    let consul = NetConsul::start(&hosts, 3).await.expect("consul on the test hosts");
    let leader = consul.leader().await.expect("a leader");
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    hosts.partition(&[leader], &followers).expect("partition");
    let started = Instant::now();
    // The majority elects a new leader among itself.
    let new_leader = loop {
        if let Some(l) = consul.leader_seen_by(followers[0]).await
            && l != leader
            && consul.leader_seen_by(followers[1]).await == Some(l)
        {
            break l;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no new leader in the majority within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("majority elected n{new_leader} {:?} after the partition", started.elapsed());
    assert_ne!(new_leader, leader);
    hosts.heal().expect("heal");
    let healed = Instant::now();
    consul.wait_converged(Duration::from_secs(30)).await.expect("converged after the heal");
    eprintln!("cluster converged {:?} after the heal", healed.elapsed());
}
