//! Keepalive timing (protocol doc §11): when to send the next ping and when the peer has
//! been silent too long. Pure: the caller passes the instants in.

use std::time::{Duration, Instant};

use super::config::PushConfig;
use super::policy::KeepaliveSettings;

/// Ping interval and silence timeout of one side; `None` disables either.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keepalive {
    /// Send a ping after this long without sending anything.
    pub ping: Option<Duration>,
    /// The peer timed out after this long without an authenticated packet from it.
    pub timeout: Option<Duration>,
}

/// What the session should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepaliveAction {
    /// The peer has been silent for the whole timeout: end (server) or restart (client).
    TimedOut,
    /// Send a ping now; after sending, nothing is due before `next`.
    SendPing {
        /// The next deadline, counting the ping as sent at `now`.
        next: Option<Instant>,
    },
    /// Nothing to do before `until` (`None`: no timer).
    Idle {
        /// The next deadline.
        until: Option<Instant>,
    },
}

fn seconds(value: u32) -> Option<Duration> {
    (value > 0).then(|| Duration::from_secs(u64::from(value)))
}

fn after(instant: Instant, interval: Option<Duration>) -> Option<Instant> {
    interval.and_then(|d| instant.checked_add(d))
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Keepalive {
    /// The server's timers for `keepalive <ping> <ping_restart>`: ping as pushed, time the
    /// client out after twice the pushed `ping-restart` (§11). Zero disables.
    pub fn server(settings: KeepaliveSettings) -> Self {
        Keepalive {
            ping: seconds(settings.ping),
            timeout: seconds(settings.ping_restart.saturating_mul(2)),
        }
    }

    /// The client's timers from a received push: `ping` and `ping-restart` as given.
    pub fn client(push: &PushConfig) -> Self {
        Keepalive {
            ping: push.ping.and_then(seconds),
            timeout: push.ping_restart.and_then(seconds),
        }
    }

    /// When the next ping is due, given the last time anything was sent.
    pub fn next_ping(&self, last_sent: Instant) -> Option<Instant> {
        after(last_sent, self.ping)
    }

    /// When the peer times out, given the last authenticated packet received.
    pub fn deadline(&self, last_received: Instant) -> Option<Instant> {
        after(last_received, self.timeout)
    }

    /// Whether a ping is due at `now` (due at exactly the interval).
    pub fn ping_due(&self, now: Instant, last_sent: Instant) -> bool {
        self.next_ping(last_sent).is_some_and(|due| now >= due)
    }

    /// Whether the peer has timed out at `now` (at exactly the timeout).
    pub fn timed_out(&self, now: Instant, last_received: Instant) -> bool {
        self.deadline(last_received).is_some_and(|due| now >= due)
    }

    /// The action at `now`; a timeout wins over a due ping.
    pub fn poll(
        &self,
        now: Instant,
        last_sent: Instant,
        last_received: Instant,
    ) -> KeepaliveAction {
        let deadline = self.deadline(last_received);
        if self.timed_out(now, last_received) {
            KeepaliveAction::TimedOut
        } else if self.ping_due(now, last_sent) {
            KeepaliveAction::SendPing {
                next: earliest(self.next_ping(now), deadline),
            }
        } else {
            KeepaliveAction::Idle {
                until: earliest(self.next_ping(last_sent), deadline),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn server() -> Keepalive {
        Keepalive::server(KeepaliveSettings {
            ping: 10,
            ping_restart: 120,
        })
    }

    #[test]
    fn server_times_out_after_twice_ping_restart() {
        assert_eq!(
            server(),
            Keepalive {
                ping: Some(secs(10)),
                timeout: Some(secs(240)),
            }
        );
    }

    #[test]
    fn client_uses_pushed_values() {
        let push = PushConfig {
            ping: Some(10),
            ping_restart: Some(120),
            ..PushConfig::default()
        };
        assert_eq!(
            Keepalive::client(&push),
            Keepalive {
                ping: Some(secs(10)),
                timeout: Some(secs(120)),
            }
        );
        assert_eq!(
            Keepalive::client(&PushConfig::default()),
            Keepalive::default()
        );
    }

    #[test]
    fn zero_disables() {
        let keepalive = Keepalive::server(KeepaliveSettings {
            ping: 0,
            ping_restart: 0,
        });
        assert_eq!(keepalive, Keepalive::default());
        let t = Instant::now();
        let later = t + secs(1_000_000);
        assert!(!keepalive.ping_due(later, t));
        assert!(!keepalive.timed_out(later, t));
        assert_eq!(
            keepalive.poll(later, t, t),
            KeepaliveAction::Idle { until: None }
        );
    }

    #[test]
    fn deadlines_are_inclusive() {
        let k = server();
        let t = Instant::now();
        assert!(!k.ping_due(t + secs(10) - Duration::from_nanos(1), t));
        assert!(k.ping_due(t + secs(10), t));
        assert!(!k.timed_out(t + secs(240) - Duration::from_nanos(1), t));
        assert!(k.timed_out(t + secs(240), t));
    }

    #[test]
    fn poll_sequence() {
        let k = server();
        let t = Instant::now();
        assert_eq!(
            k.poll(t + secs(3), t, t),
            KeepaliveAction::Idle {
                until: Some(t + secs(10))
            }
        );
        assert_eq!(
            k.poll(t + secs(10), t, t),
            KeepaliveAction::SendPing {
                next: Some(t + secs(20))
            }
        );
        // Received recently, sent long ago: ping, then the next ping is the next deadline.
        assert_eq!(
            k.poll(t + secs(500), t, t + secs(495)),
            KeepaliveAction::SendPing {
                next: Some(t + secs(510))
            }
        );
        // Sent recently, nothing received: the timeout is the next deadline when closer.
        assert_eq!(
            k.poll(t + secs(235), t + secs(234), t),
            KeepaliveAction::Idle {
                until: Some(t + secs(240))
            }
        );
        assert_eq!(
            k.poll(t + secs(236), t, t),
            KeepaliveAction::SendPing {
                next: Some(t + secs(240))
            }
        );
    }

    #[test]
    fn timeout_wins_over_a_due_ping() {
        let t = Instant::now();
        assert_eq!(
            server().poll(t + secs(240), t, t),
            KeepaliveAction::TimedOut
        );
    }

    #[test]
    fn ping_only_or_timeout_only() {
        let t = Instant::now();
        let ping_only = Keepalive {
            ping: Some(secs(10)),
            timeout: None,
        };
        assert_eq!(
            ping_only.poll(t + secs(5000), t + secs(4995), t),
            KeepaliveAction::Idle {
                until: Some(t + secs(5005))
            }
        );
        let timeout_only = Keepalive {
            ping: None,
            timeout: Some(secs(60)),
        };
        assert_eq!(
            timeout_only.poll(t, t, t),
            KeepaliveAction::Idle {
                until: Some(t + secs(60))
            }
        );
        assert_eq!(
            timeout_only.poll(t + secs(60), t, t),
            KeepaliveAction::TimedOut
        );
    }

    #[test]
    fn huge_intervals_do_not_panic() {
        let t = Instant::now();
        let k = Keepalive {
            ping: Some(Duration::MAX),
            timeout: Some(Duration::MAX),
        };
        assert_eq!(k.next_ping(t), None);
        assert_eq!(k.poll(t, t, t), KeepaliveAction::Idle { until: None });
        let max = Keepalive::server(KeepaliveSettings {
            ping: u32::MAX,
            ping_restart: u32::MAX,
        });
        assert_eq!(max.timeout, Some(secs(u64::from(u32::MAX))));
    }
}
