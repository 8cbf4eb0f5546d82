use super::*;

const MINIMAL: &str = r#"
[endpoint]
name = "corp-vpn"
[tls]
server_cert = "/etc/gateway/server.pem"
server_key = "/etc/gateway/server.key"
client_ca = "/etc/gateway/ca.pem"
[[target]]
interface = "eth1"
"#;

const FULL: &str = r#"
[endpoint]
name = "corp-vpn"
public_interface = "eth0"
listen = ["udp/443", "tcp/443"]
client_cidr = "10.200.0.0/22"
dns_servers = ["10.0.0.2"]
split_tunnel = true
session_timeout_hours = 12
login_banner = "Authorized use only"
[tls]
server_cert = "/etc/gateway/server.pem"
server_key = "/etc/gateway/server.key"
client_ca = "/etc/gateway/ca.pem"
crl = "/etc/gateway/crl.pem"
tls_crypt_key = "/etc/gateway/tc.key"
[[target]]
interface = "eth1"
[[route]]
destination = "10.0.0.0/16"
target = "eth1"
[[authorize]]
destination = "10.0.0.0/16"
groups = ["engineering"]
[[authorize]]
destination = "10.0.2.119/32"
groups = ["managers", "engineering"]
[[authorize]]
destination = "0.0.0.0/0"
all_users = true
[groups]
engineering = ["alice", "bob"]
managers = ["carol", "alice"]
[dataplane]
mode = "sockets"
workers = 2
pin = false
"#;

fn errors(text: &str) -> Vec<String> {
    Config::parse(text, "test.toml")
        .unwrap_err()
        .errors
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// `MINIMAL` with `from` replaced by `to` (which must occur).
fn with(base: &str, from: &str, to: &str) -> String {
    assert!(base.contains(from), "{from:?} not in the base config");
    base.replacen(from, to, 1)
}

#[test]
fn defaults_fill_everything_but_identity_and_pki() {
    let c = Config::parse(MINIMAL, "minimal").unwrap();
    assert_eq!(c.endpoint.name, "corp-vpn");
    assert_eq!(c.endpoint.public_interface, "eth0");
    assert_eq!(
        c.endpoint.listen,
        [Listen {
            transport: Transport::Udp,
            port: 443
        }]
    );
    assert_eq!(c.endpoint.client_cidr.to_string(), "10.200.0.0/22");
    assert!(!c.endpoint.split_tunnel, "AWS defaults to full tunnel");
    assert_eq!(c.endpoint.session_timeout, Duration::from_secs(24 * 3600));
    assert!(c.endpoint.disconnect_on_session_timeout);
    assert_eq!(
        (c.endpoint.hard_reset_rate, c.endpoint.hard_reset_burst),
        (10, 20)
    );
    assert_eq!(
        (c.endpoint.keepalive_interval, c.endpoint.keepalive_timeout),
        (10, 60)
    );
    assert_eq!(
        c.endpoint.rekey_interval,
        Duration::from_secs(3600),
        "OpenVPN's reneg-sec"
    );
    assert_eq!(c.admin.socket, Path::new("/run/gateway/admin.sock"));
    assert_eq!(
        c.dataplane,
        Dataplane {
            mode: DataplaneMode::Auto,
            workers: 0,
            pin: true,
            forward_guard: true,
        }
    );
    assert!(c.routes.is_empty() && c.authorization.is_empty() && c.groups.is_empty());
}

#[test]
fn a_full_configuration_is_typed_and_groups_are_numbered() {
    let c = Config::parse(FULL, "full").unwrap();
    assert_eq!(c.endpoint.listen.len(), 2);
    assert_eq!(c.endpoint.listen[1].to_string(), "tcp/443");
    assert_eq!(c.endpoint.dns_servers, [Ipv4Addr::new(10, 0, 0, 2)]);
    assert_eq!(c.endpoint.session_timeout, Duration::from_secs(12 * 3600));
    assert_eq!(
        c.tls.crl.as_deref(),
        Some(Path::new("/etc/gateway/crl.pem"))
    );
    assert_eq!(c.routes[0].destination.to_string(), "10.0.0.0/16");
    let eng = c.groups.id("engineering").unwrap();
    let mgr = c.groups.id("managers").unwrap();
    assert_ne!(eng, mgr);
    assert_eq!(c.groups.name(eng), Some("engineering"));
    assert_eq!(c.groups.of_common_name("alice"), [eng, mgr]);
    assert_eq!(c.groups.of_common_name("carol"), [mgr]);
    assert!(c.groups.of_common_name("mallory").is_empty());
    // One rule per group: the /32 rule names two groups.
    assert_eq!(c.authorization.len(), 4);
    assert_eq!(c.authorization[3].access, crate::policy::Access::AllUsers);
    assert_eq!(c.dataplane.mode, DataplaneMode::Sockets);
}

#[test]
fn every_error_names_its_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "name = \"corp-vpn\"",
            "name = \" \"",
            "endpoint.name: must not be empty",
        ),
        (
            "name = \"corp-vpn\"",
            "name = \"x\"\nclient_cidr = \"10.200.0.0/23\"",
            "endpoint.client_cidr: 10.200.0.0/23 is a /23",
        ),
        (
            "name = \"corp-vpn\"",
            "name = \"x\"\nclient_cidr = \"10.0.0.0/8\"",
            "the client CIDR must be /12 to /22",
        ),
        (
            "name = \"corp-vpn\"",
            "name = \"x\"\nclient_cidr = \"10.200.0.9/22\"",
            "has host bits set; the network is 10.200.0.0/22",
        ),
        (
            "name = \"corp-vpn\"",
            "name = \"x\"\nclient_cidr = \"banana\"",
            "endpoint.client_cidr: \"banana\" is not an IPv4 network",
        ),
        (
            "name = \"corp-vpn\"",
            "name = \"x\"\nlisten = [\"udp/8443\"]",
            "endpoint.listen[0]: port 8443 is not 443 or 1194",
        ),
        (
            "name = \"corp-vpn\"",
            "name = \"x\"\nlisten = [\"sctp/443\"]",
            "endpoint.listen[0]: \"sctp/443\" is not TRANSPORT/PORT",
        ),
        (
            "name = \"corp-vpn\"",
            "name = \"x\"\nlisten = [\"udp/443\", \"udp/443\"]",
            "endpoint.listen[1]: udp/443 is listed twice",
        ),
        (
            "name = \"corp-vpn\"",
            "name = \"x\"\nlisten = []",
            "endpoint.listen: must name at least one",
        ),
        (
            "name = \"corp-vpn\"",
            "name = \"x\"\ndns_servers = [\"1.1.1.1\", \"8.8.8.8\", \"9.9.9.9\"]",
            "endpoint.dns_servers: 3 servers given; at most 2",
        ),
        (
            "name = \"corp-vpn\"",
            "name = \"x\"\ndns_servers = [\"dns.local\"]",
            "endpoint.dns_servers[0]: \"dns.local\" is not an IPv4 address",
        ),
        (
            "name = \"corp-vpn\"",
            "name = \"x\"\nsession_timeout_hours = 9",
            "endpoint.session_timeout_hours: 9 is not one of 8, 10, 12, 24",
        ),
        (
            "name = \"corp-vpn\"",
            "name = \"x\"\npublic_interface = \"eth0/1\"",
            "endpoint.public_interface: \"eth0/1\" is not a network interface name",
        ),
        (
            "interface = \"eth1\"",
            "interface = \"eth0\"",
            "target[0].interface: \"eth0\" is the public interface",
        ),
        (
            "server_key = \"/etc/gateway/server.key\"",
            "server_key = \"\"",
            "tls.server_key: must name a file",
        ),
        (
            "[dataplane]\nmode = \"sockets\"",
            "[dataplane]\nmode = \"dpdk\"",
            "dataplane.mode: \"dpdk\" is not one of",
        ),
        (
            "workers = 2",
            "workers = 300",
            "dataplane.workers: 300 workers; at most 256, one per queue of the TAP device",
        ),
        (
            "name = \"corp-vpn\"",
            "name = \"x\"\nreset_replies_period_secs = 0",
            "endpoint.reset_replies_period_secs: 0 is not 1 to 3600 seconds",
        ),
        (
            "name = \"corp-vpn\"",
            "name = \"x\"\nkeepalive_interval_secs = 0",
            "endpoint.keepalive_interval_secs: 0 is not 1 to 3600 seconds",
        ),
        (
            "name = \"corp-vpn\"",
            "name = \"x\"\nkeepalive_interval_secs = 10\nkeepalive_timeout_secs = 15",
            "endpoint.keepalive_timeout_secs: 15 must be at least twice endpoint.keepalive_interval_secs (10)",
        ),
        (
            "name = \"corp-vpn\"",
            "name = \"x\"\nrekey_interval_secs = 2",
            "endpoint.rekey_interval_secs: 2 is not 0 (never) or 4 to 86400 seconds",
        ),
        (
            "[dataplane]\nmode = \"sockets\"",
            "[admin]\nsocket = \"admin.sock\"\n[dataplane]\nmode = \"sockets\"",
            "admin.socket: \"admin.sock\" is not an absolute path to a file",
        ),
    ];
    for (from, to, expected) in cases {
        let base = if MINIMAL.contains(from) {
            MINIMAL
        } else {
            FULL
        };
        let errs = errors(&with(base, from, to));
        assert!(
            errs.iter().any(|e| e.contains(expected)),
            "{to:?}: expected an error containing {expected:?}, got {errs:?}"
        );
    }
}

#[test]
fn routes_and_rules_are_checked_against_the_rest() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "destination = \"10.0.0.0/16\"\ntarget = \"eth1\"",
            "destination = \"10.200.0.0/16\"\ntarget = \"eth1\"",
            "route[0].destination: 10.200.0.0/16 overlaps endpoint.client_cidr 10.200.0.0/22",
        ),
        (
            "destination = \"10.0.0.0/16\"\ntarget = \"eth1\"",
            "destination = \"10.0.0.0/16\"\ntarget = \"eth7\"",
            "route[0].target: \"eth7\" is not the interface of any [[target]]",
        ),
        (
            "destination = \"10.0.0.0/16\"\ntarget = \"eth1\"",
            "destination = \"10.0.0.0/16\"\ntarget = \"eth1\"\n[[route]]\ndestination = \"10.0.0.0/16\"\ntarget = \"eth1\"",
            "route[1].destination: 10.0.0.0/16 already has a route",
        ),
        (
            "groups = [\"engineering\"]",
            "groups = [\"enginering\"]",
            "authorize[0].groups: group \"enginering\" has no members in [groups]",
        ),
        (
            "groups = [\"engineering\"]",
            "groups = []",
            "authorize[0].groups: must name at least one group",
        ),
        (
            "groups = [\"engineering\"]",
            "groups = [\"engineering\"]\nall_users = true",
            "authorize[0]: give either groups or all_users = true, not both",
        ),
        (
            "all_users = true",
            "all_users = false",
            "authorize[2]: give groups",
        ),
        (
            "destination = \"0.0.0.0/0\"",
            "destination = \"0.0.0.0/33\"",
            "authorize[2].destination: \"0.0.0.0/33\" is not an IPv4 network",
        ),
    ];
    for (from, to, expected) in cases {
        let errs = errors(&with(FULL, from, to));
        assert!(
            errs.iter().any(|e| e.contains(expected)),
            "{to:?}: expected an error containing {expected:?}, got {errs:?}"
        );
    }
    let both = with(
        FULL,
        "tls_crypt_key = \"/etc/gateway/tc.key\"",
        "tls_crypt_key = \"/etc/gateway/tc.key\"\ntls_auth_key = \"/etc/gateway/ta.key\"",
    );
    assert!(
        errors(&both)
            .iter()
            .any(|e| e.contains("tls.tls_auth_key: give tls_crypt_key or tls_auth_key, not both"))
    );
    let md5 = with(
        MINIMAL,
        "client_ca = \"/etc/gateway/ca.pem\"",
        "client_ca = \"/etc/gateway/ca.pem\"\ntls_auth_key = \"/etc/gateway/ta.key\"\ntls_auth_digest = \"MD5\"",
    );
    assert!(
        errors(&md5)
            .iter()
            .any(|e| e.contains("tls.tls_auth_digest: \"MD5\" is not one of SHA1, SHA256, SHA512"))
    );
    let sha1 = md5.replace("\"MD5\"", "\"sha1\"");
    let c = Config::parse(&sha1, "sha1").unwrap();
    assert_eq!(
        c.tls.tls_auth,
        Some((PathBuf::from("/etc/gateway/ta.key"), AuthDigest::Sha1))
    );
    // Groups may come from certificates instead: then an unlisted group is fine.
    let ou = with(
        &with(FULL, "groups = [\"engineering\"]", "groups = [\"from-ou\"]"),
        "tls_crypt_key = \"/etc/gateway/tc.key\"",
        "tls_crypt_key = \"/etc/gateway/tc.key\"\ngroups_from_certificate_ou = true",
    );
    let c = Config::parse(&ou, "ou").unwrap();
    assert!(c.groups.id("from-ou").is_some());
}

#[test]
fn all_problems_are_reported_at_once_and_syntax_errors_point_at_the_line() {
    let text = with(
        &with(
            MINIMAL,
            "name = \"corp-vpn\"",
            "name = \"\"\nclient_cidr = \"10.0.0.0/30\"\nsession_timeout_hours = 3",
        ),
        "interface = \"eth1\"",
        "interface = \"\"",
    );
    let err = Config::parse(&text, "bad.toml").unwrap_err();
    assert_eq!(err.errors.len(), 4, "{err}");
    let shown = err.to_string();
    assert!(shown.starts_with("bad.toml: 4 problems"), "{shown}");

    let unknown = errors(&with(
        MINIMAL,
        "name = \"corp-vpn\"",
        "name = \"x\"\nclientcidr = \"10.200.0.0/22\"",
    ));
    assert!(
        unknown[0].contains("unknown field `clientcidr`"),
        "{unknown:?}"
    );
    assert!(unknown[0].contains("line"), "{unknown:?}");
    let missing = errors("[endpoint]\nname = \"x\"\n");
    assert!(missing[0].contains("tls"), "{missing:?}");
    let not_toml = errors("[endpoint\n");
    assert!(not_toml[0].contains("line 1"), "{not_toml:?}");
}

#[test]
fn system_checks_name_missing_files_and_interfaces() {
    let dir = std::env::temp_dir().join(format!("gw-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["server.pem", "server.key", "ca.pem"] {
        std::fs::write(dir.join(f), "x").unwrap();
    }
    let text = MINIMAL
        .replace("/etc/gateway", dir.to_str().unwrap())
        .replace("interface = \"eth1\"", "interface = \"gw-no-such-if\"")
        + "";
    let text = with(
        &text,
        "name = \"corp-vpn\"",
        "name = \"x\"\npublic_interface = \"lo\"",
    );
    let c = Config::parse(&text, "sys").unwrap();
    let errs = c.check_system().unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].key, "target[0].interface");
    std::fs::remove_file(dir.join("ca.pem")).unwrap();
    let errs = c.check_system().unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.key == "tls.client_ca" && e.message.contains("cannot open")),
        "{errs:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn loading_a_missing_file_says_so() {
    let err = Config::load(Path::new("/nonexistent/gateway.toml")).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/gateway.toml"),
        "{err}"
    );
    assert!(err.to_string().contains("cannot read the file"), "{err}");
}

/// `FULL` with a group that sorts before every other, its rule, and without managers.
const RELOADED: &str = r#"
[endpoint]
name = "corp-vpn"
[tls]
server_cert = "/etc/gateway/server.pem"
server_key = "/etc/gateway/server.key"
client_ca = "/etc/gateway/ca.pem"
[[target]]
interface = "eth1"
[[authorize]]
destination = "10.0.0.0/16"
groups = ["engineering"]
[[authorize]]
destination = "10.9.0.0/16"
groups = ["auditors"]
[groups]
auditors = ["dave"]
engineering = ["alice", "bob"]
"#;

#[test]
fn a_reloaded_configuration_keeps_the_numbers_of_the_groups_in_force() {
    let running = Config::parse(FULL, "full").unwrap();
    let mut fresh = Config::parse(RELOADED, "reloaded").unwrap();
    // Parsed alone, the new group takes engineering's number: a live engineering
    // member's bitmap would then select the auditors' rules.
    assert_eq!(
        fresh.groups.id("auditors"),
        running.groups.id("engineering")
    );
    fresh.keep_group_ids(&running.groups).unwrap();
    let eng = running.groups.id("engineering").unwrap();
    let managers = running.groups.id("managers").unwrap();
    assert_eq!(fresh.groups.id("engineering"), Some(eng));
    // The new group takes the lowest free number: managers', who are gone (the reload
    // takes the number from live managers before the new rules use it).
    let auditors = fresh.groups.id("auditors").unwrap();
    assert_eq!(auditors, managers);
    assert_eq!(fresh.groups.id("managers"), None);
    assert_eq!(fresh.groups.len(), 2);
    assert_eq!(fresh.groups.of_common_name("alice"), [eng]);
    assert_eq!(fresh.groups.of_common_name("dave"), [auditors]);
    // The rules follow the numbers.
    let access: Vec<_> = fresh.authorization.iter().map(|r| r.access).collect();
    assert_eq!(
        access,
        [
            crate::policy::Access::Group(eng),
            crate::policy::Access::Group(auditors)
        ]
    );
    // Reloading the same file again changes nothing.
    let mut again = Config::parse(RELOADED, "reloaded").unwrap();
    again.keep_group_ids(&fresh.groups).unwrap();
    assert_eq!(
        (again.groups, again.authorization),
        (fresh.groups, fresh.authorization)
    );
}
