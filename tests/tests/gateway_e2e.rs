//! The gateway end to end: the stock OpenVPN 2.6 client imports an exported profile,
//! connects to `gateway serve` over UDP, and reaches the target host through the XDP
//! policy: ping and TCP work, the host sees only the gateway's address, and a host no
//! rule allows gets nothing.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use gateway::{
    admin::{Connection, Request, Response, Selector},
    config::Config,
    dataplane::counters::Counter,
    export::{ProfileInputs, client_profile},
    pki::{Flaw, Pki},
};
use gateway_tests::{
    config::LabConfig,
    lab::{Lab, Netns, ProcessId, TargetNetwork, Topology, read_log, wait_until},
    privilege,
};

const SERVER_NAME: &str = "vpn.example.test";

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Accepts one connection within `timeout`, echoes what it reads, returns the peer.
fn echo_once(listener: TcpListener, timeout: Duration) -> Option<SocketAddr> {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok((mut s, peer)) = listener.accept() {
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).unwrap_or(0);
            let _ = s.write_all(&buf[..n]);
            return Some(peer);
        }
        thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Sends `payload` over TCP from the client namespace to an echo host at 10.10.0.10:8080
/// in the target namespace; returns what came back and the source address the host saw.
fn tcp_echo_to_target(topo: &Topology, payload: &'static [u8]) -> (Vec<u8>, SocketAddr) {
    let listener = topo
        .target
        .run_in(|| TcpListener::bind("10.10.0.10:8080"))
        .unwrap()
        .unwrap();
    let host = thread::spawn(move || echo_once(listener, Duration::from_secs(8)));
    let echoed = topo
        .client
        .run_in(|| {
            let mut s = TcpStream::connect_timeout(
                &"10.10.0.10:8080".parse().unwrap(),
                Duration::from_secs(5),
            )?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(payload)?;
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf)?;
            Ok::<_, std::io::Error>(buf[..n].to_vec())
        })
        .unwrap()
        .unwrap();
    let peer = host.join().unwrap().expect("the host accepted");
    (echoed, peer)
}

/// A lab with `gateway serve` running in the gateway namespace.
struct Running {
    /// The last stock client started.
    client_pid: Option<ProcessId>,
    lab: Lab,
    topo: Topology,
    dir: std::path::PathBuf,
    pki: Pki,
    /// What `gateway.toml` was written from.
    lab_config: LabConfig,
    config: Config,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<thread::JoinHandle<anyhow::Result<anyhow::Result<()>>>>,
}

impl Running {
    /// Starts the gateway; `tls_crypt` false exports AWS-style profiles without any
    /// control-channel wrapping.
    fn start(tag: &str, tls_crypt: bool) -> Self {
        let wrap = if tls_crypt { "tls-crypt" } else { "none" };
        Self::start_with(tag, wrap, "udp/1194", |_| {})
    }

    /// As [`Running::start`], listening on `listen`, with `prepare` run on the PKI before
    /// the gateway loads it.
    /// `wrap` is "tls-crypt", "tls-auth" (SHA256) or "none".
    fn start_with(tag: &str, wrap: &str, listen: &str, prepare: impl FnOnce(&Pki)) -> Self {
        Self::start_configured(tag, wrap, listen, |c| c, prepare)
    }

    /// As [`Running::start_with`], with the configuration changed by `configure`.
    fn start_configured(
        tag: &str,
        wrap: &str,
        listen: &str,
        configure: impl FnOnce(LabConfig) -> LabConfig,
        prepare: impl FnOnce(&Pki),
    ) -> Self {
        Self::start_on(tag, TargetNetwork::Direct, wrap, listen, configure, prepare)
    }

    /// As [`Running::start_configured`], with `network` behind the target interface
    /// (routed and authorized for all users unless `configure` says otherwise).
    fn start_on(
        tag: &str,
        network: TargetNetwork,
        wrap: &str,
        listen: &str,
        configure: impl FnOnce(LabConfig) -> LabConfig,
        prepare: impl FnOnce(&Pki),
    ) -> Self {
        let dir = std::env::temp_dir().join(format!("gw-e2e-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki::init(&dir.join("pki"), "E2E CA", SERVER_NAME).unwrap();
        pki.issue_client("alice", None).unwrap();
        prepare(&pki);
        let mut lab = Lab::new();
        let topo = Topology::build_with(&mut lab, network).unwrap();
        topo.gateway
            .exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            .unwrap();
        // The tls-crypt key file is an OpenVPN static key: tls-auth can use it too.
        let mut lab_config = LabConfig::new("e2e", &dir.join("pki"))
            .listen([listen])
            .admin_socket(dir.join("admin.sock"));
        lab_config = match network {
            TargetNetwork::Direct => {
                // A second address on the host, routed but not authorized.
                topo.target
                    .exec(&["ip", "addr", "add", "10.10.0.20/24", "dev", "eth0"])
                    .unwrap();
                lab_config.authorize_all_users("10.10.0.10/32")
            }
            other => lab_config
                .without_routes()
                .route(other.routed_cidr(), Topology::TARGET_IF)
                .authorize_all_users(other.routed_cidr()),
        };
        let lab_config = configure(match wrap {
            "tls-crypt" => lab_config,
            "tls-auth" => lab_config.tls_auth_key(pki.tls_crypt_key()),
            _ => lab_config.without_wrap(),
        });
        let config_path = dir.join("gateway.toml");
        lab_config.write(&config_path).unwrap();
        // The gateway, in-process on a thread inside the gateway's namespace.
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let gw_ns = topo.gateway.clone();
        let cfg = config_path.clone();
        let server = thread::spawn(move || {
            gw_ns.run_in(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(gateway::serve::serve(&cfg, async {
                    let _ = stop_rx.await;
                }))
            })
        });
        let config = Config::load(&config_path).unwrap();
        Self {
            client_pid: None,
            lab,
            topo,
            dir,
            pki,
            lab_config,
            config,
            stop: Some(stop_tx),
            server: Some(server),
        }
    }

    /// Writes `config` as the gateway's file and sends SIGHUP (the gateway runs in this
    /// process); returns at once.
    fn reload(&self, config: &LabConfig) {
        config.write(&self.dir.join("gateway.toml")).unwrap();
        sighup();
    }

    /// Connects the stock client with the exported profile plus `extra` options; returns
    /// its log once the tunnel is up.
    fn connect(&mut self, extra: &[&str]) -> std::path::PathBuf {
        let (cert, key) = (self.pki.client_cert("alice"), self.pki.client_key("alice"));
        let client_log = self.launch("alice", &cert, &key, true, extra);
        let server = self.server.as_ref().unwrap();
        wait_until("the client's tunnel", Duration::from_secs(30), || {
            server.is_finished()
                || read_log(&client_log).contains("Initialization Sequence Completed")
        })
        .unwrap_or_else(|e| panic!("{e}\nclient:\n{}", read_log(&client_log)));
        assert!(
            !server.is_finished(),
            "the gateway stopped:\n{}",
            read_log(&client_log)
        );
        client_log
    }

    /// Starts a stock client named `who` with this certificate and key (and the
    /// tls-crypt key unless `with_tls_crypt` is false); returns its log path.
    fn launch(
        &mut self,
        who: &str,
        cert: &Path,
        key: &Path,
        with_tls_crypt: bool,
        extra: &[&str],
    ) -> std::path::PathBuf {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let (cert, key) = (read(cert), read(key));
        let tls_crypt = self
            .config
            .tls
            .tls_crypt_key
            .as_ref()
            .filter(|_| with_tls_crypt)
            .map(|p| read(p));
        let tls_auth = self
            .config
            .tls
            .tls_auth
            .as_ref()
            .map(|(p, d)| (read(p), *d));
        let profile = client_profile(
            &self.config,
            &ProfileInputs {
                remote_hosts: &self.config.endpoint.remote_hosts,
                ca_pem: &read(&self.pki.ca_cert()),
                server_name: SERVER_NAME,
                tls_crypt_key: tls_crypt.as_deref(),
                tls_auth: tls_auth.as_ref().map(|(k, d)| (k.as_str(), *d)),
                client: Some((&cert, &key)),
            },
        )
        .unwrap();
        let profile_path = self.dir.join(format!("{who}.ovpn"));
        std::fs::write(&profile_path, profile).unwrap();
        let client_log = self.dir.join(format!("{who}.log"));
        let mut args = vec!["openvpn", "--config", path(&profile_path)];
        args.extend_from_slice(extra);
        self.client_pid = Some(
            self.lab
                .spawn(&self.topo.client, &args, Some(&client_log))
                .unwrap(),
        );
        client_log
    }

    /// Asks the running gateway on its admin socket.
    fn admin(&self, request: &Request) -> Response {
        gateway::admin::call(&self.config.admin.socket, request).unwrap()
    }

    fn dataplane(&self) -> gateway::admin::DataplaneStatus {
        match self.admin(&Request::Dataplane) {
            Response::Dataplane(status) => *status,
            other => panic!("dataplane: {other:?}"),
        }
    }

    /// Waits until the gateway answers on its admin socket (it has set everything up).
    fn wait_serving(&self) {
        let socket = self.config.admin.socket.clone();
        wait_until("the gateway to serve", Duration::from_secs(15), || {
            self.server.as_ref().is_some_and(|s| s.is_finished())
                || gateway::admin::call(&socket, &Request::Connections).is_ok()
        })
        .unwrap();
        assert!(
            !self.server.as_ref().unwrap().is_finished(),
            "the gateway stopped"
        );
    }

    fn connections(&self) -> Vec<Connection> {
        match self.admin(&Request::Connections) {
            Response::Connections { connections } => connections,
            other => panic!("connections: {other:?}"),
        }
    }

    /// Stops the gateway (it must end cleanly); the lab stays.
    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.join().unwrap().unwrap().unwrap();
        }
    }

    fn stop(mut self) {
        self.shut_down();
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_stock_client_reaches_the_target_through_the_gateway() {
    if !privilege::check("a_stock_client_reaches_the_target_through_the_gateway") {
        return;
    }
    // The default mode ("auto") takes AF_XDP where the interfaces allow it, as veth does.
    reach_the_target("main", |c| c, "afxdp");
}

#[test]
fn socket_mode_reaches_the_target_too() {
    if !privilege::check("socket_mode_reaches_the_target_too") {
        return;
    }
    reach_the_target("sockets", |c| c.dataplane_mode("sockets"), "sockets");
}

/// The stock client connects (with a login banner), pings and talks TCP to the target
/// host through the gateway configured by `configure`, whose data plane runs in `mode`;
/// a routed but unauthorized host gets nothing.
fn reach_the_target(tag: &str, configure: fn(LabConfig) -> LabConfig, mode: &str) {
    let mut gw = Running::start_configured(
        tag,
        "tls-crypt",
        "udp/1194",
        |c| configure(c.login_banner("Authorized use only, please")),
        |_| {},
    );
    let client_log = gw.connect(&[]);
    let topo = &gw.topo;
    // The login banner reaches the client as pushed `echo` lines (logged by the 2.6
    // client, shown by OpenVPN GUI).
    assert!(
        read_log(&client_log).contains("Authorized use only%2C please"),
        "{}",
        read_log(&client_log)
    );

    // ICMP through the tunnel and the XDP policy.
    topo.client
        .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "3", "10.10.0.10"])
        .unwrap_or_else(|e| panic!("{e:#}\n{}", read_log(&client_log)));

    // TCP: the host sees the gateway's target address.
    let (echoed, peer) = tcp_echo_to_target(topo, b"through the gateway");
    assert_eq!(echoed, b"through the gateway");
    assert_eq!(
        peer.ip().to_string(),
        Topology::GATEWAY_TARGET_ADDR,
        "SNAT to the target ENI"
    );

    // Routed but not authorized: nothing arrives.
    let listener = topo
        .target
        .run_in(|| TcpListener::bind("10.10.0.20:8080"))
        .unwrap()
        .unwrap();
    let host = thread::spawn(move || echo_once(listener, Duration::from_secs(3)));
    let denied = topo
        .client
        .run_in(|| {
            TcpStream::connect_timeout(&"10.10.0.20:8080".parse().unwrap(), Duration::from_secs(2))
        })
        .unwrap();
    assert!(denied.is_err());
    assert!(
        host.join().unwrap().is_none(),
        "the denied host saw a connection"
    );

    // Where the packets went: in AF_XDP mode `edge` and `target` steered them to the
    // workers' AF_XDP sockets (3 pings and the TCP exchange each way).
    let status = gw.dataplane();
    assert_eq!(status.mode, mode, "{status:?}");
    let c = status.counters;
    if mode == "afxdp" {
        assert!(
            status.af_xdp_sockets.iter().any(|s| s.role == "edge")
                && status.af_xdp_sockets.iter().any(|s| s.role == "target"),
            "{status:?}"
        );
        assert!(c[Counter::XskEdgeFrames] >= 5, "{c:?}");
        assert!(c[Counter::XskTargetFrames] >= 5, "{c:?}");
    } else {
        assert!(status.af_xdp_sockets.is_empty(), "{status:?}");
        assert_eq!(
            c[Counter::XskEdgeFrames] + c[Counter::XskTargetFrames],
            0,
            "{c:?}"
        );
    }
    assert!(
        c[Counter::RxPackets] >= 5 && c[Counter::TxPackets] >= 5,
        "{c:?}"
    );
    assert_eq!(
        c[Counter::Malformed]
            + c[Counter::NoSession]
            + c[Counter::SendErrors]
            + c[Counter::XskKernelDrops],
        0,
        "{c:?}"
    );
    gw.stop();
}

#[test]
fn hosts_behind_a_bridge_are_reached_intact_in_both_modes() {
    if !privilege::check("hosts_behind_a_bridge_are_reached_intact_in_both_modes") {
        return;
    }
    for mode in ["afxdp", "sockets"] {
        through_untouched_network("bridge", TargetNetwork::Bridge, mode);
    }
}

#[test]
fn a_host_behind_a_router_is_reached_intact_in_both_modes() {
    if !privilege::check("a_host_behind_a_router_is_reached_intact_in_both_modes") {
        return;
    }
    for mode in ["afxdp", "sockets"] {
        through_untouched_network("routed", TargetNetwork::Routed, mode);
    }
}

/// The stock client, through the gateway in `mode`, reaches every host of `network`
/// (hosts as Debian makes them): ping, a megabyte each way over TCP compared byte for
/// byte, UDP datagrams up to 1,400 bytes echoed, and iperf3 TCP both ways and UDP. The
/// target interface forwards through the kernel (veth), the hosts' partial checksums
/// are finished, and no worker counts a malformed or lost frame.
fn through_untouched_network(tag: &str, network: TargetNetwork, mode: &str) {
    let mut gw = Running::start_on(
        &format!("{tag}-{mode}"),
        network,
        "tls-crypt",
        "udp/1194",
        |c| c.dataplane_mode(mode),
        |_| {},
    );
    let client_log = gw.connect(&[]);
    for (host, addr) in &gw.topo.hosts {
        gw.topo
            .client
            .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "3", addr])
            .unwrap_or_else(|e| panic!("{mode} {addr}: {e:#}\n{}", read_log(&client_log)));
        tcp_both_ways(&gw.topo.client, host, addr, 1 << 20);
        udp_echoed(&gw.topo.client, host, addr);
    }
    let (host, addr) = &gw.topo.hosts[0];
    for args in [&[][..], &["-R"][..], &["-u", "-b", "50M"][..]] {
        iperf(&mut gw.lab, &gw.topo.client, host, addr, args);
    }
    let status = gw.dataplane();
    assert_eq!(status.mode, mode, "{status:?}");
    let target = &status.targets[0];
    assert_eq!(
        (target.driver.as_str(), target.forwarding),
        ("veth", gateway::xdp::Forwarding::Kernel),
        "{target:?}"
    );
    let c = status.counters;
    assert!(c[Counter::ChecksumsFinished] > 0, "{c:?}");
    assert!(
        status.xdp.target["partial_checksum"] > 0,
        "{:?}",
        status.xdp
    );
    // Counted for the gateway's own maps only (the devmap transmit counter is the
    // host's, and other tests run meanwhile).
    assert_eq!(
        status.xdp.redirect["redirect_failed"], 0,
        "{:?}",
        status.xdp
    );
    assert_eq!(
        c[Counter::Malformed] + c[Counter::NoSession] + c[Counter::SendErrors],
        0,
        "{c:?}"
    );
    gw.stop();
}

/// Deterministic bytes for a transfer (xorshift), so either end can check them.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `len` bytes from the client to the host and `len` others back, over one TCP
/// connection, each compared with what was sent.
fn tcp_both_ways(client: &Netns, host: &Netns, addr: &str, len: usize) {
    let listener = host
        .run_in(|| TcpListener::bind((addr, 9000)))
        .unwrap()
        .unwrap();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut got = vec![0u8; len];
        s.read_exact(&mut got)?;
        s.write_all(&pattern(2, len))?;
        Ok::<_, std::io::Error>(got)
    });
    let back = client
        .run_in(|| {
            let mut s = TcpStream::connect_timeout(
                &format!("{addr}:9000").parse().unwrap(),
                Duration::from_secs(5),
            )?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(&pattern(1, len))?;
            let mut back = vec![0u8; len];
            s.read_exact(&mut back)?;
            Ok::<_, std::io::Error>(back)
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("TCP with {addr}: {e}"));
    let got = server.join().unwrap().unwrap();
    assert!(got == pattern(1, len), "{addr} received other bytes");
    assert!(
        back == pattern(2, len),
        "the client received other bytes from {addr}"
    );
}

/// Datagrams of 1 to 1,400 bytes to the host's echo socket, each echoed intact.
fn udp_echoed(client: &Netns, host: &Netns, addr: &str) {
    let echo = host
        .run_in(|| std::net::UdpSocket::bind((addr, 9001)))
        .unwrap()
        .unwrap();
    echo.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let sizes = [1usize, 100, 512, 1000, 1400];
    let server = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..sizes.len() {
            let (n, from) = echo.recv_from(&mut buf)?;
            echo.send_to(&buf[..n], from)?;
        }
        Ok::<_, std::io::Error>(())
    });
    let socket = client
        .run_in(|| std::net::UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for (i, size) in sizes.into_iter().enumerate() {
        let sent = pattern(10 + i as u64, size);
        socket.send_to(&sent, (addr, 9001)).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = socket
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("UDP echo of {size} bytes from {addr}: {e}"));
        assert!(buf[..n] == sent[..], "{addr} echoed other bytes ({size})");
    }
    server.join().unwrap().unwrap();
}

/// One second of iperf3 with `args` from the client to the host: it completes, moves
/// data, and UDP loses under 5% at 50 Mbit/s.
fn iperf(lab: &mut Lab, client: &Netns, host: &Netns, addr: &str, args: &[&str]) {
    let server = lab
        .spawn(host, &["iperf3", "-s", "-1", "-B", addr], None)
        .unwrap();
    let mut command = vec![
        "iperf3",
        "-c",
        addr,
        "-t",
        "1",
        "--json",
        "--connect-timeout",
        "3000",
    ];
    command.extend_from_slice(args);
    let mut report = serde_json::Value::Null;
    // The server may take a moment to listen (a refused connection is an error in the
    // JSON, with exit status 0 or not).
    for _ in 0..20 {
        if let Ok(out) = client.exec(&command) {
            report = serde_json::from_str(&out).unwrap();
            if report["error"].is_null() {
                break;
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    let _ = lab.stop(server);
    let end = &report["end"];
    assert!(
        !end.is_null() && report["error"].is_null(),
        "iperf3 {args:?} to {addr}: {report}"
    );
    if args.contains(&"-u") {
        let sum = &end["sum"];
        assert!(sum["bytes"].as_u64().unwrap() > 0, "{sum}");
        assert!(sum["lost_percent"].as_f64().unwrap() < 5.0, "{sum}");
    } else {
        let received = &end["sum_received"];
        assert!(received["bytes"].as_u64().unwrap() > 1 << 20, "{received}");
    }
}

#[test]
fn the_gateway_forwards_nothing_it_did_not_translate() {
    if !privilege::check("the_gateway_forwards_nothing_it_did_not_translate") {
        return;
    }
    // Someone on the public side routes a VPC address through the gateway's public
    // interface, without any tunnel: with the guard nothing reaches the host; without
    // it (dataplane.forward_guard = false), the kernel forwards it.
    for guard in [true, false] {
        let mut gw = Running::start_configured(
            &format!("guard-{guard}"),
            "tls-crypt",
            "udp/1194",
            |c| c.forward_guard(guard),
            |_| {},
        );
        gw.wait_serving();
        let topo = &gw.topo;
        topo.client
            .exec(&["ip", "route", "add", "10.10.0.0/24", "via", "198.51.100.1"])
            .unwrap();
        let host = topo
            .target
            .run_in(|| std::net::UdpSocket::bind("10.10.0.10:9100"))
            .unwrap()
            .unwrap();
        host.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let sender = topo
            .client
            .run_in(|| std::net::UdpSocket::bind("198.51.100.2:0"))
            .unwrap()
            .unwrap();
        let mut arrived = 0;
        for _ in 0..3 {
            sender
                .send_to(b"routed around the tunnel", "10.10.0.10:9100")
                .unwrap();
            let mut buf = [0u8; 64];
            if host.recv_from(&mut buf).is_ok() {
                arrived += 1;
            }
        }
        let table = topo
            .gateway
            .exec(&["nft", "list", "table", "inet", "gateway"]);
        if guard {
            assert_eq!(arrived, 0, "the guard let a routed packet through");
            let table = table.unwrap();
            assert!(
                table.contains("iifname \"eth0\" counter packets 3"),
                "{table}"
            );
        } else {
            assert_eq!(
                arrived, 3,
                "without the guard the kernel forwards (the test's premise)"
            );
            assert!(table.is_err(), "no table without the guard: {table:?}");
        }
        gw.shut_down();
        let table = gw
            .topo
            .gateway
            .exec(&["nft", "list", "table", "inet", "gateway"]);
        assert!(table.is_err(), "the table outlived the gateway: {table:?}");
        gw.stop();
    }
}

#[test]
fn every_cipher_tls_auth_and_the_unwrapped_aws_style_profile_work() {
    if !privilege::check("every_cipher_tls_auth_and_the_unwrapped_aws_style_profile_work") {
        return;
    }
    for (tag, wrap, cipher) in [
        ("aes128", "tls-crypt", "AES-128-GCM"),
        ("chacha", "tls-crypt", "CHACHA20-POLY1305"),
        ("tlsauth", "tls-auth", "AES-256-GCM"),
        ("nowrap", "none", "AES-256-GCM"),
    ] {
        let mut gw = Running::start_with(tag, wrap, "udp/1194", |_| {});
        let log = gw.connect(&["--data-ciphers", cipher]);
        assert!(
            read_log(&log).contains(&format!("Data Channel: cipher '{cipher}'")),
            "{tag}: {cipher} not negotiated:\n{}",
            read_log(&log)
        );
        gw.topo
            .client
            .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "3", "10.10.0.10"])
            .unwrap_or_else(|e| panic!("{tag}: {e:#}\n{}", read_log(&log)));
        gw.stop();
    }
}

#[test]
fn sighup_applies_new_rules_without_dropping_the_session() {
    if !privilege::check("sighup_applies_new_rules_without_dropping_the_session") {
        return;
    }
    let mut gw = Running::start("reload", true);
    let log = gw.connect(&[]);
    let ping = |host: &str| gw.topo.client.exec(&["ping", "-c", "1", "-W", "2", host]);
    ping("10.10.0.10").unwrap();
    assert!(ping("10.10.0.20").is_err(), "no rule allows 10.10.0.20 yet");
    // The one rule, 10.10.0.10/32, widened to the whole target network.
    gw.reload(
        &gw.lab_config
            .clone()
            .without_authorizations()
            .authorize_all_users("10.10.0.0/24"),
    );
    wait_until("the new rules", Duration::from_secs(5), || {
        ping("10.10.0.20").is_ok()
    })
    .unwrap();
    ping("10.10.0.10").unwrap();
    assert_one_session(&log);
    gw.stop();
}

/// A reload that adds a group which sorts before alice's own: alice keeps exactly her
/// own group's access (numbering groups by name order used to shift her session onto
/// the new group's rules and off her own).
#[test]
fn a_reload_that_adds_a_group_keeps_every_live_member_on_its_own_rules() {
    if !privilege::check("a_reload_that_adds_a_group_keeps_every_live_member_on_its_own_rules") {
        return;
    }
    let mut gw = Running::start_configured(
        "regroup",
        "tls-crypt",
        "udp/1194",
        |c| {
            c.without_authorizations()
                .authorize_groups("10.10.0.10/32", ["engineering"])
                .group("engineering", ["alice"])
        },
        |_| {},
    );
    gw.topo
        .target
        .exec(&["ip", "addr", "add", "10.10.0.30/24", "dev", "eth0"])
        .unwrap();
    let log = gw.connect(&[]);
    let ping = |host: &str| gw.topo.client.exec(&["ping", "-c", "1", "-W", "2", host]);
    ping("10.10.0.10").unwrap();
    assert!(ping("10.10.0.20").is_err(), "only engineering's host");
    // "auditors" sorts first; it gets 10.10.0.20, and everyone 10.10.0.30 (which shows
    // when the reload is in force).
    gw.reload(
        &gw.lab_config
            .clone()
            .authorize_groups("10.10.0.20/32", ["auditors"])
            .group("auditors", ["bob"])
            .authorize_all_users("10.10.0.30/32"),
    );
    wait_until("the new rules", Duration::from_secs(5), || {
        ping("10.10.0.30").is_ok()
    })
    .unwrap();
    ping("10.10.0.10").expect("alice lost her own group's host");
    assert!(
        ping("10.10.0.20").is_err(),
        "alice reached the auditors' host"
    );
    assert_one_session(&log);
    gw.stop();
}

/// Revoking a connected user's certificate and reloading ends the session at once: the
/// stock client is told to stop (HALT) and exits; the connection is listed as ended
/// with the reason.
#[test]
fn a_certificate_revoked_while_connected_is_ended_by_the_reload() {
    if !privilege::check("a_certificate_revoked_while_connected_is_ended_by_the_reload") {
        return;
    }
    let mut gw = Running::start("revoke-live", true);
    let log = gw.connect(&[]);
    gw.topo
        .client
        .exec(&["ping", "-c", "1", "-W", "2", "10.10.0.10"])
        .unwrap();
    let pid = gw.client_pid.unwrap();
    gw.pki.revoke("alice").unwrap();
    let asked = std::time::Instant::now();
    sighup();
    wait_until("the client to exit", Duration::from_secs(15), || {
        !gw.lab.is_running(pid)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", read_log(&log)));
    let client = read_log(&log);
    assert!(client.contains("certificate revoked"), "{client}");
    wait_until(
        "the connection listed as ended",
        Duration::from_secs(10),
        || {
            gw.connections()
                .iter()
                .any(|c| c.common_name == "alice" && c.status == "terminated")
        },
    )
    .unwrap();
    assert_eq!(gw.connections()[0].status_message, "certificate revoked");
    eprintln!("revoked session ended {:?} after SIGHUP", asked.elapsed());
    gw.stop();
}

/// A CRL rewritten on disk applies on its own, without a SIGHUP, within a second or so.
#[test]
fn a_crl_written_in_place_ends_revoked_sessions_without_a_reload() {
    if !privilege::check("a_crl_written_in_place_ends_revoked_sessions_without_a_reload") {
        return;
    }
    let mut gw = Running::start("revoke-watch", true);
    let log = gw.connect(&[]);
    let pid = gw.client_pid.unwrap();
    let revoked = std::time::Instant::now();
    gw.pki.revoke("alice").unwrap();
    wait_until("the client to exit", Duration::from_secs(10), || {
        !gw.lab.is_running(pid)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", read_log(&log)));
    assert!(read_log(&log).contains("certificate revoked"));
    eprintln!(
        "revoked session's client gone {:?} after the CRL was written",
        revoked.elapsed()
    );
    gw.stop();
}

#[test]
fn revoked_foreign_and_unwrapped_clients_are_refused() {
    if !privilege::check("revoked_foreign_and_unwrapped_clients_are_refused") {
        return;
    }
    let mut gw = Running::start_with("refused", "tls-crypt", "udp/1194", |pki| {
        pki.issue_client("bob", None).unwrap();
        pki.revoke("bob").unwrap();
    });
    let other = Pki::init(&gw.dir.join("other-pki"), "Other CA", SERVER_NAME).unwrap();
    other.issue_client("eve", None).unwrap();
    let (pki_bob, pki_alice) = (
        (gw.pki.client_cert("bob"), gw.pki.client_key("bob")),
        (gw.pki.client_cert("alice"), gw.pki.client_key("alice")),
    );
    let retry = ["--connect-retry-max", "1"];
    let bob = gw.launch("bob", &pki_bob.0, &pki_bob.1, true, &retry);
    let eve = gw.launch(
        "eve",
        &other.client_cert("eve"),
        &other.client_key("eve"),
        true,
        &retry,
    );
    let nowrap = gw.launch("nowrap", &pki_alice.0, &pki_alice.1, false, &retry);
    // Revoked and foreign certificates fail in TLS: the gateway answers with an alert.
    for (who, log, why) in [("bob", &bob, "certificate revoked"), ("eve", &eve, "")] {
        wait_until(
            &format!("{who} to be refused"),
            Duration::from_secs(20),
            || read_log(log).contains("fatal SSL alert"),
        )
        .unwrap_or_else(|e| panic!("{e}\n{who}:\n{}", read_log(log)));
        let l = read_log(log);
        assert!(l.contains(why), "{who}: expected {why:?}:\n{l}");
        assert!(
            !l.contains("Initialization Sequence Completed"),
            "{who} got in"
        );
    }
    // Without the tls-crypt key the gateway never answers.
    thread::sleep(Duration::from_secs(3));
    let l = read_log(&nowrap);
    assert!(
        !l.contains("Peer Connection Initiated")
            && !l.contains("Initialization Sequence Completed"),
        "{l}"
    );
    // A proper client still gets in.
    gw.connect(&[]);
    gw.stop();
}

#[test]
fn certificates_that_break_the_identity_rules_are_refused() {
    if !privilege::check("certificates_that_break_the_identity_rules_are_refused") {
        return;
    }
    // Signed by the client CA, valid, not revoked: only the identity rules refuse them.
    let flaws = [
        ("noeku", Flaw::NoClientAuthUsage),
        ("server", Flaw::ServerUsageOnly),
        ("twocn", Flaw::SecondCommonName("alice")),
    ];
    let mut gw = Running::start_with("identity", "tls-crypt", "udp/1194", |pki| {
        for (name, flaw) in flaws {
            pki.issue_flawed_client(name, flaw).unwrap();
        }
    });
    let retry = ["--connect-retry-max", "1"];
    let mut logs = Vec::new();
    for (name, _) in flaws {
        let (cert, key) = (gw.pki.client_cert(name), gw.pki.client_key(name));
        logs.push((name, gw.launch(name, &cert, &key, true, &retry)));
    }
    for (name, log) in &logs {
        wait_until(
            &format!("{name} to be refused"),
            Duration::from_secs(20),
            || read_log(log).contains("fatal SSL alert"),
        )
        .unwrap_or_else(|e| panic!("{e}\n{name}:\n{}", read_log(log)));
        assert!(
            !read_log(log).contains("Initialization Sequence Completed"),
            "{name} got in"
        );
    }
    assert!(gw.connections().is_empty(), "{:?}", gw.connections());
    // A proper certificate still gets in.
    gw.connect(&[]);
    gw.stop();
}

#[test]
fn garbage_at_the_listen_port_does_not_disturb_a_connected_client() {
    if !privilege::check("garbage_at_the_listen_port_does_not_disturb_a_connected_client") {
        return;
    }
    let mut gw = Running::start("garbage", true);
    let log = gw.connect(&[]);
    gw.topo
        .client
        .run_in(|| {
            let s = std::net::UdpSocket::bind("198.51.100.2:0").unwrap();
            let mut x: u32 = 0x1234_5678;
            for i in 0..2000u32 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let len = (x % 300) as usize;
                let mut p: Vec<u8> = (0..len)
                    .map(|j| (x.rotate_left(j as u32) >> 3) as u8)
                    .collect();
                // Every opcode, in full and truncated packets.
                if let Some(first) = p.first_mut() {
                    *first = ((i % 32) as u8) << 3;
                }
                let _ = s.send_to(&p, "198.51.100.1:1194");
            }
        })
        .unwrap();
    gw.topo
        .client
        .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "3", "10.10.0.10"])
        .unwrap_or_else(|e| panic!("{e:#}\n{}", read_log(&log)));
    assert!(!gw.server.as_ref().unwrap().is_finished());
    gw.stop();
}

/// The gateway rotates data keys on its own (`endpoint.rekey_interval_secs`; the
/// exported profile says `reneg-sec 0`): ping keeps answering across the rekeys the
/// stock client sees.
#[test]
fn the_gateway_rekeys_on_its_own_schedule_and_traffic_keeps_flowing() {
    if !privilege::check("the_gateway_rekeys_on_its_own_schedule_and_traffic_keeps_flowing") {
        return;
    }
    let mut gw = Running::start_configured(
        "server-rekey",
        "tls-crypt",
        "udp/1194",
        |c| c.rekey_interval_secs(4),
        |_| {},
    );
    let log = gw.connect(&[]);
    // 40 pings 0.25 s apart: about 10 s, two or more rekeys.
    let out = gw
        .topo
        .client
        .exec(&["ping", "-c", "40", "-i", "0.25", "-W", "1", "10.10.0.10"])
        .unwrap_or_else(|e| panic!("{e:#}\n{}", read_log(&log)));
    let client = read_log(&log);
    // Each key is a TLS session of its own.
    let keys = client.matches("Control Channel: TLS").count();
    assert!(
        keys >= 3,
        "expected the first key and two rekeys, saw {keys}:\n{client}"
    );
    assert!(
        out.contains("40 packets transmitted, 40 received"),
        "pings lost across a rekey:\n{out}"
    );
    gw.stop();
}

#[test]
fn tcp_keeps_flowing_through_repeated_rekeys() {
    if !privilege::check("tcp_keeps_flowing_through_repeated_rekeys") {
        return;
    }
    let mut gw = Running::start("rekey", true);
    let log = gw.connect(&["--reneg-sec", "4"]);
    let iperf_log = gw.dir.join("iperf3.log");
    gw.lab
        .spawn(
            &gw.topo.target,
            &["iperf3", "-s", "-1", "-B", "10.10.0.10", "--forceflush"],
            Some(&iperf_log),
        )
        .unwrap();
    wait_until("iperf3", Duration::from_secs(5), || {
        read_log(&iperf_log).contains("listening")
    })
    .unwrap();
    let out = gw
        .topo
        .client
        .exec(&[
            "iperf3",
            "-c",
            "10.10.0.10",
            "-t",
            "14",
            "-i",
            "1",
            "-J",
            "--connect-timeout",
            "3000",
        ])
        .unwrap_or_else(|e| panic!("{e:#}\n{}", read_log(&log)));
    let renegotiations = read_log(&log).matches("TLS: soft reset").count();
    assert!(
        renegotiations >= 2,
        "expected rekeys every 4 s, saw {renegotiations}:\n{}",
        read_log(&log)
    );
    // Every one-second interval moved data: no stall across a rekey.
    let intervals = out
        .find("\"intervals\"")
        .and_then(|a| out[a..].find("\"sum_sent\"").map(|b| &out[a..a + b]))
        .expect("iperf3 JSON has intervals and a summary");
    // Each interval reports its stream and their sum.
    let moved = intervals.matches("\"bytes\":").count() / 2;
    let stalls =
        intervals.matches("\"bytes\":\t0,").count() + intervals.matches("\"bytes\": 0,").count();
    assert!(moved >= 14, "expected 14 one-second intervals:\n{out}");
    assert_eq!(stalls, 0, "an interval carried no data:\n{out}");
    assert!(out.contains("\"sum_received\""), "{out}");
    gw.stop();
}

#[test]
fn the_tcp_transport_works() {
    if !privilege::check("the_tcp_transport_works") {
        return;
    }
    let mut gw = Running::start_with("tcp", "tls-crypt", "tcp/1194", |_| {});
    let log = gw.connect(&[]);
    let l = read_log(&log);
    assert!(
        l.contains("TCP_CLIENT link remote") || l.contains("TCP connection established"),
        "not over TCP:\n{l}"
    );
    gw.topo
        .client
        .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "3", "10.10.0.10"])
        .unwrap_or_else(|e| panic!("{e:#}\n{}", read_log(&log)));
    let (echoed, peer) = tcp_echo_to_target(&gw.topo, &[0x5a; 200]);
    assert_eq!(echoed, [0x5a; 200]);
    assert_eq!(peer.ip().to_string(), Topology::GATEWAY_TARGET_ADDR);
    gw.stop();
}

/// 2,000 idle TCP connections from one source, against the systemd-default soft limit of
/// 1,024 open files: the gateway raises its limit, refuses what is over the per-source
/// cap at once, closes the idle ones that send nothing, and a real TCP client (from the
/// same address) still connects.
#[test]
fn idle_tcp_connections_cannot_lock_real_clients_out() {
    if !privilege::check("idle_tcp_connections_cannot_lock_real_clients_out") {
        return;
    }
    let systemd_default = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: 20_000,
    };
    // SAFETY: setrlimit reads one rlimit through the pointer, a live local; this test
    // runs in a process of its own (nextest).
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &systemd_default) };
    let mut gw = Running::start_with("tcp-idle", "tls-crypt", "tcp/1194", |_| {});
    // Wait for the listener before flooding it.
    wait_until("the TCP listener", Duration::from_secs(10), || {
        gw.topo
            .client
            .run_in(|| std::net::TcpStream::connect(("198.51.100.1", 1194)).is_ok())
            .unwrap_or(false)
    })
    .unwrap();
    let idle: Vec<std::net::TcpStream> = gw
        .topo
        .client
        .run_in(|| {
            (0..2000)
                .filter_map(|_| {
                    std::net::TcpStream::connect_timeout(
                        &SocketAddr::from(([198, 51, 100, 1], 1194)),
                        Duration::from_millis(500),
                    )
                    .ok()
                })
                .collect()
        })
        .unwrap();
    assert!(idle.len() > 1024, "only {} connections opened", idle.len());
    let log = gw.connect(&[]);
    gw.topo
        .client
        .exec(&["ping", "-c", "2", "-W", "3", "10.10.0.10"])
        .unwrap_or_else(|e| panic!("{e:#}\n{}", read_log(&log)));
    drop(idle);
    gw.stop();
}

/// SIGHUP to this process, where the gateway under test runs.
fn sighup() {
    nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGHUP).unwrap();
}

/// The client's log shows one tunnel start only: its session was never dropped.
fn assert_one_session(log: &Path) {
    let client = read_log(log);
    assert_eq!(
        client.matches("Initialization Sequence Completed").count(),
        1,
        "the session was dropped:\n{client}"
    );
}

/// Sends one UDP packet with source `src` (any address) into `device`, raw.
fn send_raw_udp(device: &str, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let packet = &gateway_tests::xdp::frame::udp(src, dst, 40000, 9999, payload)[14..];
    // SAFETY: socket(2) takes no pointers; the result is checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is an open descriptor socket(2) just returned, owned by nothing else;
    // the OwnedFd becomes its only owner.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: the kernel reads device.len() bytes from `device`, a live &str, during the
    // call only (SO_BINDTODEVICE takes the name without a NUL).
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            device.as_ptr().cast(),
            device.len() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let to = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dst),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: the kernel reads packet.len() bytes from `packet` and one sockaddr_in from
    // `to`, both live for the call, with their own lengths; it keeps neither pointer.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&to as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The lease a client log says it was given.
fn pushed_lease(log: &str) -> Option<[u8; 4]> {
    let at = log.find(",ifconfig ")? + ",ifconfig ".len();
    let addr: std::net::Ipv4Addr = log[at..].split(' ').next()?.parse().ok()?;
    Some(addr.octets())
}

#[test]
fn two_clients_get_distinct_leases_and_cannot_spoof_each_other() {
    if !privilege::check("two_clients_get_distinct_leases_and_cannot_spoof_each_other") {
        return;
    }
    let mut gw = Running::start_with("two", "tls-crypt", "udp/1194", |pki| {
        pki.issue_client("bob", None).unwrap();
    });
    // bob comes from another network, on a second link into the gateway.
    let bob_ns = gw.lab.add_namespace("client2").unwrap();
    gw.lab
        .veth(
            (&bob_ns, "eth0", Some("203.0.113.2/24")),
            (&gw.topo.gateway, "eth2", Some("203.0.113.1/24")),
        )
        .unwrap();
    let alice_log = gw.connect(&[]);
    let (bob_cert, bob_key) = (gw.pki.client_cert("bob"), gw.pki.client_key("bob"));
    let bob_profile = {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let profile = client_profile(
            &gw.config,
            &ProfileInputs {
                remote_hosts: &["203.0.113.1".to_string()],
                ca_pem: &read(&gw.pki.ca_cert()),
                server_name: SERVER_NAME,
                tls_crypt_key: Some(&read(gw.config.tls.tls_crypt_key.as_ref().unwrap())),
                tls_auth: None,
                client: Some((&read(&bob_cert), &read(&bob_key))),
            },
        )
        .unwrap();
        let p = gw.dir.join("bob.ovpn");
        std::fs::write(&p, profile).unwrap();
        p
    };
    let bob_log = gw.dir.join("bob.log");
    gw.lab
        .spawn(
            &bob_ns,
            &["openvpn", "--config", path(&bob_profile)],
            Some(&bob_log),
        )
        .unwrap();
    wait_until("bob's tunnel", Duration::from_secs(30), || {
        read_log(&bob_log).contains("Initialization Sequence Completed")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", read_log(&bob_log)));

    let alice = pushed_lease(&read_log(&alice_log)).expect("alice's lease");
    let bob = pushed_lease(&read_log(&bob_log)).expect("bob's lease");
    assert_ne!(alice, bob, "both clients got the same lease");

    let host = gw
        .topo
        .target
        .run_in(|| std::net::UdpSocket::bind("10.10.0.10:9999"))
        .unwrap()
        .unwrap();
    host.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 64];
    // alice's own address gets through (translated to the gateway's address)...
    gw.topo
        .client
        .run_in(|| send_raw_udp("tun0", alice, [10, 10, 0, 10], b"honest"))
        .unwrap()
        .unwrap();
    let (n, from) = host.recv_from(&mut buf).expect("alice's packet arrives");
    assert_eq!(&buf[..n], b"honest");
    assert_eq!(from.ip().to_string(), Topology::GATEWAY_TARGET_ADDR);
    // ...bob's address through alice's tunnel is dropped as spoofed.
    gw.topo
        .client
        .run_in(|| send_raw_udp("tun0", bob, [10, 10, 0, 10], b"spoofed"))
        .unwrap()
        .unwrap();
    match host.recv_from(&mut buf) {
        Ok((n, _)) => panic!("a spoofed packet arrived: {:?}", &buf[..n]),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
    }
    // bob himself still gets through.
    bob_ns
        .exec(&["ping", "-c", "1", "-W", "3", "10.10.0.10"])
        .unwrap();
    gw.stop();
}

#[test]
fn a_killed_client_is_removed_after_ping_restart() {
    if !privilege::check("a_killed_client_is_removed_after_ping_restart") {
        return;
    }
    // ping 1, ping-restart 3: the gateway gives a silent client 2 × 3 s.
    let mut gw = Running::start_configured(
        "killed",
        "tls-crypt",
        "udp/1194",
        |c| c.keepalive(1, 3),
        |_| {},
    );
    let log = gw.connect(&[]);
    assert!(
        read_log(&log).contains("ping 1,ping-restart 3"),
        "the keepalive is pushed:\n{}",
        read_log(&log)
    );
    gw.topo
        .client
        .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "3", "10.10.0.10"])
        .unwrap();
    let first = gw.connections();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].status, "active");
    assert!(
        first[0].ingress_packets >= 2 && first[0].egress_packets >= 2,
        "{first:?}"
    );

    // The client dies without a word; its pings stop.
    let killed_at = Instant::now();
    gw.lab.kill(gw.client_pid.take().unwrap()).unwrap();
    let mut ended = None;
    wait_until("the session removed", Duration::from_secs(20), || {
        ended = gw
            .connections()
            .into_iter()
            .find(|c| c.connection_id == first[0].connection_id && c.status == "terminated");
        ended.is_some()
    })
    .unwrap();
    let waited = killed_at.elapsed();
    let ended = ended.unwrap();
    assert!(
        waited >= Duration::from_secs(4),
        "removed after {waited:?}, before the keepalive deadline"
    );
    assert!(
        ended.status_message.contains("keepalive timeout"),
        "{ended:?}"
    );
    assert!(ended.connection_end_time.is_some());

    // Its lease went back: a new client connects and reaches the target.
    let log = gw.connect(&[]);
    gw.topo
        .client
        .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "3", "10.10.0.10"])
        .unwrap_or_else(|e| panic!("{e:#}\n{}", read_log(&log)));
    let now = gw.connections();
    assert_eq!(
        now.iter().filter(|c| c.status == "active").count(),
        1,
        "{now:?}"
    );
    gw.stop();
}

#[test]
fn terminate_ends_a_connection_and_the_client_stops() {
    if !privilege::check("terminate_ends_a_connection_and_the_client_stops") {
        return;
    }
    let mut gw = Running::start("terminate", true);
    let log = gw.connect(&[]);
    let lease = pushed_lease(&read_log(&log)).unwrap();
    gw.topo
        .client
        .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "3", "10.10.0.10"])
        .unwrap();
    let listed = gw.connections();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let alice = &listed[0];
    assert_eq!(
        (
            alice.username.as_str(),
            alice.common_name.as_str(),
            alice.transport.as_str()
        ),
        ("alice", "alice", "udp")
    );
    assert_eq!(alice.client_ip.map(|ip| ip.octets()), Some(lease));
    assert!(alice.connection_id.starts_with("cvpn-connection-"));
    assert!(
        alice.ingress_bytes > 0 && alice.egress_bytes > 0,
        "{alice:?}"
    );

    // Unknown ids and users are refused with the reason.
    match gw.admin(&Request::Terminate(Selector::ConnectionId(
        "cvpn-connection-0".into(),
    ))) {
        Response::Error { message } => assert!(message.contains("no active connection")),
        other => panic!("{other:?}"),
    }

    let pid = gw.client_pid.unwrap();
    match gw.admin(&Request::Terminate(Selector::Username("alice".into()))) {
        Response::Terminated { statuses } => {
            assert_eq!(statuses.len(), 1);
            assert_eq!(statuses[0].connection_id, alice.connection_id);
            assert_eq!(statuses[0].previous_status, "active");
        }
        other => panic!("{other:?}"),
    }
    // HALT: the stock client stops instead of reconnecting.
    wait_until("the client to exit", Duration::from_secs(15), || {
        !gw.lab.is_running(pid)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", read_log(&log)));
    wait_until(
        "the connection listed as terminated",
        Duration::from_secs(10),
        || {
            gw.connections()
                .iter()
                .any(|c| c.connection_id == alice.connection_id && c.status == "terminated")
        },
    )
    .unwrap();
    let ended = gw.connections();
    assert_eq!(ended[0].status_message, "terminated by the administrator");
    gw.stop();
}
