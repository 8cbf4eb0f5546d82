//! The gateway's TOML configuration, parsed and validated once into typed structs. Every
//! error names the key it is about and says what was expected.

mod raw;
mod validate;

use std::{
    collections::BTreeMap,
    fmt,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::Ipv4Net;

use crate::policy::{AuthorizationRule, GroupId};

/// A validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub endpoint: Endpoint,
    pub tls: Tls,
    pub targets: Vec<Target>,
    pub routes: Vec<Route>,
    /// Authorization rules with groups numbered (see [`Groups`]).
    pub authorization: Vec<AuthorizationRule>,
    pub groups: Groups,
    pub dataplane: Dataplane,
    pub admin: Admin,
    pub process: Process,
}

/// `[process]`: what `gateway serve` runs as once it is set up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Process {
    /// The user (and its primary group) to continue as, with only the capabilities the
    /// running gateway needs (`serve::privilege`); `None`: stay root.
    pub user: Option<String>,
}

/// `[admin]`: where `gateway serve` answers `gateway connections` and `gateway terminate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admin {
    /// The Unix socket (created mode 0600, replaced if stale).
    pub socket: PathBuf,
}

/// `[endpoint]`: what AWS calls the Client VPN endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub name: String,
    pub public_interface: String,
    pub listen: Vec<Listen>,
    pub client_cidr: Ipv4Net,
    pub dns_servers: Vec<Ipv4Addr>,
    /// Push the routes only (true) or redirect all traffic (false, AWS's default).
    pub split_tunnel: bool,
    pub session_timeout: Duration,
    pub disconnect_on_session_timeout: bool,
    pub login_banner: Option<String>,
    pub client_to_client: bool,
    /// Host names or addresses clients connect to, for exported profiles.
    pub remote_hosts: Vec<String>,
    /// Hard resets (new connections) one source address may send per second, and in a
    /// burst, before `edge` drops them; 0 = no limit.
    pub hard_reset_rate: u32,
    pub hard_reset_burst: u32,
    /// Replies to new connections' resets (all sources together) per
    /// `reset_replies_period`, as OpenVPN's `connect-freq-initial`; 0 = no limit.
    pub reset_replies: u32,
    pub reset_replies_period: Duration,
    /// Pushed as `ping`: seconds of silence after which each side sends a ping.
    pub keepalive_interval: u32,
    /// Pushed as `ping-restart`: the client restarts after this much silence; the server
    /// ends a session after twice this (as OpenVPN's `keepalive` does).
    pub keepalive_timeout: u32,
    /// The server starts a new data-channel key this long after the last (OpenVPN's
    /// `reneg-sec`); zero never.
    pub rekey_interval: Duration,
    /// Open TCP connections at most, in all and from one source address.
    pub max_tcp_connections: usize,
    pub max_tcp_connections_per_source: usize,
    /// Live sessions one certificate identity (common name) may hold; a new one beyond
    /// it ends that identity's oldest. Zero: no limit.
    pub max_sessions_per_identity: usize,
}

/// A transport and port the gateway listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Listen {
    pub transport: Transport,
    pub port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = match self.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        };
        write!(f, "{t}/{}", self.port)
    }
}

/// `[tls]`: the PKI files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_ca: PathBuf,
    pub crl: Option<PathBuf>,
    pub tls_crypt_key: Option<PathBuf>,
    /// tls-auth instead of tls-crypt: the key file and the HMAC digest.
    pub tls_auth: Option<(PathBuf, AuthDigest)>,
    pub groups_from_certificate_ou: bool,
    pub expired_crl: ExpiredCrl,
    /// Refuse client certificates without the extended key usage clientAuth (the rule of
    /// exactly one common name always holds).
    pub require_client_eku: bool,
}

/// `tls.expired_crl`: what a CRL past its `nextUpdate` means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpiredCrl {
    /// Every client is refused until the CRL is renewed (OpenVPN, AWS Client VPN).
    Refuse,
    /// Logged as an error; the expired CRL still revokes what it lists.
    Warn,
}

/// The HMAC of tls-auth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthDigest {
    Sha1,
    Sha256,
    Sha512,
}

impl AuthDigest {
    /// As OpenVPN's `auth` option spells it.
    pub fn name(self) -> &'static str {
        match self {
            AuthDigest::Sha1 => "SHA1",
            AuthDigest::Sha256 => "SHA256",
            AuthDigest::Sha512 => "SHA512",
        }
    }
}

/// `[[target]]`: a target network association (the ENI in the associated subnet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub interface: String,
}

/// `[[route]]`: destination network → target interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub destination: Ipv4Net,
    pub target: String,
}

/// Group names numbered for the XDP group bitmaps, and the members from `[groups]`.
///
/// A parsed file numbers its groups in order of first mention. A running gateway keeps
/// the numbers it gave out: on reload, [`Config::keep_group_ids`] gives every group
/// that is still named its old number and new groups numbers nobody holds, so a group
/// added or removed never shifts another's number (and with it a live session's
/// access).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Groups {
    /// Index = group number; `None` where a number is free.
    names: Vec<Option<String>>,
    /// Common name → its groups.
    members: BTreeMap<String, Vec<GroupId>>,
}

impl Groups {
    /// Groups numbered in the order of `names`.
    fn numbered(names: Vec<String>, members: BTreeMap<String, Vec<GroupId>>) -> Self {
        Self {
            names: names.into_iter().map(Some).collect(),
            members,
        }
    }

    /// The number of a group, if the configuration names it.
    pub fn id(&self, name: &str) -> Option<GroupId> {
        let i = self.names.iter().position(|n| n.as_deref() == Some(name))?;
        GroupId::new(u16::try_from(i).ok()?)
    }

    pub fn name(&self, id: GroupId) -> Option<&str> {
        self.names.get(usize::from(id.get()))?.as_deref()
    }

    /// Groups `[groups]` gives a certificate common name.
    pub fn of_common_name(&self, common_name: &str) -> &[GroupId] {
        self.members.get(common_name).map_or(&[], Vec::as_slice)
    }

    /// How many groups are named.
    pub fn len(&self) -> usize {
        self.names.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// These groups numbered as `previous` numbered them where they share a name; the
    /// others take the lowest numbers free. Returns the new numbering and, for each of
    /// this numbering's ids, the id it becomes. `None` when the groups do not fit in
    /// the numbers there are (they fit whenever this configuration alone does).
    fn renumbered_like(&self, previous: &Groups) -> Option<(Groups, Vec<Option<GroupId>>)> {
        let mut names: Vec<Option<String>> = Vec::new();
        let mut map: Vec<Option<GroupId>> = vec![None; self.names.len()];
        let place = |names: &mut Vec<Option<String>>, at: usize, name: &str| {
            if names.len() <= at {
                names.resize(at + 1, None);
            }
            names[at] = Some(name.to_string());
        };
        for (i, name) in self.names.iter().enumerate() {
            if let Some(name) = name
                && let Some(old) = previous.id(name)
            {
                place(&mut names, usize::from(old.get()), name);
                map[i] = Some(old);
            }
        }
        for (i, name) in self.names.iter().enumerate() {
            let Some(name) = name else { continue };
            if map[i].is_some() {
                continue;
            }
            let free = (0..).find(|&at| names.get(at).is_none_or(Option::is_none))?;
            let id = GroupId::new(u16::try_from(free).ok()?)?;
            place(&mut names, free, name);
            map[i] = Some(id);
        }
        let renumber = |id: &GroupId| map.get(usize::from(id.get())).copied().flatten();
        let members = self
            .members
            .iter()
            .map(|(cn, ids)| (cn.clone(), ids.iter().filter_map(renumber).collect()))
            .collect();
        Some((Groups { names, members }, map))
    }
}

impl Config {
    /// Renumbers this configuration's groups (and the rules that name them) as the
    /// running `previous` numbered them: see [`Groups`]. Fails, changing nothing, when
    /// the groups do not fit in the numbers `previous` leaves free.
    pub fn keep_group_ids(&mut self, previous: &Groups) -> Result<(), ConfigError> {
        let too_many = || ConfigError {
            key: "groups".into(),
            message: format!(
                "{} groups cannot be numbered beside the {} in force (at most {} in all)",
                self.groups.len(),
                previous.len(),
                gateway_ebpf_common::MAX_GROUPS
            ),
        };
        let (groups, map) = self.groups.renumbered_like(previous).ok_or_else(too_many)?;
        let mut authorization = self.authorization.clone();
        for rule in &mut authorization {
            if let crate::policy::Access::Group(id) = &mut rule.access {
                *id = map
                    .get(usize::from(id.get()))
                    .copied()
                    .flatten()
                    .ok_or_else(too_many)?;
            }
        }
        self.groups = groups;
        self.authorization = authorization;
        Ok(())
    }
}

/// `[dataplane]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dataplane {
    pub mode: DataplaneMode,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    pub pin: bool,
    /// Install the nftables table that refuses forwarding the gateway did not produce
    /// (`serve::guard`).
    pub forward_guard: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataplaneMode {
    Sockets,
    AfXdp,
    /// The fastest mode that works on the interfaces.
    Auto,
}

/// One problem in a configuration: the key (`route[2].destination`) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in a configuration, in file order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    pub source_name: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} problem{}",
            self.source_name,
            self.errors.len(),
            if self.errors.len() == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates the file at `path` (no system checks: see
    /// [`Config::check_system`]).
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            source_name: path.display().to_string(),
            errors: vec![ConfigError {
                key: String::new(),
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates configuration text; `source_name` names it in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, ConfigErrors> {
        let fail = |errors| ConfigErrors {
            source_name: source_name.to_string(),
            errors,
        };
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            fail(vec![ConfigError {
                key: String::new(),
                message: e.to_string().trim_end().to_string(),
            }])
        })?;
        validate::validate(raw).map_err(fail)
    }

    /// Checks what the file cannot tell: the PKI files exist and are readable and the
    /// interfaces exist (in this network namespace).
    pub fn check_system(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        let files = [
            ("tls.server_cert", Some(&self.tls.server_cert)),
            ("tls.server_key", Some(&self.tls.server_key)),
            ("tls.client_ca", Some(&self.tls.client_ca)),
            ("tls.crl", self.tls.crl.as_ref()),
            ("tls.tls_crypt_key", self.tls.tls_crypt_key.as_ref()),
            (
                "tls.tls_auth_key",
                self.tls.tls_auth.as_ref().map(|(p, _)| p),
            ),
        ];
        for (key, path) in files {
            if let Some(path) = path
                && let Err(e) = std::fs::File::open(path)
            {
                errors.push(ConfigError {
                    key: key.into(),
                    message: format!("cannot open {}: {e}", path.display()),
                });
            }
        }
        let interfaces = std::iter::once((
            "endpoint.public_interface".to_string(),
            &self.endpoint.public_interface,
        ))
        .chain(
            self.targets
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("target[{i}].interface"), &t.interface)),
        );
        if let Some(user) = &self.process.user {
            match nix::unistd::User::from_name(user) {
                Ok(Some(_)) => {}
                Ok(None) => errors.push(ConfigError {
                    key: "process.user".into(),
                    message: format!("no user named {user:?} on this host"),
                }),
                Err(e) => errors.push(ConfigError {
                    key: "process.user".into(),
                    message: format!("looking up user {user:?}: {e}"),
                }),
            }
        }
        for (key, name) in interfaces {
            // Asked of this thread's network namespace (sysfs may show another one).
            if nix::net::if_::if_nametoindex(name.as_str()).is_err() {
                errors.push(ConfigError {
                    key,
                    message: format!("no network interface named {name:?} here"),
                });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests;
