//! The gateway's TOML configuration for the lab: one builder that the in-memory server
//! harness (`gateway::serve::testing`), the end-to-end tests, the benchmarks' test bed
//! and `cargo xtask demo` all write their configuration with.
//!
//! [`LabConfig::new`] starts from what the namespace lab needs ([`crate::lab::Topology`]):
//! public interface `eth0`, `udp/1194`, clients in 10.200.0.0/22, split tunnel, the
//! gateway's public address as the remote host, one target `eth1` routing 10.10.0.0/24,
//! and the PKI files `gateway pki init` writes (CRL and tls-crypt key included). No
//! authorization rule, group, `[dataplane]` or `[admin]` is written until a setter asks
//! for it, so those keep the gateway's defaults. [`LabConfig::to_toml`] serializes with
//! the `toml` crate, so every value is escaped as TOML requires.
//!
//! This crate cannot depend on `gateway` (`xtask` builds it before bpf-linker exists),
//! so the gateway's own parser checks this builder in `tests/tests/lab_config.rs`.

use std::{collections::BTreeMap, path::Path};

use serde::Serialize;

use crate::lab::Topology;

/// A lab configuration of the gateway; setters consume and return it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LabConfig {
    endpoint: Endpoint,
    tls: Tls,
    target: Vec<Target>,
    route: Vec<Route>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    authorize: Vec<Authorize>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    groups: BTreeMap<String, Vec<String>>,
    #[serde(skip_serializing_if = "Dataplane::is_unset")]
    dataplane: Dataplane,
    #[serde(skip_serializing_if = "Option::is_none")]
    admin: Option<Admin>,
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<Process>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct Process {
    user: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct Endpoint {
    name: String,
    public_interface: String,
    listen: Vec<String>,
    client_cidr: String,
    split_tunnel: bool,
    remote_hosts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    login_banner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_timeout_hours: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keepalive_interval_secs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keepalive_timeout_secs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hard_reset_rate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reset_replies: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rekey_interval_secs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_sessions_per_identity: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct Tls {
    server_cert: String,
    server_key: String,
    client_ca: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    crl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_crypt_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_auth_key: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    groups_from_certificate_ou: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct Target {
    interface: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct Route {
    destination: String,
    target: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct Authorize {
    destination: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<Vec<String>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    all_users: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
struct Dataplane {
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    forward_guard: Option<bool>,
}

impl Dataplane {
    fn is_unset(&self) -> bool {
        self.mode.is_none() && self.workers.is_none() && self.forward_guard.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct Admin {
    socket: String,
}

/// A path as the configuration spells it.
fn text(path: impl AsRef<Path>) -> String {
    path.as_ref().to_string_lossy().into_owned()
}

fn strings<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Vec<String> {
    items.into_iter().map(Into::into).collect()
}

/// The files `gateway pki init --dir DIR` writes (and `gateway::pki::Pki` reads), by name.
pub mod pki_files {
    pub const SERVER_CERT: &str = "server.pem";
    pub const SERVER_KEY: &str = "server.key";
    pub const CA_CERT: &str = "ca.pem";
    pub const CRL: &str = "crl.pem";
    pub const TLS_CRYPT_KEY: &str = "tc.key";
}

impl LabConfig {
    /// The lab's configuration for endpoint `name`, with the PKI in `pki_dir` (as
    /// `gateway pki init --dir` lays it out).
    pub fn new(name: &str, pki_dir: &Path) -> Self {
        let file = |name: &str| Some(text(pki_dir.join(name)));
        Self {
            endpoint: Endpoint {
                name: name.into(),
                public_interface: "eth0".into(),
                listen: vec!["udp/1194".into()],
                client_cidr: "10.200.0.0/22".into(),
                split_tunnel: true,
                remote_hosts: vec![Topology::GATEWAY_PUBLIC_ADDR.into()],
                login_banner: None,
                session_timeout_hours: None,
                keepalive_interval_secs: None,
                keepalive_timeout_secs: None,
                hard_reset_rate: None,
                reset_replies: None,
                rekey_interval_secs: None,
                max_sessions_per_identity: None,
            },
            tls: Tls {
                server_cert: text(pki_dir.join(pki_files::SERVER_CERT)),
                server_key: text(pki_dir.join(pki_files::SERVER_KEY)),
                client_ca: text(pki_dir.join(pki_files::CA_CERT)),
                crl: file(pki_files::CRL),
                tls_crypt_key: file(pki_files::TLS_CRYPT_KEY),
                tls_auth_key: None,
                groups_from_certificate_ou: false,
            },
            target: vec![Target {
                interface: "eth1".into(),
            }],
            route: vec![Route {
                destination: "10.10.0.0/24".into(),
                target: "eth1".into(),
            }],
            authorize: Vec::new(),
            groups: BTreeMap::new(),
            dataplane: Dataplane::default(),
            admin: None,
            process: None,
        }
    }

    /// The configuration file's text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a lab configuration is plain strings, numbers and tables")
    }

    /// Writes [`LabConfig::to_toml`] to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_toml())
    }

    // [endpoint]

    /// `endpoint.public_interface` (lab: `eth0`).
    pub fn public_interface(mut self, interface: &str) -> Self {
        self.endpoint.public_interface = interface.into();
        self
    }

    /// `endpoint.listen`: `udp/PORT` or `tcp/PORT` entries (lab: `udp/1194`).
    pub fn listen<S: Into<String>>(mut self, entries: impl IntoIterator<Item = S>) -> Self {
        self.endpoint.listen = strings(entries);
        self
    }

    /// `endpoint.client_cidr` (lab: 10.200.0.0/22).
    pub fn client_cidr(mut self, cidr: &str) -> Self {
        self.endpoint.client_cidr = cidr.into();
        self
    }

    /// `endpoint.split_tunnel` (lab: true).
    pub fn split_tunnel(mut self, split: bool) -> Self {
        self.endpoint.split_tunnel = split;
        self
    }

    /// `endpoint.remote_hosts` (lab: the gateway's public address).
    pub fn remote_hosts<S: Into<String>>(mut self, hosts: impl IntoIterator<Item = S>) -> Self {
        self.endpoint.remote_hosts = strings(hosts);
        self
    }

    /// `endpoint.login_banner`.
    pub fn login_banner(mut self, banner: &str) -> Self {
        self.endpoint.login_banner = Some(banner.into());
        self
    }

    /// `endpoint.session_timeout_hours`.
    pub fn session_timeout_hours(mut self, hours: u32) -> Self {
        self.endpoint.session_timeout_hours = Some(hours);
        self
    }

    /// `endpoint.keepalive_interval_secs` and `endpoint.keepalive_timeout_secs`.
    pub fn keepalive(mut self, interval_secs: u32, timeout_secs: u32) -> Self {
        self.endpoint.keepalive_interval_secs = Some(interval_secs);
        self.endpoint.keepalive_timeout_secs = Some(timeout_secs);
        self
    }

    /// `endpoint.max_sessions_per_identity` (0 = no limit).
    pub fn max_sessions_per_identity(mut self, sessions: u32) -> Self {
        self.endpoint.max_sessions_per_identity = Some(sessions);
        self
    }

    /// `endpoint.rekey_interval_secs` (0 = never).
    pub fn rekey_interval_secs(mut self, secs: u32) -> Self {
        self.endpoint.rekey_interval_secs = Some(secs);
        self
    }

    /// `endpoint.hard_reset_rate` (0 = no limit).
    pub fn hard_reset_rate(mut self, per_second: u32) -> Self {
        self.endpoint.hard_reset_rate = Some(per_second);
        self
    }

    /// `endpoint.reset_replies` (0 = no limit).
    pub fn reset_replies(mut self, per_period: u32) -> Self {
        self.endpoint.reset_replies = Some(per_period);
        self
    }

    // [tls]

    /// `tls.server_cert`, `tls.server_key` and `tls.client_ca` from elsewhere than the
    /// PKI directory.
    pub fn tls_files(
        mut self,
        server_cert: impl AsRef<Path>,
        server_key: impl AsRef<Path>,
        client_ca: impl AsRef<Path>,
    ) -> Self {
        self.tls.server_cert = text(server_cert);
        self.tls.server_key = text(server_key);
        self.tls.client_ca = text(client_ca);
        self
    }

    /// `tls.crl` (lab: the PKI's).
    pub fn crl(mut self, path: impl AsRef<Path>) -> Self {
        self.tls.crl = Some(text(path));
        self
    }

    /// No `tls.crl`.
    pub fn without_crl(mut self) -> Self {
        self.tls.crl = None;
        self
    }

    /// `tls.tls_crypt_key` (lab: the PKI's), instead of any tls-auth key.
    pub fn tls_crypt_key(mut self, path: impl AsRef<Path>) -> Self {
        self.tls.tls_crypt_key = Some(text(path));
        self.tls.tls_auth_key = None;
        self
    }

    /// `tls.tls_auth_key` (digest SHA256, the gateway's default), instead of tls-crypt.
    pub fn tls_auth_key(mut self, path: impl AsRef<Path>) -> Self {
        self.tls.tls_auth_key = Some(text(path));
        self.tls.tls_crypt_key = None;
        self
    }

    /// No control-channel wrapping (AWS-style profiles): neither tls-crypt nor tls-auth.
    pub fn without_wrap(mut self) -> Self {
        self.tls.tls_crypt_key = None;
        self.tls.tls_auth_key = None;
        self
    }

    /// `tls.groups_from_certificate_ou`.
    pub fn groups_from_certificate_ou(mut self, on: bool) -> Self {
        self.tls.groups_from_certificate_ou = on;
        self
    }

    // [[target]], [[route]], [[authorize]], [groups]

    /// The `[[target]]` interfaces (lab: `eth1`).
    pub fn targets<S: Into<String>>(mut self, interfaces: impl IntoIterator<Item = S>) -> Self {
        self.target = strings(interfaces)
            .into_iter()
            .map(|interface| Target { interface })
            .collect();
        self
    }

    /// Adds a `[[route]]` (lab: 10.10.0.0/24 to `eth1`).
    pub fn route(mut self, destination: &str, target: &str) -> Self {
        self.route.push(Route {
            destination: destination.into(),
            target: target.into(),
        });
        self
    }

    /// No `[[route]]`.
    pub fn without_routes(mut self) -> Self {
        self.route.clear();
        self
    }

    /// Adds an `[[authorize]]` rule for every user.
    pub fn authorize_all_users(mut self, destination: &str) -> Self {
        self.authorize.push(Authorize {
            destination: destination.into(),
            groups: None,
            all_users: true,
        });
        self
    }

    /// Adds an `[[authorize]]` rule for `groups`.
    pub fn authorize_groups<S: Into<String>>(
        mut self,
        destination: &str,
        groups: impl IntoIterator<Item = S>,
    ) -> Self {
        self.authorize.push(Authorize {
            destination: destination.into(),
            groups: Some(strings(groups)),
            all_users: false,
        });
        self
    }

    /// No `[[authorize]]` rule (the lab's default).
    pub fn without_authorizations(mut self) -> Self {
        self.authorize.clear();
        self
    }

    /// `[groups] group = [members]`: certificate common names.
    pub fn group<S: Into<String>>(
        mut self,
        group: &str,
        members: impl IntoIterator<Item = S>,
    ) -> Self {
        self.groups.insert(group.into(), strings(members));
        self
    }

    // [dataplane], [admin]

    /// `dataplane.mode`: `"sockets"`, `"afxdp"` or `"auto"`.
    pub fn dataplane_mode(mut self, mode: &str) -> Self {
        self.dataplane.mode = Some(mode.into());
        self
    }

    /// `dataplane.forward_guard`.
    pub fn forward_guard(mut self, on: bool) -> Self {
        self.dataplane.forward_guard = Some(on);
        self
    }

    /// `dataplane.workers` (0 = one per CPU).
    pub fn dataplane_workers(mut self, workers: usize) -> Self {
        self.dataplane.workers = Some(workers);
        self
    }

    /// `admin.socket`.
    pub fn admin_socket(mut self, path: impl AsRef<Path>) -> Self {
        self.admin = Some(Admin { socket: text(path) });
        self
    }

    /// `process.user`: what `gateway serve` continues as once set up.
    pub fn process_user(mut self, user: &str) -> Self {
        self.process = Some(Process { user: user.into() });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> LabConfig {
        LabConfig::new("lab", Path::new("/pki"))
    }

    fn parsed(config: &LabConfig) -> toml::Table {
        config.to_toml().parse().unwrap()
    }

    #[test]
    fn the_default_writes_the_lab_and_nothing_left_to_the_gateway() {
        let text = lab().to_toml();
        for line in [
            "[endpoint]",
            "name = \"lab\"",
            "public_interface = \"eth0\"",
            "listen = [\"udp/1194\"]",
            "client_cidr = \"10.200.0.0/22\"",
            "split_tunnel = true",
            "remote_hosts = [\"198.51.100.1\"]",
            "[tls]",
            "server_cert = \"/pki/server.pem\"",
            "crl = \"/pki/crl.pem\"",
            "tls_crypt_key = \"/pki/tc.key\"",
            "[[target]]",
            "interface = \"eth1\"",
            "[[route]]",
            "destination = \"10.10.0.0/24\"",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
        for absent in [
            "authorize",
            "groups",
            "dataplane",
            "admin",
            "login_banner",
            "keepalive",
            "tls_auth",
        ] {
            assert!(!text.contains(absent), "{absent} written:\n{text}");
        }
    }

    #[test]
    fn values_are_escaped() {
        let banner = "say \"hi\",\nthen \\ leave";
        let odd = Path::new("/tmp/a \"b\"/admin.sock");
        let table = parsed(&lab().login_banner(banner).admin_socket(odd));
        assert_eq!(table["endpoint"]["login_banner"].as_str(), Some(banner));
        assert_eq!(
            table["admin"]["socket"].as_str(),
            Some("/tmp/a \"b\"/admin.sock")
        );
    }

    #[test]
    fn wraps_exclude_each_other() {
        let auth = parsed(&lab().tls_auth_key("/k"));
        assert_eq!(auth["tls"]["tls_auth_key"].as_str(), Some("/k"));
        assert!(auth["tls"].get("tls_crypt_key").is_none());
        let crypt = parsed(&lab().tls_auth_key("/k").tls_crypt_key("/c"));
        assert!(crypt["tls"].get("tls_auth_key").is_none());
        let none = parsed(&lab().without_wrap());
        assert!(none["tls"].get("tls_crypt_key").is_none());
        assert!(none["tls"].get("tls_auth_key").is_none());
    }
}
