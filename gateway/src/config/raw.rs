//! The TOML file as written: serde structs with defaults and no unknown keys. Only
//! `config::validate` reads these; the rest of the gateway sees the typed `Config`.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub endpoint: RawEndpoint,
    pub tls: RawTls,
    #[serde(default)]
    pub target: Vec<RawTarget>,
    #[serde(default)]
    pub route: Vec<RawRoute>,
    #[serde(default)]
    pub authorize: Vec<RawAuthorize>,
    /// Group name → common names of its members.
    #[serde(default)]
    pub groups: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub dataplane: RawDataplane,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub process: RawProcess,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProcess {
    /// The user `gateway serve` continues as once set up.
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    #[serde(default = "default_admin_socket")]
    pub socket: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            socket: default_admin_socket(),
        }
    }
}

fn default_admin_socket() -> String {
    "/run/gateway/admin.sock".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    pub name: String,
    #[serde(default = "default_public_interface")]
    pub public_interface: String,
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    #[serde(default)]
    pub allow_nonstandard_ports: bool,
    #[serde(default = "default_client_cidr")]
    pub client_cidr: String,
    #[serde(default)]
    pub dns_servers: Vec<String>,
    #[serde(default)]
    pub split_tunnel: bool,
    #[serde(default = "default_session_timeout_hours")]
    pub session_timeout_hours: u32,
    #[serde(default = "default_true")]
    pub disconnect_on_session_timeout: bool,
    #[serde(default)]
    pub login_banner: Option<String>,
    #[serde(default)]
    pub client_to_client: bool,
    #[serde(default)]
    pub remote_hosts: Vec<String>,
    #[serde(default = "default_hard_reset_rate")]
    pub hard_reset_rate: u32,
    #[serde(default = "default_hard_reset_burst")]
    pub hard_reset_burst: u32,
    #[serde(default = "default_reset_replies")]
    pub reset_replies: u32,
    #[serde(default = "default_reset_replies_period")]
    pub reset_replies_period_secs: u32,
    #[serde(default = "default_keepalive_interval")]
    pub keepalive_interval_secs: u32,
    #[serde(default = "default_keepalive_timeout")]
    pub keepalive_timeout_secs: u32,
    #[serde(default = "default_rekey_interval")]
    pub rekey_interval_secs: u32,
    #[serde(default = "default_max_tcp_connections")]
    pub max_tcp_connections: u32,
    #[serde(default = "default_max_tcp_connections_per_source")]
    pub max_tcp_connections_per_source: u32,
    #[serde(default = "default_max_sessions_per_identity")]
    pub max_sessions_per_identity: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub server_cert: String,
    pub server_key: String,
    pub client_ca: String,
    #[serde(default)]
    pub crl: Option<String>,
    #[serde(default)]
    pub tls_crypt_key: Option<String>,
    #[serde(default)]
    pub tls_auth_key: Option<String>,
    #[serde(default = "default_tls_auth_digest")]
    pub tls_auth_digest: String,
    /// Also take groups from the client certificate's OU attributes.
    #[serde(default)]
    pub groups_from_certificate_ou: bool,
    /// What an expired CRL means: "refuse" (every client) or "warn".
    #[serde(default = "default_expired_crl")]
    pub expired_crl: String,
    /// Refuse client certificates without the extended key usage clientAuth.
    #[serde(default = "default_true")]
    pub require_client_eku: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub interface: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub destination: String,
    pub target: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthorize {
    pub destination: String,
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    #[serde(default)]
    pub all_users: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDataplane {
    #[serde(default = "default_mode")]
    pub mode: String,
    #[serde(default)]
    pub workers: usize,
    #[serde(default = "default_true")]
    pub pin: bool,
    #[serde(default = "default_true")]
    pub forward_guard: bool,
}

impl Default for RawDataplane {
    fn default() -> Self {
        Self {
            mode: default_mode(),
            workers: 0,
            pin: true,
            forward_guard: true,
        }
    }
}

fn default_public_interface() -> String {
    "eth0".into()
}

fn default_listen() -> Vec<String> {
    vec!["udp/443".into()]
}

fn default_client_cidr() -> String {
    "10.200.0.0/22".into()
}

fn default_session_timeout_hours() -> u32 {
    24
}

fn default_hard_reset_rate() -> u32 {
    10
}

fn default_hard_reset_burst() -> u32 {
    20
}

fn default_reset_replies() -> u32 {
    100
}

fn default_reset_replies_period() -> u32 {
    10
}

fn default_keepalive_interval() -> u32 {
    10
}

fn default_keepalive_timeout() -> u32 {
    60
}

fn default_max_tcp_connections() -> u32 {
    4096
}

/// Enough for an office behind one NAT address; far below what exhausts descriptors.
fn default_max_tcp_connections_per_source() -> u32 {
    64
}

/// AWS Client VPN's client allows five connections at once; so does a user here.
fn default_max_sessions_per_identity() -> u32 {
    5
}

/// OpenVPN's `reneg-sec` default.
fn default_rekey_interval() -> u32 {
    3600
}

fn default_expired_crl() -> String {
    "refuse".into()
}

fn default_tls_auth_digest() -> String {
    "SHA256".into()
}

fn default_mode() -> String {
    "auto".into()
}

fn default_true() -> bool {
    true
}
