//! Admission: who an authenticated client is (its identity and groups), what it gets (a
//! lease from the client CIDR and its push: routes, DNS, keepalive, banner), or why it
//! is refused. Directory and SSO authentication plug in here as an asynchronous step
//! between the session's `AuthRequest` and [`Server::admit`].

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Instant,
};

use gateway_ebpf_common::SessionInfo;
use gateway_proto::{
    key_method::Directive,
    push::{AuthFailure, KeepaliveSettings, PushPolicy, Route, RouteGateway, TunnelMode},
    session::AuthRequest,
};
use tracing::{info, warn};

use super::{Now, Server, registry::Ending};
use crate::{
    admin::printable,
    config::Groups,
    policy::{GroupId, group_set},
};

/// A session whose groups a reload changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regroup {
    pub peer_id: u32,
    /// The session's lease once it is established (its XDP entry needs the new groups).
    pub lease: Option<Ipv4Addr>,
    pub before: Vec<GroupId>,
    pub after: Vec<GroupId>,
}

impl Regroup {
    /// The groups the old and the new numbering agree the session is in: what its XDP
    /// entry may hold while the rules of either numbering are in force.
    pub fn both(&self) -> Vec<GroupId> {
        self.before
            .iter()
            .copied()
            .filter(|g| self.after.contains(g))
            .collect()
    }
}

impl Server {
    /// A session's client proved its certificate and sent its key-method 2 message:
    /// settle its identity and groups, then admit it.
    pub(super) fn authenticate(&mut self, now: Now, peer_id: u32, request: &AuthRequest) {
        let cn = request.identity.common_name.clone().unwrap_or_default();
        let groups = self.groups_of(
            &self.config.groups,
            &cn,
            request.identity.certificate.as_deref(),
        );
        self.admit(now, peer_id, cn, groups);
    }

    /// The groups of a client by `groups`: `[groups]` by common name, and the
    /// certificate's OUs when `tls.groups_from_certificate_ou` is on (OUs no rule names
    /// are ignored).
    fn groups_of(
        &self,
        groups: &Groups,
        common_name: &str,
        certificate: Option<&[u8]>,
    ) -> Vec<GroupId> {
        let mut ids = groups.of_common_name(common_name).to_vec();
        if self.config.tls.groups_from_certificate_ou
            && let Some(der) = certificate
        {
            for ou in crate::pki::organizational_units(der) {
                if let Some(id) = groups.id(&ou)
                    && !ids.contains(&id)
                {
                    ids.push(id);
                }
            }
        }
        ids
    }

    /// The groups in force for new sessions.
    pub fn groups(&self) -> &Groups {
        &self.config.groups
    }

    /// What `groups` (a reloaded configuration's, numbered by
    /// `Config::keep_group_ids`) makes of every admitted session's groups: the sessions
    /// whose groups change. Changes nothing; see [`Server::set_groups`].
    pub fn regroup(&self, groups: &Groups) -> Vec<Regroup> {
        let mut changes: Vec<Regroup> = self
            .clients
            .iter()
            .filter(|(_, c)| c.lease.is_some())
            .filter_map(|(&peer_id, c)| {
                let identity = c.session.identity();
                let after = self.groups_of(groups, &c.common_name, identity.certificate.as_deref());
                (after != c.groups).then(|| Regroup {
                    peer_id,
                    lease: c.lease.filter(|_| c.established_at.is_some()),
                    before: c.groups.clone(),
                    after,
                })
            })
            .collect();
        changes.sort_by_key(|c| c.peer_id);
        changes
    }

    /// Takes `groups` for the sessions admitted from now on, and the groups `changes`
    /// (from [`Server::regroup`]) give the admitted ones.
    pub fn set_groups(&mut self, groups: Groups, changes: &[Regroup]) {
        for change in changes {
            if let Some(client) = self.clients.get_mut(&change.peer_id) {
                client.groups = change.after.clone();
            }
        }
        self.config.groups = groups;
    }

    /// Admits an authenticated client: a lease and its push, or AUTH_FAILED. At the
    /// identity's session limit its oldest live session is ended first (HALT), so one
    /// certificate never holds more than `endpoint.max_sessions_per_identity` leases
    /// and a reconnecting user is never locked out by their own dead sessions.
    fn admit(&mut self, now: Now, peer_id: u32, common_name: String, groups: Vec<GroupId>) {
        self.make_room_for(now, peer_id, &common_name);
        let lease = self.pool.lease();
        let Some(client) = self.clients.get_mut(&peer_id) else {
            return;
        };
        client.common_name = common_name;
        client.groups = groups;
        match lease {
            Ok(lease) => {
                client.lease = Some(lease);
                self.by_lease.insert(lease, peer_id);
                let policy = self.push_policy(lease);
                let Some(client) = self.clients.get_mut(&peer_id) else {
                    return;
                };
                if let Err(e) = client.session.accept(now.at, policy) {
                    warn!(peer_id, "accept: {e}");
                }
            }
            Err(e) => {
                warn!(peer_id, cn = %client.common_name, "refused: {e}");
                let _ = client.session.reject(
                    now.at,
                    AuthFailure::Plain {
                        reason: Some("no free address in the client CIDR".into()),
                    },
                );
            }
        }
    }

    /// Ends the oldest live sessions of `common_name` (other than `peer_id`) until a new
    /// one fits under the identity's limit.
    fn make_room_for(&mut self, now: Now, peer_id: u32, common_name: &str) {
        let limit = self.config.endpoint.max_sessions_per_identity;
        if limit == 0 {
            return;
        }
        let mut same: Vec<(Option<Instant>, u32)> = self
            .clients
            .iter()
            .filter(|&(&id, c)| {
                id != peer_id
                    && c.lease.is_some()
                    && c.ending.is_none()
                    && c.common_name == common_name
            })
            .map(|(&id, c)| (c.established_at, id))
            .collect();
        if same.len() < limit {
            return;
        }
        same.sort();
        for &(_, oldest) in &same[..same.len() + 1 - limit] {
            info!(
                peer_id = oldest,
                cn = %printable(common_name),
                limit,
                "ending the identity's oldest session for a new one"
            );
            self.replaced += 1;
            self.end(now, oldest, Ending::Replaced);
        }
    }

    fn push_policy(&self, lease: Ipv4Addr) -> PushPolicy {
        let e = &self.config.endpoint;
        let tunnel = if e.split_tunnel {
            TunnelMode::Split {
                routes: self
                    .config
                    .routes
                    .iter()
                    .map(|r| Route {
                        network: r.destination.network(),
                        netmask: r.destination.netmask(),
                        gateway: RouteGateway::Default,
                        metric: None,
                    })
                    .collect(),
                routes_ipv6: Vec::new(),
            }
        } else {
            TunnelMode::Full {
                bypass_dhcp: true,
                ipv6: false,
            }
        };
        PushPolicy {
            address: lease,
            netmask: self.pool.netmask(),
            gateway: self.pool.gateway_addr(),
            ipv6: None,
            tunnel,
            dns_servers: e.dns_servers.iter().copied().map(IpAddr::V4).collect(),
            search_domains: Vec::new(),
            block_outside_dns: false,
            keepalive: Some(KeepaliveSettings {
                ping: e.keepalive_interval,
                ping_restart: e.keepalive_timeout,
            }),
            tun_mtu: None,
            features: Default::default(),
            auth_token: None,
            extra: e
                .login_banner
                .as_deref()
                .map(|text| banner(&e.name, text))
                .unwrap_or_default(),
        }
    }
}

/// The login banner as `echo` options: `msg` lines, then `msg-window` with the endpoint
/// name as its title (OpenVPN GUI shows the lines in a window; the 2.6 command-line
/// client logs every `echo` line). `%`, `,` and control characters are percent-encoded,
/// since a push message cannot carry commas.
pub fn banner(endpoint: &str, text: &str) -> Vec<Directive> {
    fn encode(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            match c {
                '%' | ',' => out.push_str(&format!("%{:02X}", c as u32)),
                c if c.is_control() => {
                    let mut bytes = [0u8; 4];
                    for b in c.encode_utf8(&mut bytes).bytes() {
                        out.push_str(&format!("%{b:02X}"));
                    }
                }
                c => out.push(c),
            }
        }
        out
    }
    let echo = |kind: &str, text: &str| Directive {
        name: "echo".into(),
        args: vec![kind.into(), encode(text)],
    };
    let mut lines: Vec<Directive> = text.lines().map(|line| echo("msg", line)).collect();
    lines.push(echo("msg-window", endpoint));
    lines
}

/// The XDP map value for a session.
pub fn session_info(peer_id: u32, groups: &[GroupId]) -> SessionInfo {
    SessionInfo {
        groups: group_set(groups),
        peer_id,
        _pad: 0,
    }
}
