//! The network-namespace lab itself: topology reachability, processes by pid, and
//! cleanup on drop and on panic.

use std::{net::UdpSocket, panic, time::Duration};

use gateway_tests::{
    lab::{Lab, Topology, list_namespaces, wait_until},
    privilege,
};

#[test]
fn topology_links_work_and_nothing_crosses_between_sides() {
    if !privilege::check("topology_links_work_and_nothing_crosses_between_sides") {
        return;
    }
    let mut lab = Lab::new();
    let topo = Topology::build(&mut lab).unwrap();
    topo.client
        .exec(&["ping", "-c", "1", "-W", "2", Topology::GATEWAY_PUBLIC_ADDR])
        .unwrap();
    topo.target
        .exec(&["ping", "-c", "1", "-W", "2", Topology::GATEWAY_TARGET_ADDR])
        .unwrap();
    // The gateway namespace does not forward: the client has no path to the target.
    let err = topo
        .client
        .exec(&["ping", "-c", "1", "-W", "1", Topology::TARGET_ADDR])
        .unwrap_err();
    assert!(format!("{err:#}").contains("failed"), "{err:#}");
}

#[test]
fn namespaces_are_removed_on_drop_and_on_panic() {
    if !privilege::check("namespaces_are_removed_on_drop_and_on_panic") {
        return;
    }
    let names = {
        let mut lab = Lab::new();
        Topology::build(&mut lab).unwrap();
        let names: Vec<String> = lab
            .namespaces()
            .iter()
            .map(|n| n.name().to_string())
            .collect();
        let present = list_namespaces().unwrap();
        assert!(
            names.iter().all(|n| present.contains(n)),
            "{names:?} not in {present:?}"
        );
        names
    };
    let present = list_namespaces().unwrap();
    assert!(
        names.iter().all(|n| !present.contains(n)),
        "left behind: {names:?}"
    );

    let result = panic::catch_unwind(|| {
        let mut lab = Lab::new();
        let ns = lab.add_namespace("panicky").unwrap();
        lab.spawn(&ns, &["sleep", "30"], None).unwrap();
        panic!("{}", ns.name());
    });
    let name = *result.unwrap_err().downcast::<String>().unwrap();
    assert!(
        !list_namespaces().unwrap().contains(&name),
        "{name} left behind after panic"
    );
}

#[test]
fn processes_are_started_and_stopped_by_pid() {
    if !privilege::check("processes_are_started_and_stopped_by_pid") {
        return;
    }
    let mut lab = Lab::new();
    let ns = lab.add_namespace("proc").unwrap();
    let pid = lab.spawn(&ns, &["sleep", "30"], None).unwrap();
    assert!(lab.is_running(pid));
    // `ip netns identify` runs in the namespace too; it must name ours once the child
    // (`ip netns exec`) has entered it.
    wait_until(
        "the process in its namespace",
        Duration::from_secs(5),
        || {
            ns.exec(&["ip", "netns", "identify", &pid.0.to_string()])
                .is_ok_and(|out| out.contains(ns.name()))
        },
    )
    .unwrap();
    let status = lab.stop(pid).unwrap();
    assert!(
        !status.success(),
        "sleep should end by signal, got {status}"
    );
    assert!(!lab.is_running(pid));
    assert!(lab.stop(pid).is_err(), "a pid can be stopped once");
}

#[test]
fn sockets_opened_inside_a_namespace_use_its_addresses() {
    if !privilege::check("sockets_opened_inside_a_namespace_use_its_addresses") {
        return;
    }
    let mut lab = Lab::new();
    let topo = Topology::build(&mut lab).unwrap();
    let server = topo
        .gateway
        .run_in(|| UdpSocket::bind((Topology::GATEWAY_PUBLIC_ADDR, 0)))
        .unwrap()
        .unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let port = server.local_addr().unwrap().port();
    // Binding the gateway's address outside its namespace must fail.
    assert!(UdpSocket::bind((Topology::GATEWAY_PUBLIC_ADDR, 0)).is_err());
    topo.client
        .run_in(|| {
            let s = UdpSocket::bind((Topology::CLIENT_ADDR, 0))?;
            s.send_to(b"hello", (Topology::GATEWAY_PUBLIC_ADDR, port))
        })
        .unwrap()
        .unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(from.ip().to_string(), Topology::CLIENT_ADDR);
    wait_until("nothing", Duration::from_millis(50), || true).unwrap();
    assert!(wait_until("never", Duration::from_millis(60), || false).is_err());
}
