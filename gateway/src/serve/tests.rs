//! `Server` driven in memory by our client-role session (see `serve::testing`).

use std::{net::Ipv4Addr, time::Instant};

use gateway_proto::session::{Event, Renegotiation};

use super::{
    Now,
    testing::{Harness, addr, established, ip_udp},
};
use crate::{
    dataplane::carry::{Inbound, Report},
    policy::GroupId,
};

#[test]
fn a_client_is_leased_admitted_in_xdp_and_carries_data_both_ways() {
    let mut h = Harness::new("data", "10.200.0.0/22");
    let mut alice = h.client("alice");
    let events = h.pump(&mut alice, addr(2));
    let lease = established(&events).expect("alice established");
    assert_eq!(lease, Ipv4Addr::new(10, 200, 0, 2));
    assert_eq!(h.xdp.up.len(), 1);
    assert_eq!(h.xdp.up[0].0, lease);
    assert_eq!(h.xdp.up[0].2.len(), 1, "alice is in one group");

    // Client → server: into the TAP.
    let out = ip_udp(lease, Ipv4Addr::new(10, 10, 0, 10), b"hello");
    alice.send_data(Instant::now(), &out).unwrap();
    h.pump(&mut alice, addr(2));
    assert_eq!(std::mem::take(&mut h.to_tap), [out]);

    // TAP → client: the data plane seals with the keys it was handed, for the lease.
    let back = ip_udp(Ipv4Addr::new(10, 10, 0, 10), lease, b"world");
    let (to, datagram) = h.xdp.worker_seal(&back).expect("alice is carried");
    assert_eq!(to, addr(2));
    alice.handle_datagram(Instant::now(), &datagram).unwrap();
    assert_eq!(alice.poll_event(), Some(Event::Packet(back)));
    // A TAP packet for nobody's lease goes nowhere.
    let nobody = ip_udp(
        Ipv4Addr::new(10, 10, 0, 10),
        Ipv4Addr::new(10, 200, 0, 77),
        b"x",
    );
    assert!(h.xdp.worker_seal(&nobody).is_none());
}

#[test]
fn the_data_plane_is_handed_the_session_keys_and_shares_packet_ids_and_replay_windows() {
    let mut h = Harness::new("carry", "10.200.0.0/22");
    let mut alice = h.client("alice");
    let lease = established(&h.pump(&mut alice, addr(2))).unwrap();
    let peer_id = h.xdp.up[0].1;
    assert_eq!(h.xdp.carried.len(), 1, "handed over once");
    let first = h.xdp.carried(peer_id).expect("carried").data.clone();
    let carried = h.xdp.carried(peer_id).unwrap();
    assert_eq!(
        (carried.lease, carried.addr, carried.udp),
        (lease, addr(2), true)
    );
    assert_eq!(first.peer_id.map(|p| p.get()), Some(peer_id));

    // A packet alice sends is opened by the data plane once: the control plane's own
    // session refuses the same packet afterwards (one replay window).
    let out = ip_udp(lease, Ipv4Addr::new(10, 10, 0, 10), b"once");
    alice.send_data(Instant::now(), &out).unwrap();
    let wire = alice.poll_transmit(Instant::now()).unwrap().contents;
    let key = first.key(first.send_key).unwrap();
    let mut buf = wire.clone();
    let opened = key
        .open(&mut buf, Instant::now())
        .expect("the data plane opens alice's packet");
    assert_eq!(&buf[opened.plaintext], &out[..]);
    let dropped = h.server.dropped();
    h.datagram(Instant::now(), addr(2), &wire);
    assert!(h.to_tap.is_empty(), "a replayed packet went through");
    assert_eq!(h.server.dropped(), dropped + 1);

    // The server's own sends (a keepalive ping) and the data plane's draw packet-ids from
    // one counter: alice accepts both, in either order.
    let back = ip_udp(Ipv4Addr::new(10, 10, 0, 10), lease, b"both");
    let (_, from_worker) = h.xdp.worker_seal(&back).unwrap();
    let later = Instant::now() + std::time::Duration::from_secs(11);
    h.timeout(later);
    let ping = h.outbox.pop().expect("a keepalive ping").bytes;
    alice.handle_datagram(later, &ping).unwrap();
    alice.handle_datagram(later, &from_worker).unwrap();

    // A rekey hands over the new keys; the session ending takes them back.
    alice.renegotiate(Instant::now());
    h.pump(&mut alice, addr(2));
    let rekeyed = h.xdp.carried(peer_id).expect("still carried").data.clone();
    assert_ne!(rekeyed.send_key, first.send_key, "the new key sends");
    assert!(!rekeyed.same_keys(&first));
    alice.close(Instant::now());
    h.pump(&mut alice, addr(2));
    assert!(matches!(h.xdp.carried.last(), Some((id, None)) if *id == peer_id));
}

#[test]
fn reneg_bytes_rekeys_on_traffic_only_the_data_plane_carried() {
    let limits = Renegotiation {
        bytes: 4_000,
        ..Renegotiation::default()
    };
    let mut h = Harness::build_with("reneg", "10.200.0.0/22", false, Some(limits));
    let mut alice = h.client("alice");
    let lease = established(&h.pump(&mut alice, addr(2))).unwrap();
    let peer_id = h.xdp.up[0].1;
    let first = h.xdp.carried(peer_id).unwrap().data.clone();
    // 1,000-byte packets both ways, every one opened or sealed by the worker core: the
    // control plane's session sees none of them.
    let target = Ipv4Addr::new(10, 10, 0, 10);
    let mut reports = Vec::new();
    for _ in 0..3 {
        alice
            .send_data(Instant::now(), &ip_udp(lease, target, &[1; 972]))
            .unwrap();
        let wire = alice.poll_transmit(Instant::now()).unwrap().contents;
        let (verdict, packet) = h.xdp.worker_open(&wire, addr(2));
        assert!(matches!(verdict, Inbound::ToSeam(_)), "{verdict:?}");
        assert_eq!(packet.len(), 1_000);
        let (_, datagram) = h
            .xdp
            .worker_seal(&ip_udp(target, lease, &[2; 972]))
            .unwrap();
        alice.handle_datagram(Instant::now(), &datagram).unwrap();
        assert!(matches!(alice.poll_event(), Some(Event::Packet(_))));
        reports.extend(h.deliver_reports());
    }
    // The fourth packet took the key past 4,000 bytes; the server renegotiates.
    assert_eq!(reports, [Report::RenegotiationDue { peer_id }]);
    h.pump(&mut alice, addr(2));
    let rekeyed = h.xdp.carried(peer_id).expect("still carried").data.clone();
    assert_ne!(rekeyed.send_key, first.send_key, "the new key sends");
    assert!(!rekeyed.same_keys(&first));
    assert!(
        h.xdp
            .worker_seal(&ip_udp(target, lease, b"after"))
            .is_some()
    );
}

#[test]
fn packets_with_another_source_than_the_lease_are_dropped() {
    let mut h = Harness::new("spoof", "10.200.0.0/22");
    let mut alice = h.client("alice");
    let lease = established(&h.pump(&mut alice, addr(2))).unwrap();
    let spoofed = ip_udp(
        Ipv4Addr::new(10, 200, 0, 3),
        Ipv4Addr::new(10, 10, 0, 10),
        b"x",
    );
    alice.send_data(Instant::now(), &spoofed).unwrap();
    h.pump(&mut alice, addr(2));
    assert!(h.to_tap.is_empty());
    assert_eq!(h.server.spoofed(), 1);
    let honest = ip_udp(lease, Ipv4Addr::new(10, 10, 0, 10), b"y");
    alice.send_data(Instant::now(), &honest).unwrap();
    h.pump(&mut alice, addr(2));
    assert_eq!(h.to_tap.len(), 1);
}

#[test]
fn leases_are_distinct_returned_on_close_and_exhaustion_refuses() {
    let mut h = Harness::new("pool", "10.200.0.0/22");
    let mut alice = h.client("alice");
    let mut bob = h.client("bob");
    let a = established(&h.pump(&mut alice, addr(2))).unwrap();
    let b = established(&h.pump(&mut bob, addr(3))).unwrap();
    assert_ne!(a, b);
    assert_eq!(h.server.sessions(), 2);
    // carol has no group: she still connects (authorization is per destination, in XDP).
    let mut carol = h.client("carol");
    established(&h.pump(&mut carol, addr(4))).expect("carol established");
    assert!(h.xdp.up.iter().any(|(_, _, groups)| groups.is_empty()));

    // alice leaves: her lease, peer-id and XDP state go.
    alice.close(Instant::now());
    h.pump(&mut alice, addr(2));
    assert_eq!(h.server.sessions(), 2);
    assert_eq!(h.xdp.down.len(), 1);
    assert_eq!(h.xdp.down[0].0, a);

    // Fill the pool; the next client is refused with a reason.
    while h.server.pool.lease().is_ok() {}
    let mut late = h.client("alice");
    let events = h.pump(&mut late, addr(5));
    assert!(established(&events).is_none());
    assert!(
        events.iter().any(|e| matches!(e, Event::Closed { reason } if format!("{reason:?}").contains("no free address"))),
        "{events:?}"
    );
}

#[test]
fn shutdown_closes_every_session_and_clears_xdp() {
    let mut h = Harness::new("shutdown", "10.200.0.0/22");
    let mut alice = h.client("alice");
    let mut bob = h.client("bob");
    established(&h.pump(&mut alice, addr(2))).unwrap();
    established(&h.pump(&mut bob, addr(3))).unwrap();
    h.close_all();
    // Each client is told to reconnect.
    for (client, at) in [(&mut alice, addr(2)), (&mut bob, addr(3))] {
        for d in h.outbox.iter().filter(|d| d.to == at) {
            let _ = client.handle_datagram(Instant::now(), &d.bytes);
        }
        let events: Vec<Event> = std::iter::from_fn(|| client.poll_event()).collect();
        assert!(
            events.iter().any(|e| matches!(e, Event::Closed { reason } if format!("{reason:?}").contains("shutting down"))),
            "{events:?}"
        );
    }
    assert_eq!(h.server.sessions(), 0);
    assert_eq!(h.xdp.down.len(), 2);
    assert_eq!(h.server.pool().leased(), 0);
}

#[test]
fn a_session_floats_only_on_an_authenticated_data_packet() {
    let mut h = Harness::new("float", "10.200.0.0/22");
    let mut alice = h.client("alice");
    let lease = established(&h.pump(&mut alice, addr(2))).unwrap();
    // Garbage with alice's peer-id from elsewhere does not move her.
    let mut forged = vec![0x48, 0, 0, 0, 0, 0, 0, 9];
    forged.extend_from_slice(&[0xab; 40]);
    h.datagram(Instant::now(), addr(9), &forged);
    let probe = ip_udp(Ipv4Addr::new(10, 10, 0, 10), lease, b"where are you");
    let (to, _) = h.xdp.worker_seal(&probe).unwrap();
    assert_eq!(to, addr(2), "a forged packet moved alice");
    let ping = ip_udp(lease, Ipv4Addr::new(10, 10, 0, 10), b"still here");
    alice.send_data(Instant::now(), &ping).unwrap();
    h.pump(&mut alice, addr(2));
    assert_eq!(
        std::mem::take(&mut h.to_tap).len(),
        1,
        "the forged packet moved alice"
    );

    // Her own data from a new address (a NAT rebinding) moves the session there.
    let moved = ip_udp(lease, Ipv4Addr::new(10, 10, 0, 10), b"from a new port");
    alice.send_data(Instant::now(), &moved).unwrap();
    h.pump(&mut alice, addr(9));
    assert_eq!(std::mem::take(&mut h.to_tap), [moved]);
    let back = ip_udp(Ipv4Addr::new(10, 10, 0, 10), lease, b"reply");
    let (to, datagram) = h.xdp.worker_seal(&back).unwrap();
    assert_eq!(to, addr(9), "replies go to the new address");
    alice.handle_datagram(Instant::now(), &datagram).unwrap();
    assert_eq!(alice.poll_event(), Some(Event::Packet(back.clone())));

    // A float the data plane saw is applied the same way.
    let peer_id = h.xdp.up[0].1;
    h.floated(peer_id, addr(11));
    assert_eq!(h.xdp.carried(peer_id).unwrap().addr, addr(11));
    let (to, _) = h.xdp.worker_seal(&back).unwrap();
    assert_eq!(to, addr(11));
}

#[test]
fn data_plane_reports_keep_a_busy_session_alive_and_end_it_on_exit() {
    let mut h = Harness::new("reports", "10.200.0.0/22");
    let mut alice = h.client("alice");
    let lease = established(&h.pump(&mut alice, addr(2))).unwrap();
    let peer_id = h.xdp.up[0].1;
    // Only the data plane hears from alice: its stamps keep her past ping-restart.
    let start = Instant::now();
    for step in 1..=30u64 {
        let now = start + std::time::Duration::from_secs(5 * step);
        h.xdp.carried(peer_id).unwrap().activity.received(now);
        h.timeout(now);
        h.outbox.clear();
    }
    assert_eq!(h.server.sessions(), 1, "a busy session timed out");
    // Her OCC_EXIT, seen by the data plane, ends the session and returns the lease.
    h.peer_exited(peer_id);
    assert_eq!(h.server.sessions(), 0);
    assert_eq!(h.xdp.down, [(lease, peer_id)]);
    assert!(matches!(h.xdp.carried.last(), Some((id, None)) if *id == peer_id));
    assert_eq!(h.server.pool().leased(), 0);
}

#[test]
fn garbage_is_dropped_and_counted_and_the_session_keeps_working() {
    let mut h = Harness::new("garbage", "10.200.0.0/22");
    let mut alice = h.client("alice");
    let lease = established(&h.pump(&mut alice, addr(2))).unwrap();
    let mut x: u32 = 0x9e37_79b9;
    for i in 0..500u32 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let mut p: Vec<u8> = (0..(x % 200)).map(|j| (x >> (j % 24)) as u8).collect();
        if let Some(first) = p.first_mut() {
            *first = ((i % 32) as u8) << 3;
        }
        // From alice's own address and from strangers.
        let from = if i % 2 == 0 {
            addr(2)
        } else {
            addr(100 + (i % 50) as u8)
        };
        h.datagram(Instant::now(), from, &p);
    }
    assert!(h.server.dropped() >= 400, "dropped {}", h.server.dropped());
    assert_eq!(h.server.sessions(), 1, "garbage created or ended sessions");
    h.outbox.clear();
    let out = ip_udp(lease, Ipv4Addr::new(10, 10, 0, 10), b"after the storm");
    alice.send_data(Instant::now(), &out).unwrap();
    h.pump(&mut alice, addr(2));
    assert_eq!(std::mem::take(&mut h.to_tap), [out]);
}

#[test]
fn groups_come_from_certificate_ous_when_enabled() {
    for ou in [false, true] {
        let mut h = Harness::build(&format!("ou-{ou}"), "10.200.0.0/22", ou);
        let mut dave = h.client("dave");
        established(&h.pump(&mut dave, addr(2))).unwrap();
        let eng = h.server.config.groups.id("eng").unwrap();
        let want: Vec<GroupId> = if ou { vec![eng] } else { Vec::new() };
        assert_eq!(h.xdp.up[0].2, want, "groups_from_certificate_ou = {ou}");
    }
}

#[test]
fn a_silent_client_is_removed_after_ping_restart_and_its_lease_returns() {
    let mut h = Harness::new("silent", "10.200.0.0/22");
    let mut alice = h.client("alice");
    let lease = established(&h.pump(&mut alice, addr(2))).unwrap();
    assert_eq!(h.server.pool().leased(), 1);
    // alice is killed: nothing more comes from her. The server pings, then gives up
    // after twice the pushed ping-restart (60 s).
    let mut now = Instant::now();
    for _ in 0..40 {
        now += std::time::Duration::from_secs(5);
        h.timeout(now);
        h.outbox.clear();
        if h.server.sessions() == 0 {
            break;
        }
    }
    assert_eq!(h.server.sessions(), 0, "the silent session is still there");
    assert_eq!(h.xdp.down, [(lease, h.xdp.up[0].1)]);
    assert_eq!(
        h.server.pool().leased(),
        0,
        "the lease returned to the pool"
    );
    // Not before the keepalive deadline: a fresh client survives a quiet minute.
    let mut bob = h.client("bob");
    established(&h.pump(&mut bob, addr(3))).unwrap();
    let later = Instant::now() + std::time::Duration::from_secs(60);
    h.timeout(later);
    assert_eq!(h.server.sessions(), 1);
}

/// The client's close reason in `events`.
fn closed(events: &[Event]) -> Option<&gateway_proto::session::CloseReason> {
    events.iter().find_map(|e| match e {
        Event::Closed { reason } => Some(reason),
        _ => None,
    })
}

#[test]
fn connections_are_listed_and_terminate_halts_the_client_and_releases_everything() {
    use crate::admin::Selector;
    use gateway_proto::session::CloseReason;
    let mut h = Harness::new("terminate", "10.200.0.0/22");
    let mut alice = h.client("alice");
    let mut bob = h.client("bob");
    let a = established(&h.pump(&mut alice, addr(2))).unwrap();
    established(&h.pump(&mut bob, addr(3))).unwrap();
    let listed = h.server.connections(Now::system());
    assert_eq!(listed.len(), 2);
    assert_ne!(listed[0].connection_id, listed[1].connection_id);
    assert!(listed.iter().all(|c| c.status == "active"));
    let alice_id = listed
        .iter()
        .find(|c| c.common_name == "alice")
        .unwrap()
        .connection_id
        .clone();

    assert!(
        h.terminate(&Selector::ConnectionId("cvpn-connection-nope".into()))
            .is_err()
    );
    let statuses = h.terminate(&Selector::Username("alice".into())).unwrap();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].connection_id, alice_id);
    assert_eq!(
        (
            statuses[0].previous_status.as_str(),
            statuses[0].current_status.as_str()
        ),
        ("active", "terminating")
    );
    // The data plane lets go at once; the client is told to stop.
    let alice_peer = h.xdp.up.iter().find(|u| u.0 == a).unwrap().1;
    assert!(matches!(h.xdp.carried.last(), Some((id, None)) if *id == alice_peer));
    let events = h.pump(&mut alice, addr(2));
    assert!(
        matches!(closed(&events), Some(CloseReason::ServerHalt(m)) if m.contains("terminated")),
        "{events:?}"
    );
    // After the linger the session is gone, its lease free, and it is listed as ended.
    let ended_at = Instant::now() + std::time::Duration::from_secs(10);
    h.timeout(ended_at);
    assert_eq!(h.server.sessions(), 1);
    assert_eq!(h.xdp.down.len(), 1);
    assert_eq!(h.server.pool().leased(), 1);
    let listed = h.server.connections(Now::system());
    let ended = listed.iter().find(|c| c.connection_id == alice_id).unwrap();
    assert_eq!(ended.status, "terminated");
    assert_eq!(ended.status_message, "terminated by the administrator");
    assert!(ended.connection_end_time.is_some());
    // Ended connections are listed for 60 minutes.
    let later = ended_at + std::time::Duration::from_secs(3601);
    assert!(
        h.server
            .connections(Now::at(later))
            .iter()
            .all(|c| c.connection_id != alice_id)
    );
}

#[test]
fn the_session_timeout_halts_or_restarts_the_client_as_configured() {
    use gateway_proto::session::CloseReason;
    for disconnect in [true, false] {
        let mut h = Harness::new(&format!("session-timeout-{disconnect}"), "10.200.0.0/22");
        h.server.config.endpoint.disconnect_on_session_timeout = disconnect;
        let mut bob = h.client("bob");
        established(&h.pump(&mut bob, addr(3))).unwrap();
        let peer = h.xdp.up[0].1;
        // A busy day: the data plane keeps hearing from bob until the 24-hour limit.
        let day = Instant::now() + std::time::Duration::from_secs(24 * 3600);
        h.xdp.carried(peer).unwrap().activity.received(day);
        h.timeout(day);
        let events = h.pump(&mut bob, addr(3));
        let told = match closed(&events) {
            Some(CloseReason::ServerHalt(m)) => ("halt", m),
            Some(CloseReason::ServerRestart(m)) => ("restart", m),
            other => panic!("bob was not told: {other:?}"),
        };
        // With disconnect_on_session_timeout (the default) the client stops (HALT);
        // without it, it reconnects (RESTART).
        let expected = if disconnect { "halt" } else { "restart" };
        assert_eq!(told.0, expected, "{events:?}");
        assert!(told.1.contains("session timeout"), "{events:?}");
    }
}

#[test]
fn the_login_banner_is_pushed_as_echo_lines() {
    let mut h = Harness::new("banner", "10.200.0.0/22");
    h.server.config.endpoint.login_banner = Some("Authorized use only, 100%\nBe nice".into());
    let mut alice = h.client("alice");
    let events = h.pump(&mut alice, addr(2));
    let push = events
        .iter()
        .find_map(|e| match e {
            Event::Established(e) => e.push.clone(),
            _ => None,
        })
        .expect("established with a push");
    let echoes: Vec<Vec<String>> = push
        .other
        .iter()
        .filter(|d| d.name == "echo")
        .map(|d| d.args.clone())
        .collect();
    assert_eq!(
        echoes,
        [
            vec!["msg".to_string(), "Authorized use only%2C 100%25".into()],
            vec!["msg".into(), "Be nice".into()],
            vec!["msg-window".into(), "t".into()],
        ]
    );
}

#[test]
fn reset_replies_follow_the_configured_limit_and_zero_means_none() {
    let h = Harness::new("resets", "10.200.0.0/22");
    let mut endpoint = h.server.config.endpoint.clone();
    assert_eq!(
        (endpoint.reset_replies, endpoint.reset_replies_period),
        (100, std::time::Duration::from_secs(10)),
        "OpenVPN's connect-freq-initial default"
    );
    let now = Instant::now();
    endpoint.reset_replies = 2;
    let mut limited = super::server::reset_limiter(&endpoint);
    assert!(limited.allow(now) && limited.allow(now));
    assert!(!limited.allow(now), "a third reply within the period");
    endpoint.reset_replies = 0;
    let mut open = super::server::reset_limiter(&endpoint);
    assert!((0..100_000).all(|_| open.allow(now)));
}

#[test]
fn a_reload_regroups_live_sessions_under_the_numbers_in_force() {
    use gateway_tests::config::LabConfig;
    let mut h = Harness::new("regroup", "10.200.0.0/22");
    let mut alice = h.client("alice");
    let lease = established(&h.pump(&mut alice, addr(2))).unwrap();
    let peer_id = h.xdp.up[0].1;
    let eng = h.server.groups().id("eng").unwrap();
    assert_eq!(h.xdp.up[0].2, [eng]);
    // The file now has a group that sorts first, with alice in it instead of eng.
    let text = LabConfig::new("t", std::path::Path::new("/pki"))
        .authorize_groups("10.10.0.0/24", ["eng"])
        .authorize_groups("10.10.0.128/25", ["admins"])
        .group("admins", ["alice"])
        .group("eng", ["bob"])
        .to_toml();
    let mut fresh = crate::config::Config::parse(&text, "reloaded").unwrap();
    fresh.keep_group_ids(h.server.groups()).unwrap();
    assert_eq!(fresh.groups.id("eng"), Some(eng), "eng keeps its number");
    let admins = fresh.groups.id("admins").unwrap();
    let changes = h.server.regroup(&fresh.groups);
    assert_eq!(
        changes,
        [crate::serve::Regroup {
            peer_id,
            lease: Some(lease),
            before: vec![eng],
            after: vec![admins],
        }]
    );
    assert!(changes[0].both().is_empty(), "no group in common");
    h.server.set_groups(fresh.groups.clone(), &changes);
    assert!(h.server.regroup(&fresh.groups).is_empty(), "applied");
    // New sessions are numbered the same way.
    let mut bob = h.client("bob");
    established(&h.pump(&mut bob, addr(3))).unwrap();
    assert_eq!(h.xdp.up[1].2, [eng]);
}

#[test]
fn a_claimed_username_is_not_an_identity_the_certificate_is() {
    use crate::admin::Selector;
    let mut h = Harness::new("claimed", "10.200.0.0/22");
    // alice's certificate, and "bob" typed as her auth-user-pass username.
    let mut alice = h.client_claiming("alice", "bob");
    established(&h.pump(&mut alice, addr(2))).unwrap();
    let listed = h.server.connections(Now::system());
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].username, "alice", "{:?}", listed[0]);
    assert_eq!(listed[0].common_name, "alice");
    // Nobody can end (or hide behind) bob's connections by claiming his name.
    assert_eq!(
        h.terminate(&Selector::Username("bob".into())),
        Err(crate::serve::TerminateError::NoUserConnection("bob".into()))
    );
    assert_eq!(h.server.sessions(), 1);
    let statuses = h.terminate(&Selector::Username("alice".into())).unwrap();
    assert_eq!(statuses.len(), 1);
}

#[test]
fn the_server_rotates_data_keys_by_time_without_being_asked() {
    // The settings `gateway serve` takes from the configuration (rekey every hour);
    // the client never starts a rekey itself (its profile says reneg-sec 0).
    let mut h = Harness::new("rekey-time", "10.200.0.0/22");
    assert_eq!(
        super::renegotiation(&h.server.config.endpoint).seconds,
        3600
    );
    let mut alice = h.client("alice");
    let lease = established(&h.pump(&mut alice, addr(2))).unwrap();
    let peer_id = h.xdp.up[0].1;
    let first = h.xdp.carried(peer_id).unwrap().data.clone();
    let start = Instant::now();
    // Busy, so the keepalive never ends the session; a step every 30 s for 61 minutes.
    for step in 1..=122u64 {
        let at = start + std::time::Duration::from_secs(30 * step);
        h.xdp.carried(peer_id).unwrap().activity.received(at);
        h.timeout(at);
        for d in std::mem::take(&mut h.outbox) {
            let _ = alice.handle_datagram(Instant::now(), &d.bytes);
        }
        h.pump(&mut alice, addr(2));
    }
    let now = h.xdp.carried(peer_id).expect("still carried").data.clone();
    assert_ne!(now.send_key, first.send_key, "no new key after an hour");
    let back = ip_udp(Ipv4Addr::new(10, 10, 0, 10), lease, b"new key");
    let (_, datagram) = h.xdp.worker_seal(&back).unwrap();
    alice.handle_datagram(Instant::now(), &datagram).unwrap();
    assert_eq!(alice.poll_event(), Some(Event::Packet(back)));
}

#[test]
fn a_reloaded_crl_ends_the_sessions_it_revokes_and_refuses_them_after() {
    use gateway_proto::session::CloseReason;
    let mut h = Harness::new("crl-reload", "10.200.0.0/22");
    let mut alice = h.client("alice");
    let mut bob = h.client("bob");
    established(&h.pump(&mut alice, addr(2))).unwrap();
    established(&h.pump(&mut bob, addr(3))).unwrap();
    h.pki.revoke("alice").unwrap();
    let base = crate::control::tls::load(&h.server.config.tls).unwrap();
    let (config, revocations) = super::reload_crl(&h.server.config, &base)
        .unwrap()
        .expect("tls.crl is set");
    h.server.set_session_config(std::sync::Arc::new(config));
    assert_eq!(h.server.end_revoked(Now::system(), &revocations), 1);
    h.drain();
    assert!(
        matches!(h.xdp.carried.last(), Some((_, None))),
        "the data plane let go"
    );
    // What alice sends before she hears she is out goes nowhere.
    let lease = h.xdp.up[0].0;
    alice
        .send_data(
            Instant::now(),
            &ip_udp(lease, Ipv4Addr::new(10, 10, 0, 10), b"x"),
        )
        .unwrap();
    let wire = alice.poll_transmit(Instant::now()).unwrap().contents;
    h.datagram(Instant::now(), addr(2), &wire);
    assert!(
        h.to_tap.is_empty(),
        "a revoked session's packet reached the seam"
    );
    let events = h.pump(&mut alice, addr(2));
    assert!(
        matches!(closed(&events), Some(CloseReason::ServerHalt(m)) if m.contains("revoked")),
        "{events:?}"
    );
    let listed = h.server.connections(Now::system());
    let status: Vec<_> = listed
        .iter()
        .map(|c| (c.common_name.as_str(), c.status.as_str()))
        .collect();
    assert!(status.contains(&("alice", "terminating")), "{status:?}");
    assert!(status.contains(&("bob", "active")), "{status:?}");
    // Back again with the revoked certificate: refused in the handshake.
    let mut again = h.client("alice");
    let events = h.pump(&mut again, addr(4));
    assert!(established(&events).is_none(), "{events:?}");
}

#[test]
fn an_expired_crl_refuses_every_client_unless_configured_to_warn() {
    for (policy, admitted) in [("refuse", false), ("warn", true)] {
        let mut h = Harness::new(&format!("crl-expired-{policy}"), "10.200.0.0/22");
        h.pki.write_expired_crl().unwrap();
        h.server.config.tls.expired_crl = match policy {
            "refuse" => crate::config::ExpiredCrl::Refuse,
            _ => crate::config::ExpiredCrl::Warn,
        };
        let base = crate::control::tls::load(&h.server.config.tls).unwrap();
        let (config, revocations) = super::reload_crl(&h.server.config, &base).unwrap().unwrap();
        assert!(revocations.expired(std::time::SystemTime::now()));
        h.server.set_session_config(std::sync::Arc::new(config));
        let mut bob = h.client("bob");
        let events = h.pump(&mut bob, addr(3));
        assert_eq!(
            established(&events).is_some(),
            admitted,
            "{policy}: {events:?}"
        );
    }
}

#[test]
fn tcp_connections_close_when_their_session_ends_or_never_starts() {
    let mut h = Harness::new("tcp-close", "10.200.0.0/22");
    // A first packet that is not a client's reset starts nothing: closed at once.
    h.stream_packet(addr(7), &[0x38; 40]);
    assert_eq!(h.closed_streams, [addr(7)]);
    assert_eq!(h.server.sessions(), 0);
    // A TCP session: its connection is closed when the session ends, after its last
    // packet.
    let mut alice = h.client("alice");
    established(&h.pump_stream(&mut alice, addr(2))).expect("alice over TCP");
    assert_eq!(h.closed_streams, [addr(7)]);
    alice.close(Instant::now());
    h.pump_stream(&mut alice, addr(2));
    assert_eq!(h.server.sessions(), 0);
    assert_eq!(h.closed_streams, [addr(7), addr(2)]);
}

#[test]
fn one_identity_holds_at_most_its_session_limit_and_a_new_session_ends_the_oldest() {
    let mut h = Harness::configured("identity-limit", "10.200.0.0/22", |c| {
        c.max_sessions_per_identity(2)
    });
    let mut first = h.client("alice");
    let first_lease = established(&h.pump(&mut first, addr(2))).unwrap();
    let mut second = h.client("alice");
    established(&h.pump(&mut second, addr(3))).unwrap();
    let mut bob = h.client("bob");
    established(&h.pump(&mut bob, addr(4))).unwrap();
    assert_eq!(h.server.pool().leased(), 3);
    // A third alice: the oldest alice is told to stop, the others stay.
    let mut third = h.client("alice");
    established(&h.pump(&mut third, addr(5))).unwrap();
    let listed = h.server.connections(Now::system());
    let oldest = listed.iter().find(|c| c.remote == addr(2)).unwrap();
    assert_eq!(oldest.status, "terminating", "{oldest:?}");
    assert!(oldest.status_message.contains("replaced"), "{oldest:?}");
    assert_eq!(h.server.replaced(), 1);
    // Ended as a terminated session is (HALT, which the terminate test follows to the
    // client); the data plane lets go at once.
    let first_peer = h.xdp.up.iter().find(|u| u.0 == first_lease).unwrap().1;
    assert!(
        h.xdp
            .carried
            .iter()
            .any(|(id, c)| *id == first_peer && c.is_none())
    );
    h.timeout(Instant::now() + std::time::Duration::from_secs(10));
    let active: Vec<_> = h
        .server
        .connections(Now::system())
        .into_iter()
        .filter(|c| c.status == "active")
        .map(|c| (c.common_name, c.remote))
        .collect();
    assert_eq!(active.len(), 3, "{active:?}");
    assert!(active.contains(&("alice".into(), addr(3))), "{active:?}");
    assert!(active.contains(&("alice".into(), addr(5))), "{active:?}");
    assert!(active.contains(&("bob".into(), addr(4))), "{active:?}");
    // However many alices come, alice never holds more than two leases.
    for i in 0..6u8 {
        let mut again = h.client("alice");
        established(&h.pump(&mut again, addr(10 + i))).unwrap();
        h.timeout(Instant::now() + std::time::Duration::from_secs(10));
    }
    assert_eq!(h.server.pool().leased(), 3);
    assert_eq!(h.server.replaced(), 7);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 48,
        ..Default::default()
    })]

    /// The server's datagram and stream handlers on arbitrary bytes (a control-opcode
    /// first byte half the time, so they get past the opcode check), from the
    /// established client's own address and from strangers, over UDP and TCP: nothing
    /// panics, nothing new is admitted without a handshake, and the established client
    /// still carries data both ways afterwards.
    #[test]
    fn arbitrary_datagrams_and_stream_packets_never_disturb_an_established_client(
        inputs in proptest::collection::vec(
            (0u8..4, proptest::bool::ANY, proptest::option::of(0u8..32),
             proptest::collection::vec(proptest::num::u8::ANY, 0..300)),
            0..40,
        )
    ) {
        let mut h = Harness::new("arbitrary", "10.200.0.0/22");
        let mut alice = h.client("alice");
        let lease = established(&h.pump(&mut alice, addr(2))).unwrap();
        for (who, stream, opcode, mut bytes) in inputs {
            if let (Some(op), Some(first)) = (opcode, bytes.first_mut()) {
                *first = (op << 3) | (*first & 7);
            }
            let from = addr(2 + who);
            if stream {
                h.stream_packet(from, &bytes);
            } else {
                h.datagram(Instant::now(), from, &bytes);
            }
        }
        proptest::prop_assert_eq!(h.server.pool().leased(), 1);
        let out = ip_udp(lease, Ipv4Addr::new(10, 10, 0, 10), b"still here");
        alice.send_data(Instant::now(), &out).unwrap();
        h.pump(&mut alice, addr(2));
        proptest::prop_assert_eq!(std::mem::take(&mut h.to_tap), vec![out]);
        let back = ip_udp(Ipv4Addr::new(10, 10, 0, 10), lease, b"and back");
        let (to, datagram) = h.xdp.worker_seal(&back).expect("alice is carried");
        proptest::prop_assert_eq!(to, addr(2));
        alice.handle_datagram(Instant::now(), &datagram).unwrap();
        proptest::prop_assert_eq!(alice.poll_event(), Some(Event::Packet(back)));
    }
}
