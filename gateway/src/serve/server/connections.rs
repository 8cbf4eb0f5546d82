//! The connection list as the admin API shows it (AWS's DescribeClientVpnConnections:
//! active connections and those that ended in the last 60 minutes) and terminate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::info;

use super::{
    Now, Server,
    registry::{Client, Ending},
};
use crate::admin::{Connection, Selector, TerminateStatus};

/// How long ended connections stay listed (AWS lists them for 60 minutes).
const ENDED_KEPT_FOR: Duration = Duration::from_secs(3600);
/// Most ended connections kept.
pub(super) const MAX_ENDED: usize = 10_000;
/// Most connections one username terminate may end (as AWS).
const MAX_TERMINATE_BY_USERNAME: usize = 5;

/// Why a terminate request ended nothing (the administrator's to fix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TerminateError {
    #[error("no active connection {0}")]
    NoConnection(String),
    #[error("no active connection of user {0}")]
    NoUserConnection(String),
    #[error(
        "user {user} has {count} connections; terminate by connection id when there are more than {MAX_TERMINATE_BY_USERNAME}"
    )]
    TooManyConnections { user: String, count: usize },
}

fn unix(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

impl Server {
    /// Active connections and those that ended in the last 60 minutes, oldest first.
    pub fn connections(&mut self, now: Now) -> Vec<Connection> {
        while self
            .ended
            .front()
            .is_some_and(|(at, _)| now.at.saturating_duration_since(*at) > ENDED_KEPT_FOR)
        {
            self.ended.pop_front();
        }
        let mut active: Vec<Connection> = self
            .clients
            .values()
            .filter(|c| c.established_at.is_some())
            .map(|c| describe(c, None))
            .collect();
        active.sort_by_key(|c| c.connection_established_time);
        self.ended
            .iter()
            .map(|(_, c)| c.clone())
            .chain(active)
            .collect()
    }

    /// Keeps an established connection that ended in the list, for an hour.
    pub(super) fn record_ended(&mut self, now: Now, client: &Client, reason: &str) {
        let record = describe(client, Some((now.wall, reason)));
        if self.ended.len() >= MAX_ENDED {
            self.ended.pop_front();
        }
        self.ended.push_back((now.at, record));
    }

    /// Ends the established connection `selector` names (by id, or every one of a user's,
    /// at most 5): the client is told to stop (HALT); its lease, XDP and NAT state go when
    /// the session closes.
    pub fn terminate(
        &mut self,
        now: Now,
        selector: &Selector,
    ) -> Result<Vec<TerminateStatus>, TerminateError> {
        let matches: Vec<u32> = self
            .clients
            .iter()
            .filter(|(_, c)| c.established_at.is_some())
            .filter(|(_, c)| match selector {
                Selector::ConnectionId(id) => c.connection_id == *id,
                // The verified identity only (see `describe`).
                Selector::Username(name) => c.common_name == *name,
            })
            .map(|(id, _)| *id)
            .collect();
        match selector {
            Selector::ConnectionId(id) if matches.is_empty() => {
                return Err(TerminateError::NoConnection(id.clone()));
            }
            Selector::Username(name) if matches.is_empty() => {
                return Err(TerminateError::NoUserConnection(name.clone()));
            }
            Selector::Username(name) if matches.len() > MAX_TERMINATE_BY_USERNAME => {
                return Err(TerminateError::TooManyConnections {
                    user: name.clone(),
                    count: matches.len(),
                });
            }
            _ => {}
        }
        let mut statuses = Vec::new();
        for peer_id in matches {
            let Some(c) = self.clients.get(&peer_id) else {
                continue;
            };
            let previous = if c.ending.is_some() {
                "terminating"
            } else {
                "active"
            };
            let connection_id = c.connection_id.clone();
            info!(peer_id, cn = %c.common_name, connection_id = %connection_id, "terminating");
            self.end(now, peer_id, Ending::Terminated);
            let current = if self.clients.contains_key(&peer_id) {
                "terminating"
            } else {
                "terminated"
            };
            statuses.push(TerminateStatus {
                connection_id,
                previous_status: previous.into(),
                current_status: current.into(),
            });
        }
        Ok(statuses)
    }
}

/// A client as the connection list shows it; `ended` when and why it ended.
fn describe(c: &Client, ended: Option<(SystemTime, &str)>) -> Connection {
    let traffic = c.activity.traffic();
    let (status, message) = match (ended, c.ending) {
        (Some((_, reason)), _) => ("terminated", reason.to_string()),
        (None, Some(ending @ (Ending::Terminated | Ending::Revoked | Ending::Replaced))) => {
            ("terminating", ending.message().to_string())
        }
        (None, Some(_)) => ("terminating", String::new()),
        (None, None) => ("active", String::new()),
    };
    Connection {
        connection_id: c.connection_id.clone(),
        // The username a client sends with `auth-user-pass` is not verified by anything
        // yet (no directory or SSO authentication): the identity is the certificate's.
        username: c.common_name.clone(),
        common_name: c.common_name.clone(),
        client_ip: c.lease,
        remote: c.addr,
        transport: if c.udp { "udp" } else { "tcp" }.into(),
        connection_established_time: c.established_wall.and_then(unix),
        connection_end_time: ended.and_then(|(t, _)| unix(t)),
        ingress_bytes: traffic.rx_bytes,
        egress_bytes: traffic.tx_bytes,
        ingress_packets: traffic.rx_packets,
        egress_packets: traffic.tx_packets,
        status: status.into(),
        status_message: message,
    }
}
