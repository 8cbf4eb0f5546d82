//! `gateway_tests::config::LabConfig` against the gateway's own parser: the default lab
//! configuration parses, each setter shows up in the parsed `Config`, and the PKI files it
//! names are where `gateway::pki::Pki` puts them. No privileges needed.

use std::{path::Path, time::Duration};

use gateway::{
    config::{AuthDigest, Config, DataplaneMode, Listen, Route, Target, Transport},
    pki::Pki,
    policy::Access,
};
use gateway_tests::{config::LabConfig, lab::Topology};

fn lab() -> LabConfig {
    LabConfig::new("lab", Path::new("/pki"))
}

fn parse(config: &LabConfig) -> Config {
    let text = config.to_toml();
    Config::parse(&text, "lab.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn the_default_lab_configuration_parses() {
    let c = parse(&lab());
    let e = &c.endpoint;
    assert_eq!(e.name, "lab");
    assert_eq!(e.public_interface, "eth0");
    assert_eq!(
        e.listen,
        [Listen {
            transport: Transport::Udp,
            port: 1194
        }]
    );
    assert_eq!(e.client_cidr.to_string(), "10.200.0.0/22");
    assert!(e.split_tunnel);
    assert_eq!(e.remote_hosts, [Topology::GATEWAY_PUBLIC_ADDR]);
    assert_eq!(e.login_banner, None);
    assert_eq!(c.tls.server_cert, Path::new("/pki/server.pem"));
    assert_eq!(c.tls.server_key, Path::new("/pki/server.key"));
    assert_eq!(c.tls.client_ca, Path::new("/pki/ca.pem"));
    assert_eq!(c.tls.crl.as_deref(), Some(Path::new("/pki/crl.pem")));
    assert_eq!(
        c.tls.tls_crypt_key.as_deref(),
        Some(Path::new("/pki/tc.key"))
    );
    assert_eq!(c.tls.tls_auth, None);
    assert!(!c.tls.groups_from_certificate_ou);
    assert_eq!(
        c.targets,
        [Target {
            interface: "eth1".into()
        }]
    );
    assert_eq!(
        c.routes,
        [Route {
            destination: "10.10.0.0/24".parse().unwrap(),
            target: "eth1".into()
        }]
    );
    assert!(c.authorization.is_empty());
    assert!(c.groups.is_empty());
    // What the builder leaves out keeps the gateway's defaults.
    let defaults = Config::parse(
        "[endpoint]\nname = \"lab\"\n[tls]\nserver_cert = \"a\"\nserver_key = \"b\"\nclient_ca = \"c\"\n\
         [[target]]\ninterface = \"eth1\"\n",
        "defaults.toml",
    )
    .unwrap();
    assert_eq!(c.dataplane, defaults.dataplane);
    assert_eq!(c.admin, defaults.admin);
    assert_eq!(e.session_timeout, defaults.endpoint.session_timeout);
    assert_eq!(e.keepalive_interval, defaults.endpoint.keepalive_interval);
    assert_eq!(e.keepalive_timeout, defaults.endpoint.keepalive_timeout);
    assert_eq!(e.hard_reset_rate, defaults.endpoint.hard_reset_rate);
    assert_eq!(e.reset_replies, defaults.endpoint.reset_replies);
}

#[test]
fn every_endpoint_setter_shows_up_in_the_parsed_config() {
    let c = parse(
        &lab()
            .public_interface("ens5")
            .listen(["udp/443", "tcp/443"])
            .client_cidr("10.200.0.0/16")
            .split_tunnel(false)
            .remote_hosts(["vpn.example.test", "192.0.2.1"])
            .login_banner("Authorized use only, \"please\"\nsecond line")
            .session_timeout_hours(8)
            .keepalive(1, 3)
            .hard_reset_rate(0)
            .reset_replies(0)
            .rekey_interval_secs(5),
    );
    let e = &c.endpoint;
    assert_eq!(e.public_interface, "ens5");
    let listen: Vec<String> = e.listen.iter().map(ToString::to_string).collect();
    assert_eq!(listen, ["udp/443", "tcp/443"]);
    assert_eq!(e.client_cidr.to_string(), "10.200.0.0/16");
    assert!(!e.split_tunnel);
    assert_eq!(e.remote_hosts, ["vpn.example.test", "192.0.2.1"]);
    assert_eq!(
        e.login_banner.as_deref(),
        Some("Authorized use only, \"please\"\nsecond line")
    );
    assert_eq!(e.session_timeout, Duration::from_secs(8 * 3600));
    assert_eq!((e.keepalive_interval, e.keepalive_timeout), (1, 3));
    assert_eq!((e.hard_reset_rate, e.reset_replies), (0, 0));
    assert_eq!(e.rekey_interval, Duration::from_secs(5));
}

#[test]
fn every_tls_setter_shows_up_in_the_parsed_config() {
    let c = parse(
        &lab()
            .tls_files("/x/cert.pem", "/x/key.pem", "/x/ca.pem")
            .crl("/x/crl.pem")
            .tls_crypt_key("/x/tc.key")
            .groups_from_certificate_ou(true),
    );
    assert_eq!(c.tls.server_cert, Path::new("/x/cert.pem"));
    assert_eq!(c.tls.server_key, Path::new("/x/key.pem"));
    assert_eq!(c.tls.client_ca, Path::new("/x/ca.pem"));
    assert_eq!(c.tls.crl.as_deref(), Some(Path::new("/x/crl.pem")));
    assert_eq!(c.tls.tls_crypt_key.as_deref(), Some(Path::new("/x/tc.key")));
    assert!(c.tls.groups_from_certificate_ou);

    let c = parse(&lab().without_crl().tls_auth_key("/x/ta.key"));
    assert_eq!(c.tls.crl, None);
    assert_eq!(c.tls.tls_crypt_key, None);
    assert_eq!(
        c.tls.tls_auth,
        Some(("/x/ta.key".into(), AuthDigest::Sha256))
    );

    let c = parse(&lab().without_wrap());
    assert_eq!((c.tls.tls_crypt_key, c.tls.tls_auth), (None, None));
}

#[test]
fn targets_routes_rules_and_groups_show_up_in_the_parsed_config() {
    let c = parse(
        &lab()
            .targets(["eth1", "eth2"])
            .route("10.20.0.0/16", "eth2")
            .authorize_all_users("10.10.0.10/32")
            .authorize_groups("10.20.0.0/16", ["eng", "ops"])
            .group("eng", ["alice", "bob"])
            .group("ops", ["carol"]),
    );
    let targets: Vec<&str> = c.targets.iter().map(|t| t.interface.as_str()).collect();
    assert_eq!(targets, ["eth1", "eth2"]);
    let routes: Vec<String> = c
        .routes
        .iter()
        .map(|r| format!("{} {}", r.destination, r.target))
        .collect();
    assert_eq!(routes, ["10.10.0.0/24 eth1", "10.20.0.0/16 eth2"]);
    let (eng, ops) = (c.groups.id("eng").unwrap(), c.groups.id("ops").unwrap());
    assert_eq!(c.groups.of_common_name("alice"), [eng]);
    assert_eq!(c.groups.of_common_name("bob"), [eng]);
    assert_eq!(c.groups.of_common_name("carol"), [ops]);
    let rules: Vec<(String, Access)> = c
        .authorization
        .iter()
        .map(|r| (r.destination.to_string(), r.access))
        .collect();
    assert_eq!(
        rules,
        [
            ("10.10.0.10/32".into(), Access::AllUsers),
            ("10.20.0.0/16".into(), Access::Group(eng)),
            ("10.20.0.0/16".into(), Access::Group(ops)),
        ]
    );

    let c = parse(
        &lab()
            .authorize_all_users("10.10.0.10/32")
            .without_authorizations()
            .authorize_all_users("10.10.0.0/24"),
    );
    assert_eq!(c.authorization.len(), 1);
    assert_eq!(c.authorization[0].destination.to_string(), "10.10.0.0/24");

    let c = parse(&lab().without_routes());
    assert!(c.routes.is_empty());
}

#[test]
fn dataplane_and_admin_setters_show_up_in_the_parsed_config() {
    let c = parse(
        &lab()
            .dataplane_mode("sockets")
            .dataplane_workers(2)
            .admin_socket("/tmp/lab \"x\"/admin.sock"),
    );
    assert_eq!(c.dataplane.mode, DataplaneMode::Sockets);
    assert_eq!(c.dataplane.workers, 2);
    assert_eq!(c.admin.socket, Path::new("/tmp/lab \"x\"/admin.sock"));
    let c = parse(&lab().dataplane_mode("afxdp"));
    assert_eq!(c.dataplane.mode, DataplaneMode::AfXdp);
}

#[test]
fn the_pki_files_are_where_gateway_pki_puts_them() {
    let dir = std::env::temp_dir().join(format!("gw-lab-config-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pki = Pki::init(&dir, "Lab CA", "server").unwrap();
    let c = parse(&LabConfig::new("lab", &dir));
    assert_eq!(c.tls.server_cert, pki.server_cert());
    assert_eq!(c.tls.server_key, pki.server_key());
    assert_eq!(c.tls.client_ca, pki.ca_cert());
    assert_eq!(c.tls.crl, Some(pki.crl()));
    assert_eq!(c.tls.tls_crypt_key, Some(pki.tls_crypt_key()));
    for file in [
        pki.server_cert(),
        pki.server_key(),
        pki.ca_cert(),
        pki.crl(),
    ] {
        assert!(file.exists(), "{}", file.display());
    }
    assert!(pki.tls_crypt_key().exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
