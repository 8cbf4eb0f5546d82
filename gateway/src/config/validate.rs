//! Turns the file as written into a typed `Config`, collecting every problem with the
//! key it is about. AWS Client VPN's rules apply where it has them (client CIDR /12 to
//! /22, ports 443 and 1194, at most 2 DNS servers, session timeouts of 8, 10, 12 or 24
//! hours, banners of at most 1,400 characters).

use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf, time::Duration};

use gateway_ebpf_common::{MAX_AUTHZ_RULES, MAX_GROUPS, MAX_ROUTES};
use ipnet::Ipv4Net;

use super::{
    Admin, AuthDigest, Config, ConfigError, Dataplane, DataplaneMode, Endpoint, ExpiredCrl, Groups,
    Listen, Process, Route, Target, Tls, Transport,
    raw::{RawAuthorize, RawConfig, RawEndpoint, RawTls},
};
use crate::policy::{Access, AuthorizationRule, GroupId};

const STANDARD_PORTS: [u16; 2] = [443, 1194];
const SESSION_TIMEOUT_HOURS: [u32; 4] = [8, 10, 12, 24];
const MAX_DNS_SERVERS: usize = 2;
const MAX_BANNER_CHARS: usize = 1400;
/// One worker per TAP queue; Linux gives a TAP device at most 256 queues.
/// Shortest and longest rekey interval: below a few seconds a rekey would overlap the
/// previous one's transition; above the longest session (24 h) it never happens.
const MIN_REKEY_SECS: u32 = 4;
const MAX_REKEY_SECS: u32 = 24 * 3600;
/// Most TCP connections: each costs two descriptors' worth of kernel state and about
/// 8 KiB of buffers.
const MAX_TCP_CONNECTIONS: u32 = 100_000;
const MAX_WORKERS: usize = crate::dataplane::tap::MAX_QUEUES;
const MAX_KEEPALIVE_SECS: u32 = 3600;

/// Collects errors while validating.
#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            key: key.into(),
            message: message.into(),
        });
    }
}

pub fn validate(raw: RawConfig) -> Result<Config, Vec<ConfigError>> {
    let mut p = Problems::default();
    let endpoint = endpoint(&raw.endpoint, &mut p);
    let tls = tls(&raw.tls, &mut p);
    let targets = targets(&raw, &mut p);
    let routes = routes(&raw, &targets, &mut p);
    if let Some(endpoint) = &endpoint {
        for (i, route) in routes.iter().enumerate() {
            if overlaps(route.destination, endpoint.client_cidr) {
                p.add(
                    format!("route[{i}].destination"),
                    format!(
                        "{} overlaps endpoint.client_cidr {}; client addresses must not overlap routed networks",
                        route.destination, endpoint.client_cidr
                    ),
                );
            }
        }
    }
    let groups = groups(&raw, &mut p);
    let authorization = authorization(&raw, &groups, &mut p);
    let dataplane = dataplane(&raw, &mut p);
    let admin = admin(&raw, &mut p);
    let process = process(&raw, &mut p);
    match (endpoint, admin, p.0.is_empty()) {
        (Some(endpoint), Some(admin), true) => Ok(Config {
            endpoint,
            tls,
            targets,
            routes,
            authorization,
            groups,
            dataplane,
            admin,
            process,
        }),
        _ => Err(p.0),
    }
}

/// A network with its host bits clear, or why not.
fn network(text: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = text
        .parse()
        .map_err(|_| format!("{text:?} is not an IPv4 network like 10.0.0.0/16"))?;
    if net.trunc() != net {
        return Err(format!(
            "{text:?} has host bits set; the network is {}",
            net.trunc()
        ));
    }
    Ok(net)
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn endpoint(raw: &RawEndpoint, p: &mut Problems) -> Option<Endpoint> {
    if raw.name.trim().is_empty() {
        p.add("endpoint.name", "must not be empty");
    }
    interface_name("endpoint.public_interface", &raw.public_interface, p);
    let mut listen = Vec::new();
    if raw.listen.is_empty() {
        p.add(
            "endpoint.listen",
            "must name at least one of udp/443, tcp/443, udp/1194, tcp/1194",
        );
    }
    for (i, entry) in raw.listen.iter().enumerate() {
        let key = format!("endpoint.listen[{i}]");
        match parse_listen(entry) {
            Ok(l) if listen.contains(&l) => p.add(key, format!("{l} is listed twice")),
            Ok(l) if !STANDARD_PORTS.contains(&l.port) && !raw.allow_nonstandard_ports => p.add(
                key,
                format!(
                    "port {} is not 443 or 1194 (the ports AWS Client VPN uses); set endpoint.allow_nonstandard_ports = true to allow it",
                    l.port
                ),
            ),
            Ok(l) => listen.push(l),
            Err(e) => p.add(key, e),
        }
    }
    let client_cidr = match network(&raw.client_cidr) {
        Ok(net) if !(12..=22).contains(&net.prefix_len()) => {
            p.add(
                "endpoint.client_cidr",
                format!(
                    "{net} is a /{}; the client CIDR must be /12 to /22 (as in AWS Client VPN)",
                    net.prefix_len()
                ),
            );
            None
        }
        Ok(net) => Some(net),
        Err(e) => {
            p.add("endpoint.client_cidr", e);
            None
        }
    };
    if raw.dns_servers.len() > MAX_DNS_SERVERS {
        p.add(
            "endpoint.dns_servers",
            format!(
                "{} servers given; at most {MAX_DNS_SERVERS}",
                raw.dns_servers.len()
            ),
        );
    }
    let mut dns_servers = Vec::new();
    for (i, s) in raw.dns_servers.iter().enumerate() {
        match s.parse::<Ipv4Addr>() {
            Ok(a) => dns_servers.push(a),
            Err(_) => p.add(
                format!("endpoint.dns_servers[{i}]"),
                format!("{s:?} is not an IPv4 address"),
            ),
        }
    }
    if !SESSION_TIMEOUT_HOURS.contains(&raw.session_timeout_hours) {
        p.add(
            "endpoint.session_timeout_hours",
            format!("{} is not one of 8, 10, 12, 24", raw.session_timeout_hours),
        );
    }
    if let Some(banner) = &raw.login_banner
        && banner.chars().count() > MAX_BANNER_CHARS
    {
        p.add(
            "endpoint.login_banner",
            format!(
                "{} characters; at most {MAX_BANNER_CHARS}",
                banner.chars().count()
            ),
        );
    }
    if raw.hard_reset_rate > 0 && raw.hard_reset_burst == 0 {
        p.add(
            "endpoint.hard_reset_burst",
            "must be at least 1 when endpoint.hard_reset_rate is set",
        );
    }
    if !(1..=3600).contains(&raw.reset_replies_period_secs) {
        p.add(
            "endpoint.reset_replies_period_secs",
            format!("{} is not 1 to 3600 seconds", raw.reset_replies_period_secs),
        );
    }
    if !(1..=MAX_KEEPALIVE_SECS).contains(&raw.keepalive_interval_secs) {
        p.add(
            "endpoint.keepalive_interval_secs",
            format!(
                "{} is not 1 to {MAX_KEEPALIVE_SECS} seconds",
                raw.keepalive_interval_secs
            ),
        );
    } else if raw.keepalive_timeout_secs < 2 * raw.keepalive_interval_secs
        || raw.keepalive_timeout_secs > MAX_KEEPALIVE_SECS
    {
        p.add(
            "endpoint.keepalive_timeout_secs",
            format!(
                "{} must be at least twice endpoint.keepalive_interval_secs ({}) and at most {MAX_KEEPALIVE_SECS}",
                raw.keepalive_timeout_secs, raw.keepalive_interval_secs
            ),
        );
    }
    if raw.rekey_interval_secs != 0
        && !(MIN_REKEY_SECS..=MAX_REKEY_SECS).contains(&raw.rekey_interval_secs)
    {
        p.add(
            "endpoint.rekey_interval_secs",
            format!(
                "{} is not 0 (never) or {MIN_REKEY_SECS} to {MAX_REKEY_SECS} seconds",
                raw.rekey_interval_secs
            ),
        );
    }
    if !(1..=MAX_TCP_CONNECTIONS).contains(&raw.max_tcp_connections) {
        p.add(
            "endpoint.max_tcp_connections",
            format!(
                "{} is not 1 to {MAX_TCP_CONNECTIONS}",
                raw.max_tcp_connections
            ),
        );
    }
    if raw.max_tcp_connections_per_source == 0
        || raw.max_tcp_connections_per_source > raw.max_tcp_connections
    {
        p.add(
            "endpoint.max_tcp_connections_per_source",
            format!(
                "{} is not 1 to endpoint.max_tcp_connections ({})",
                raw.max_tcp_connections_per_source, raw.max_tcp_connections
            ),
        );
    }
    for (i, host) in raw.remote_hosts.iter().enumerate() {
        if host.is_empty()
            || host.len() > 253
            || host.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            p.add(
                format!("endpoint.remote_hosts[{i}]"),
                format!("{host:?} is not a host name or address"),
            );
        }
    }
    Some(Endpoint {
        name: raw.name.trim().to_string(),
        public_interface: raw.public_interface.clone(),
        listen,
        client_cidr: client_cidr?,
        dns_servers,
        split_tunnel: raw.split_tunnel,
        session_timeout: Duration::from_secs(u64::from(raw.session_timeout_hours) * 3600),
        disconnect_on_session_timeout: raw.disconnect_on_session_timeout,
        login_banner: raw.login_banner.clone(),
        client_to_client: raw.client_to_client,
        remote_hosts: raw.remote_hosts.clone(),
        hard_reset_rate: raw.hard_reset_rate,
        hard_reset_burst: raw.hard_reset_burst,
        reset_replies: raw.reset_replies,
        reset_replies_period: Duration::from_secs(u64::from(raw.reset_replies_period_secs)),
        keepalive_interval: raw.keepalive_interval_secs,
        rekey_interval: Duration::from_secs(u64::from(raw.rekey_interval_secs)),
        max_tcp_connections: raw.max_tcp_connections as usize,
        max_tcp_connections_per_source: raw.max_tcp_connections_per_source as usize,
        max_sessions_per_identity: raw.max_sessions_per_identity as usize,
        keepalive_timeout: raw.keepalive_timeout_secs,
    })
}

fn parse_listen(text: &str) -> Result<Listen, String> {
    let bad = || format!("{text:?} is not TRANSPORT/PORT like udp/443 or tcp/1194");
    let (transport, port) = text.split_once('/').ok_or_else(bad)?;
    let transport = match transport {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        _ => return Err(bad()),
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    Ok(Listen { transport, port })
}

/// Linux interface names: 1 to 15 bytes, no '/', ':' or whitespace.
fn interface_name(key: &str, name: &str, p: &mut Problems) {
    if name.is_empty()
        || name.len() > 15
        || name.contains(['/', ':'])
        || name.chars().any(char::is_whitespace)
    {
        p.add(key, format!("{name:?} is not a network interface name"));
    }
}

fn tls(raw: &RawTls, p: &mut Problems) -> Tls {
    let path = |key: &str, value: &str, p: &mut Problems| {
        if value.trim().is_empty() {
            p.add(key, "must name a file");
        }
        PathBuf::from(value)
    };
    Tls {
        server_cert: path("tls.server_cert", &raw.server_cert, p),
        server_key: path("tls.server_key", &raw.server_key, p),
        client_ca: path("tls.client_ca", &raw.client_ca, p),
        crl: raw.crl.as_deref().map(|v| path("tls.crl", v, p)),
        tls_crypt_key: raw
            .tls_crypt_key
            .as_deref()
            .map(|v| path("tls.tls_crypt_key", v, p)),
        tls_auth: tls_auth(raw, p),
        groups_from_certificate_ou: raw.groups_from_certificate_ou,
        expired_crl: match raw.expired_crl.as_str() {
            "refuse" => ExpiredCrl::Refuse,
            "warn" => ExpiredCrl::Warn,
            other => {
                p.add(
                    "tls.expired_crl",
                    format!("{other:?} is not one of \"refuse\", \"warn\""),
                );
                ExpiredCrl::Refuse
            }
        },
        require_client_eku: raw.require_client_eku,
    }
}

fn tls_auth(raw: &RawTls, p: &mut Problems) -> Option<(PathBuf, AuthDigest)> {
    let key = raw.tls_auth_key.as_deref()?;
    if raw.tls_crypt_key.is_some() {
        p.add(
            "tls.tls_auth_key",
            "give tls_crypt_key or tls_auth_key, not both",
        );
    }
    let digest = match raw.tls_auth_digest.to_ascii_uppercase().as_str() {
        "SHA1" => AuthDigest::Sha1,
        "SHA256" => AuthDigest::Sha256,
        "SHA512" => AuthDigest::Sha512,
        other => {
            p.add(
                "tls.tls_auth_digest",
                format!("{other:?} is not one of SHA1, SHA256, SHA512"),
            );
            AuthDigest::Sha256
        }
    };
    if key.trim().is_empty() {
        p.add("tls.tls_auth_key", "must name a file");
    }
    Some((PathBuf::from(key), digest))
}

fn targets(raw: &RawConfig, p: &mut Problems) -> Vec<Target> {
    if raw.target.is_empty() {
        p.add(
            "target",
            "at least one [[target]] (the ENI of an associated subnet) is needed",
        );
    }
    let mut targets: Vec<Target> = Vec::new();
    for (i, t) in raw.target.iter().enumerate() {
        let key = format!("target[{i}].interface");
        interface_name(&key, &t.interface, p);
        if targets.iter().any(|o| o.interface == t.interface) {
            p.add(key, format!("{:?} is listed twice", t.interface));
        } else if t.interface == raw.endpoint.public_interface {
            p.add(key, format!("{:?} is the public interface", t.interface));
        } else {
            targets.push(Target {
                interface: t.interface.clone(),
            });
        }
    }
    targets
}

fn routes(raw: &RawConfig, targets: &[Target], p: &mut Problems) -> Vec<Route> {
    if raw.route.len() > MAX_ROUTES as usize {
        p.add(
            "route",
            format!("{} routes; at most {MAX_ROUTES}", raw.route.len()),
        );
    }
    let mut routes: Vec<Route> = Vec::new();
    for (i, r) in raw.route.iter().enumerate() {
        let destination = match network(&r.destination) {
            Ok(net) => net,
            Err(e) => {
                p.add(format!("route[{i}].destination"), e);
                continue;
            }
        };
        if !targets.iter().any(|t| t.interface == r.target) {
            p.add(
                format!("route[{i}].target"),
                format!("{:?} is not the interface of any [[target]]", r.target),
            );
            continue;
        }
        if routes.iter().any(|o| o.destination == destination) {
            p.add(
                format!("route[{i}].destination"),
                format!("{destination} already has a route"),
            );
            continue;
        }
        routes.push(Route {
            destination,
            target: r.target.clone(),
        });
    }
    routes
}

/// Numbers every group named in `[groups]` and in rules, in order of first mention.
fn groups(raw: &RawConfig, p: &mut Problems) -> Groups {
    let mut names: Vec<String> = Vec::new();
    let mut number = |name: &str| -> Option<GroupId> {
        let i = match names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                names.push(name.to_string());
                names.len() - 1
            }
        };
        GroupId::new(u16::try_from(i).ok()?)
    };
    let mut members: BTreeMap<String, Vec<GroupId>> = BTreeMap::new();
    for (group, common_names) in &raw.groups {
        if group.trim().is_empty() {
            p.add("groups", "a group name must not be empty");
            continue;
        }
        let Some(id) = number(group) else { continue };
        for cn in common_names {
            members.entry(cn.clone()).or_default().push(id);
        }
    }
    for rule in &raw.authorize {
        for g in rule.groups.iter().flatten() {
            number(g);
        }
    }
    if names.len() > MAX_GROUPS {
        p.add(
            "groups",
            format!("{} groups; at most {MAX_GROUPS}", names.len()),
        );
    }
    Groups::numbered(names, members)
}

fn authorization(raw: &RawConfig, groups: &Groups, p: &mut Problems) -> Vec<AuthorizationRule> {
    let mut rules = Vec::new();
    let mut networks = std::collections::BTreeSet::new();
    let rules_in: &[RawAuthorize] = &raw.authorize;
    for (i, r) in rules_in.iter().enumerate() {
        let destination = match network(&r.destination) {
            Ok(net) => net,
            Err(e) => {
                p.add(format!("authorize[{i}].destination"), e);
                continue;
            }
        };
        networks.insert(destination);
        match (&r.groups, r.all_users) {
            (Some(_), true) => p.add(
                format!("authorize[{i}]"),
                "give either groups or all_users = true, not both",
            ),
            (None, false) => p.add(
                format!("authorize[{i}]"),
                "give groups = [\"…\"] or all_users = true",
            ),
            (Some(names), false) if names.is_empty() => p.add(
                format!("authorize[{i}].groups"),
                "must name at least one group",
            ),
            (Some(names), false) => {
                for name in names {
                    if !raw.groups.contains_key(name) && !raw.tls.groups_from_certificate_ou {
                        p.add(
                            format!("authorize[{i}].groups"),
                            format!(
                                "group {name:?} has no members in [groups] and tls.groups_from_certificate_ou is off, so the rule could never match"
                            ),
                        );
                        continue;
                    }
                    match groups.id(name) {
                        Some(id) => rules.push(AuthorizationRule {
                            destination,
                            access: Access::Group(id),
                        }),
                        None => p.add(
                            format!("authorize[{i}].groups"),
                            format!(
                                "group {name:?} cannot be numbered (more than {MAX_GROUPS} groups)"
                            ),
                        ),
                    }
                }
            }
            (None, true) => rules.push(AuthorizationRule {
                destination,
                access: Access::AllUsers,
            }),
        }
    }
    if networks.len() > MAX_AUTHZ_RULES as usize {
        p.add(
            "authorize",
            format!(
                "{} distinct networks; at most {MAX_AUTHZ_RULES}",
                networks.len()
            ),
        );
    }
    rules
}

fn admin(raw: &RawConfig, p: &mut Problems) -> Option<Admin> {
    let socket = PathBuf::from(&raw.admin.socket);
    if !socket.is_absolute() || socket.file_name().is_none() {
        p.add(
            "admin.socket",
            format!("{:?} is not an absolute path to a file", raw.admin.socket),
        );
        return None;
    }
    // sockaddr_un holds 108 bytes with the terminating NUL.
    if raw.admin.socket.len() > 107 {
        p.add(
            "admin.socket",
            format!(
                "{} bytes long; a Unix socket path holds at most 107",
                raw.admin.socket.len()
            ),
        );
        return None;
    }
    Some(Admin { socket })
}

fn process(raw: &RawConfig, p: &mut Problems) -> Process {
    let user = raw.process.user.clone();
    if let Some(name) = &user {
        let valid = !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !valid {
            p.add("process.user", format!("{name:?} is not a user name"));
        } else if name == "root" {
            p.add(
                "process.user",
                "\"root\" keeps every privilege; name an unprivileged user, or leave it out",
            );
        }
    }
    Process { user }
}

fn dataplane(raw: &RawConfig, p: &mut Problems) -> Dataplane {
    let mode = match raw.dataplane.mode.as_str() {
        "sockets" => DataplaneMode::Sockets,
        "afxdp" => DataplaneMode::AfXdp,
        "auto" => DataplaneMode::Auto,
        other => {
            p.add(
                "dataplane.mode",
                format!("{other:?} is not one of \"sockets\", \"afxdp\", \"auto\""),
            );
            DataplaneMode::Auto
        }
    };
    if raw.dataplane.workers > MAX_WORKERS {
        p.add(
            "dataplane.workers",
            format!(
                "{} workers; at most {MAX_WORKERS}, one per queue of the TAP device (0 = one per core)",
                raw.dataplane.workers
            ),
        );
    }
    Dataplane {
        mode,
        workers: raw.dataplane.workers,
        pin: raw.dataplane.pin,
        forward_guard: raw.dataplane.forward_guard,
    }
}
