//! Our CLIENT role (gateway-proto, as the benchmark load generator will use it) against
//! the STOCK OpenVPN 2.6 server: handshake with tls-crypt, the push applied, and an
//! ICMP echo through the tunnel answered by the server's tunnel address — for each of
//! the three data ciphers.

use std::{
    net::UdpSocket,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use gateway::pki::Pki;
use gateway_proto::{
    data::Cipher,
    session::{Event, Session},
};
use gateway_tests::{
    lab::{Lab, read_log},
    openvpn::{ServerFiles, spawn_stock_server},
    privilege,
    xdp::frame,
};

/// Connects with `cipher` offered alone, pings 10.8.0.1 through the tunnel; returns the
/// echo reply's source and what the server negotiated.
fn connect_and_ping(pki: &Pki, cipher: Cipher) -> Result<(Cipher, [u8; 4]), String> {
    let config = pki
        .client_role_config("loadgen", &[cipher])
        .map_err(|e| format!("{e:#}"))?;
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    let start = Instant::now();
    let mut session =
        Session::client(Arc::new(config), start, unix).map_err(|e| format!("start: {e:?}"))?;
    let socket = UdpSocket::bind("198.51.100.2:0").map_err(|e| e.to_string())?;
    socket
        .connect("198.51.100.1:1194")
        .map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut negotiated = None;
    let mut sent_ping = false;
    while start.elapsed() < Duration::from_secs(20) {
        let now = Instant::now();
        while let Some(t) = session.poll_transmit(now) {
            socket.send(&t.contents).map_err(|e| e.to_string())?;
        }
        while let Some(event) = session.poll_event() {
            match event {
                Event::Established(e) => {
                    negotiated = Some(e.keys.cipher);
                    let address = e
                        .push
                        .and_then(|p| p.ifconfig)
                        .ok_or("no ifconfig pushed")?
                        .address;
                    let ping = frame::icmp_echo(
                        address.octets(),
                        [10, 8, 0, 1],
                        0x4242,
                        1,
                        b"gateway-proto client",
                    );
                    session
                        .send_data(now, &ping[14..])
                        .map_err(|e| format!("send: {e:?}"))?;
                    sent_ping = true;
                }
                Event::Packet(p) if sent_ping && p.len() >= 28 && p[9] == 1 && p[20] == 0 => {
                    let from = [p[12], p[13], p[14], p[15]];
                    return Ok((negotiated.ok_or("packet before Established")?, from));
                }
                Event::Closed { reason } => return Err(format!("closed: {reason:?}")),
                _ => {}
            }
        }
        if session.poll_timeout().is_some_and(|t| t <= Instant::now()) {
            session.handle_timeout(Instant::now());
        }
        if let Ok(n) = socket.recv(&mut buf) {
            let _ = session.handle_datagram(Instant::now(), &buf[..n]);
        }
    }
    Err(format!(
        "no echo reply within 20 s (negotiated: {negotiated:?})"
    ))
}

#[test]
fn our_client_role_passes_traffic_through_a_stock_openvpn_server() {
    if !privilege::check("our_client_role_passes_traffic_through_a_stock_openvpn_server") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("gw-client-role-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pki = Pki::init(&dir.join("pki"), "Client role CA", "stock.example.test").unwrap();
    pki.issue_client("loadgen", None).unwrap();

    let mut lab = Lab::new();
    let client = lab.add_namespace("client").unwrap();
    let server = lab.add_namespace("server").unwrap();
    lab.veth(
        (&client, "eth0", Some("198.51.100.2/24")),
        (&server, "eth0", Some("198.51.100.1/24")),
    )
    .unwrap();
    let server_log = dir.join("server.log");
    spawn_stock_server(
        &mut lab,
        &server,
        &ServerFiles {
            ca_cert: &pki.ca_cert(),
            server_cert: &pki.server_cert(),
            server_key: &pki.server_key(),
            tls_crypt_key: &pki.tls_crypt_key(),
        },
        "198.51.100.1",
        &[
            "--data-ciphers",
            "AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305",
            "--keepalive",
            "10",
            "60",
        ],
        &server_log,
    )
    .unwrap();

    for cipher in [
        Cipher::Aes256Gcm,
        Cipher::Aes128Gcm,
        Cipher::ChaCha20Poly1305,
    ] {
        let (negotiated, from) = client
            .run_in(|| connect_and_ping(&pki, cipher))
            .unwrap()
            .unwrap_or_else(|e| panic!("{cipher}: {e}\nserver log:\n{}", read_log(&server_log)));
        assert_eq!(negotiated, cipher);
        assert_eq!(
            from,
            [10, 8, 0, 1],
            "{cipher}: the echo reply comes from the server's tunnel address"
        );
    }
    drop(lab);
    std::fs::remove_dir_all(&dir).unwrap();
}
