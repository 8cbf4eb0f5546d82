//! The files `gateway pki` and `gateway export-client` make work with stock OpenVPN 2.6
//! on both ends: a client importing the exported profile reaches a stock server through
//! the tunnel, and a revoked client is refused by the server's CRL check.

use std::{path::Path, time::Duration};

use gateway::{
    config::Config,
    export::{ProfileInputs, client_profile},
    pki::Pki,
};
use gateway_tests::{
    config::LabConfig,
    lab::{Lab, Netns, ProcessId, read_log, wait_until},
    openvpn::{ServerFiles, spawn_stock_server},
    privilege,
};

const SERVER_NAME: &str = "vpn.example.test";

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn start_client(lab: &mut Lab, ns: &Netns, pki: &Pki, name: &str, log: &Path) -> ProcessId {
    let (cert, key) = (pki.client_cert(name), pki.client_key(name));
    lab.spawn(
        ns,
        &[
            "openvpn",
            "--client",
            "--dev",
            "tun",
            "--proto",
            "udp",
            "--remote",
            "198.51.100.1",
            "1194",
            "--nobind",
            "--ca",
            path(&pki.ca_cert()),
            "--cert",
            path(&cert),
            "--key",
            path(&key),
            "--tls-crypt",
            path(&pki.tls_crypt_key()),
            "--remote-cert-tls",
            "server",
            "--verify-x509-name",
            SERVER_NAME,
            "name",
            "--connect-retry-max",
            "1",
            "--verb",
            "3",
        ],
        Some(log),
    )
    .unwrap()
}

#[test]
fn stock_openvpn_accepts_our_pki_and_refuses_a_revoked_client() {
    if !privilege::check("stock_openvpn_accepts_our_pki_and_refuses_a_revoked_client") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("gw-interop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pki = Pki::init(&dir.join("pki"), "Interop CA", SERVER_NAME).unwrap();
    pki.issue_client("alice", Some("engineering")).unwrap();
    pki.issue_client("bob", None).unwrap();
    pki.revoke("bob").unwrap();

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
            "--crl-verify",
            path(&pki.crl()),
            "--remote-cert-tls",
            "client",
            "--keepalive",
            "1",
            "10",
        ],
        &server_log,
    )
    .unwrap_or_else(|e| panic!("{e:#}"));

    // alice imports the profile exported from the gateway's configuration.
    // The lab's configuration as far as a profile needs it: no CRL, no route, and all
    // traffic redirected (split_tunnel off, the gateway's default).
    let config = Config::parse(
        &LabConfig::new("interop", &dir.join("pki"))
            .split_tunnel(false)
            .without_crl()
            .without_routes()
            .to_toml(),
        "interop",
    )
    .unwrap();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    let (cert, key) = (
        read(&pki.client_cert("alice")),
        read(&pki.client_key("alice")),
    );
    let profile = client_profile(
        &config,
        &ProfileInputs {
            remote_hosts: &config.endpoint.remote_hosts,
            ca_pem: &read(&pki.ca_cert()),
            server_name: SERVER_NAME,
            tls_crypt_key: Some(&read(&pki.tls_crypt_key())),
            tls_auth: None,
            client: Some((&cert, &key)),
        },
    )
    .unwrap();
    let profile_path = dir.join("alice.ovpn");
    std::fs::write(&profile_path, profile).unwrap();
    let alice_log = dir.join("alice.log");
    lab.spawn(
        &client,
        &[
            "openvpn",
            "--config",
            path(&profile_path),
            "--connect-retry-max",
            "1",
        ],
        Some(&alice_log),
    )
    .unwrap();
    wait_until("alice's tunnel", Duration::from_secs(20), || {
        read_log(&alice_log).contains("Initialization Sequence Completed")
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nclient:\n{}\nserver:\n{}",
            read_log(&alice_log),
            read_log(&server_log)
        )
    });
    client
        .exec(&["ping", "-c", "2", "-W", "2", "10.8.0.1"])
        .unwrap_or_else(|e| panic!("{e:#}\n{}", read_log(&alice_log)));
    let log = read_log(&alice_log);
    assert!(
        log.contains("AES-256-GCM"),
        "data channel cipher not negotiated as expected:\n{log}"
    );

    let bob_log = dir.join("bob.log");
    let bob = start_client(&mut lab, &client, &pki, "bob", &bob_log);
    wait_until("the server to refuse bob", Duration::from_secs(20), || {
        read_log(&server_log).contains("certificate revoked")
            || read_log(&server_log).contains("CRL CHECK FAILED")
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nserver:\n{}\nbob:\n{}",
            read_log(&server_log),
            read_log(&bob_log)
        )
    });
    assert!(!read_log(&bob_log).contains("Initialization Sequence Completed"));
    let _ = lab.stop(bob);
    drop(lab);
    std::fs::remove_dir_all(&dir).unwrap();
}
