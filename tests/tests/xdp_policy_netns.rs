//! The policy programs with real traffic: a namespace plays the decrypted client side
//! (as the data plane will), `inner` and `target` run natively on the gateway's veths,
//! and a target host left as Debian makes it answers. The host sees only the gateway's
//! address with the client's own port, replies find their way back (their partial
//! checksums intact), a packet whose TTL expires gets the client time exceeded, and a
//! denied host gets nothing.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use gateway::{
    policy::{Access, AuthorizationRule, CompiledRules, GroupId, compile_authorization, group_set},
    xdp::{AttachMode, Edge, Forwarding, Policy, RedirectWatch},
};
use gateway_ebpf_common::{InnerStat, RedirectStat, RouteValue, SessionInfo, TargetStat};
use gateway_tests::{
    lab::{Lab, Netns},
    privilege,
};

const CLIENT: &str = "10.200.0.5";
const GW_INNER: &str = "10.200.0.1";
const GW_TARGET: &str = "10.10.0.1";
const ALLOWED_HOST: &str = "10.10.0.10";
const DENIED_HOST: &str = "10.10.0.20";

fn mac(ns: &Netns, ifname: &str) -> String {
    ns.exec(&["cat", &format!("/sys/class/net/{ifname}/address")])
        .unwrap()
        .trim()
        .to_string()
}

fn ifindex(ns: &Netns, ifname: &str) -> u32 {
    ns.exec(&["cat", &format!("/sys/class/net/{ifname}/ifindex")])
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Accepts one connection on `addr` within `timeout`, echoes what it reads and returns
/// the peer's address; `None` if nobody connected in time.
fn echo_once(listener: TcpListener, timeout: Duration) -> Option<SocketAddr> {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(3)))
                    .unwrap();
                let mut buf = [0u8; 64];
                let n = stream.read(&mut buf).unwrap_or(0);
                let _ = stream.write_all(&buf[..n]);
                return Some(peer);
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
    None
}

/// The three namespaces with `inner` and `target`'s maps filled (not attached yet): a
/// session for the stand-in client, a route to 10.10.0.0/24 and a rule for the allowed
/// host.
struct Bed {
    _lab: Lab,
    client: Netns,
    gw: Netns,
    target: Netns,
    policy: Policy,
    eth1: u32,
}

fn bed() -> Bed {
    let mut lab = Lab::new();
    let client = lab.add_namespace("inner").unwrap();
    let gw = lab.add_namespace("gw").unwrap();
    let target = lab.add_namespace("target").unwrap();
    lab.veth(
        (&client, "eth0", Some("10.200.0.5/24")),
        (&gw, "in0", Some("10.200.0.1/24")),
    )
    .unwrap();
    lab.veth(
        (&gw, "eth1", Some("10.10.0.1/24")),
        (&target, "eth0", Some("10.10.0.10/24")),
    )
    .unwrap();
    target
        .exec(&["ip", "addr", "add", "10.10.0.20/24", "dev", "eth0"])
        .unwrap();
    // The client namespace stands in for the data plane. The target host is left as
    // Debian makes it: no XDP program, GRO off, transmit checksums left partial.
    let mut stand_in = Edge::load().unwrap();
    client
        .run_in(|| stand_in.attach("eth0", AttachMode::Native).unwrap())
        .unwrap();
    gw.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    // As `gateway serve` sets its TAP: a translated packet the kernel forwards has the
    // gateway's own address as its source.
    for knob in ["accept_local=1", "rp_filter=0"] {
        gw.exec(&["sysctl", "-qw", &format!("net.ipv4.conf.in0.{knob}")])
            .unwrap();
    }
    client
        .exec(&["ip", "route", "add", "default", "via", GW_INNER])
        .unwrap();
    // The client namespace stands in for the data plane, whose TAP hands `inner`
    // complete checksums; the target host is left as Debian makes it.
    client
        .exec(&["ethtool", "-K", "eth0", "tx", "off"])
        .unwrap();
    // `inner` passes IPv4 only, so the client's side of the link resolves statically,
    // as it will on the TAP device.
    let (client_mac, gw_in_mac) = (mac(&client, "eth0"), mac(&gw, "in0"));
    client
        .exec(&[
            "ip",
            "neigh",
            "add",
            GW_INNER,
            "lladdr",
            &gw_in_mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])
        .unwrap();
    gw.exec(&[
        "ip",
        "neigh",
        "add",
        CLIENT,
        "lladdr",
        &client_mac,
        "dev",
        "in0",
        "nud",
        "permanent",
    ])
    .unwrap();
    let target_mac = mac(&target, "eth0");
    for host in [ALLOWED_HOST, DENIED_HOST] {
        gw.exec(&[
            "ip",
            "neigh",
            "add",
            host,
            "lladdr",
            &target_mac,
            "dev",
            "eth1",
            "nud",
            "permanent",
        ])
        .unwrap();
    }

    let mut policy = Policy::load().unwrap();
    let eth1 = ifindex(&gw, "eth1");
    let session = SessionInfo {
        groups: group_set(&[GroupId::new(1).unwrap()]),
        peer_id: 5,
        _pad: 0,
    };
    policy
        .insert_session(CLIENT.parse().unwrap(), session)
        .unwrap();
    let route = RouteValue {
        target_ifindex: eth1,
        snat_addr: GW_TARGET.parse::<Ipv4Addr>().unwrap().octets(),
    };
    let rules = [AuthorizationRule {
        destination: "10.10.0.10/32".parse().unwrap(),
        access: Access::Group(GroupId::new(1).unwrap()),
    }];
    policy
        .replace_rules(&CompiledRules::new(
            vec![("10.10.0.0/24".parse().unwrap(), route)],
            compile_authorization(&rules),
        ))
        .unwrap();
    Bed {
        _lab: lab,
        client,
        gw,
        target,
        policy,
        eth1,
    }
}

#[test]
fn real_traffic_is_translated_both_ways_and_denied_hosts_get_nothing() {
    if !privilege::check("real_traffic_is_translated_both_ways_and_denied_hosts_get_nothing") {
        return;
    }
    let Bed {
        _lab,
        client,
        gw,
        target,
        mut policy,
        eth1,
    } = bed();
    // Devmaps resolve ifindexes in the namespace of the thread that updates them. The
    // untouched target's veth cannot take redirected frames, so `inner` hands them to
    // the kernel. `in0` is no data-plane device: the stand-in has no worker to finish
    // the partial checksums the target sends, so `target` too hands them to the kernel,
    // which keeps their checksum state (redirect into the TAP is the e2e tests' part).
    let setup = gw
        .run_in(|| {
            policy.attach_inner("in0", AttachMode::Native).unwrap();
            policy.set_up_target("eth1", eth1).unwrap()
        })
        .unwrap();
    assert_eq!(setup.driver, "veth");
    assert_eq!(setup.xdp_mode, "native");
    assert_eq!(setup.forwarding, Forwarding::Kernel, "{setup:?}");

    // ICMP echo through the gateway and back.
    client
        .exec(&["ping", "-c", "3", "-i", "0.1", "-W", "2", ALLOWED_HOST])
        .unwrap();

    // TTL 1: the gateway answers as a router does, with time exceeded from its own
    // address to the client, and nothing reaches the host nor makes NAT state.
    let before = policy.inner_stats().unwrap();
    let flows = policy.nat_mappings().unwrap().len();
    let expiring = client
        .command("ping")
        .args(["-c", "1", "-t", "1", "-W", "2", ALLOWED_HOST])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&expiring.stdout);
    assert!(
        said.contains(&format!("From {GW_INNER}")) && said.contains("Time to live exceeded"),
        "ping with TTL 1: {said}"
    );
    let moved = policy.inner_stats().unwrap().since(&before);
    assert_eq!(moved.get(InnerStat::TtlExpired), 1, "{moved}");
    assert_eq!(moved.get(InnerStat::NatCreated), 0, "{moved}");
    assert_eq!(policy.nat_mappings().unwrap().len(), flows);

    // TCP: the host sees the gateway's address and the client's own port.
    let listener = target
        .run_in(|| TcpListener::bind((ALLOWED_HOST, 8080)))
        .unwrap()
        .unwrap();
    let server = thread::spawn(move || echo_once(listener, Duration::from_secs(5)));
    let (local, echoed) = client
        .run_in(|| {
            let mut s = TcpStream::connect_timeout(
                &"10.10.0.10:8080".parse().unwrap(),
                Duration::from_secs(3),
            )?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(b"hello through xdp")?;
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf)?;
            Ok::<_, std::io::Error>((s.local_addr()?, buf[..n].to_vec()))
        })
        .unwrap()
        .unwrap();
    let peer = server
        .join()
        .unwrap()
        .expect("the host accepted the connection");
    assert_eq!(
        peer.ip().to_string(),
        GW_TARGET,
        "the host must see only the gateway"
    );
    assert_eq!(
        peer.port(),
        local.port(),
        "the client's source port is preserved"
    );
    assert_eq!(echoed, b"hello through xdp");

    // A host no rule allows: the connection attempt times out, the host sees nothing.
    let before = policy.inner_stats().unwrap();
    let listener = target
        .run_in(|| TcpListener::bind((DENIED_HOST, 8080)))
        .unwrap()
        .unwrap();
    let server = thread::spawn(move || echo_once(listener, Duration::from_secs(2)));
    let denied = client
        .run_in(|| {
            TcpStream::connect_timeout(&"10.10.0.20:8080".parse().unwrap(), Duration::from_secs(1))
        })
        .unwrap();
    assert!(denied.is_err(), "a denied host must not be reachable");
    assert!(
        server.join().unwrap().is_none(),
        "the denied host saw a connection"
    );
    let inner = policy.inner_stats().unwrap().since(&before);
    assert!(inner.get(InnerStat::NotAuthorized) >= 1, "{inner}");

    let inner = policy.inner_stats().unwrap();
    let target_stats = policy.target_stats().unwrap();
    assert!(inner.get(InnerStat::PassedToKernel) >= 3 + 2, "{inner}");
    assert_eq!(inner.get(InnerStat::Redirected), 0, "{inner}");
    assert!(
        target_stats.get(TargetStat::PassedToKernel) >= 3 + 2,
        "{target_stats}"
    );
    // The SYN-ACK and the echo, at least, came with partial checksums.
    assert!(
        target_stats.get(TargetStat::PartialChecksum) >= 2,
        "{target_stats}"
    );
    assert_eq!(inner.get(InnerStat::Spoofed), 0, "{inner}");
    let mappings = policy.nat_mappings().unwrap();
    assert!(
        mappings.iter().any(
            |(flow, nat)| u16::from_be_bytes(flow.src_port) == local.port()
                && nat.nat_port == flow.src_port
        ),
        "no TCP mapping for port {}: {mappings:?}",
        local.port()
    );
}

#[test]
fn a_redirect_the_target_host_cannot_take_is_counted_not_lost_silently() {
    if !privilege::check("a_redirect_the_target_host_cannot_take_is_counted_not_lost_silently") {
        return;
    }
    let Bed {
        _lab,
        client,
        gw,
        target: _,
        mut policy,
        eth1,
    } = bed();
    // Forcing the redirect the gateway refuses to choose for a veth: the untouched
    // host's end has no NAPI, so the kernel drops every frame after `inner` returned.
    let watch = RedirectWatch::start(&policy.redirect_map_ids()).unwrap();
    gw.run_in(|| {
        policy.attach_inner("in0", AttachMode::Native).unwrap();
        policy.set_up_target("eth1", eth1).unwrap();
        policy.insert_target_device(eth1).unwrap();
    })
    .unwrap();
    let ping = client.exec(&["ping", "-c", "3", "-i", "0.1", "-W", "1", ALLOWED_HOST]);
    assert!(
        ping.is_err(),
        "the host answered a redirected ping: {ping:?}"
    );
    let inner = policy.inner_stats().unwrap();
    assert!(inner.get(InnerStat::Redirected) >= 3, "{inner}");
    let lost = watch.stats().unwrap();
    assert!(
        lost.get(RedirectStat::Failed) + lost.get(RedirectStat::TransmitDropped) >= 3,
        "{lost}"
    );
}
