//! When NAT mappings expire: per protocol and, for TCP, per connection state read from
//! the flags the XDP programs record in each direction.

use std::time::Duration;

use gateway_ebpf_common::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;

/// Idle timeouts of NAT mappings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatTimeouts {
    /// TCP after the three-way handshake completed.
    pub tcp_established: Duration,
    /// TCP that never completed its handshake, or one side closed.
    pub tcp_transitory: Duration,
    /// TCP after both sides sent FIN.
    pub tcp_closing: Duration,
    /// TCP after a reset from either side.
    pub tcp_reset: Duration,
    pub udp: Duration,
    pub icmp: Duration,
}

impl Default for NatTimeouts {
    /// Close to Linux conntrack's and AWS NAT gateway's behaviour: long-lived idle TCP
    /// survives two hours, UDP five minutes, ICMP echo thirty seconds.
    fn default() -> Self {
        Self {
            tcp_established: Duration::from_secs(7440),
            tcp_transitory: Duration::from_secs(240),
            tcp_closing: Duration::from_secs(60),
            tcp_reset: Duration::from_secs(10),
            udp: Duration::from_secs(300),
            icmp: Duration::from_secs(30),
        }
    }
}

impl NatTimeouts {
    /// How long a mapping of `protocol` may stay idle, given the TCP flags seen from the
    /// client (`out_flags`) and from the remote end (`in_flags`).
    pub fn idle_timeout(&self, protocol: u8, out_flags: u8, in_flags: u8) -> Duration {
        match protocol {
            IPPROTO_TCP => {
                let both = out_flags | in_flags;
                if both & TCP_RST != 0 {
                    self.tcp_reset
                } else if out_flags & TCP_FIN != 0 && in_flags & TCP_FIN != 0 {
                    self.tcp_closing
                } else if both & TCP_FIN == 0
                    && in_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
                    && out_flags & TCP_ACK != 0
                {
                    self.tcp_established
                } else {
                    self.tcp_transitory
                }
            }
            IPPROTO_ICMP => self.icmp,
            _ => self.udp,
        }
    }
}

/// Nanoseconds on the clock `bpf_ktime_get_ns` reads (CLOCK_MONOTONIC), for comparing
/// with the `last_seen_ns` of NAT entries.
pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through the pointer: `ts` is a live,
    // writable local for the call. CLOCK_MONOTONIC always exists on Linux, so it cannot
    // fail and leave `ts` unwritten (it is initialised above anyway).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_timeouts_follow_the_connection_state() {
        let t = NatTimeouts::default();
        let tcp = |out, inn| t.idle_timeout(IPPROTO_TCP, out, inn);
        assert_eq!(tcp(TCP_SYN, 0), t.tcp_transitory, "syn, no answer");
        assert_eq!(tcp(TCP_SYN | TCP_ACK, TCP_SYN | TCP_ACK), t.tcp_established);
        assert_eq!(
            tcp(TCP_SYN, TCP_SYN | TCP_ACK),
            t.tcp_transitory,
            "handshake not finished"
        );
        assert_eq!(
            tcp(TCP_SYN | TCP_ACK | TCP_FIN, TCP_SYN | TCP_ACK),
            t.tcp_transitory,
            "half closed"
        );
        assert_eq!(
            tcp(TCP_ACK | TCP_FIN, TCP_SYN | TCP_ACK | TCP_FIN),
            t.tcp_closing
        );
        assert_eq!(
            tcp(TCP_SYN | TCP_ACK, TCP_SYN | TCP_ACK | TCP_RST),
            t.tcp_reset
        );
        assert_eq!(tcp(TCP_RST, 0), t.tcp_reset);
        assert_eq!(t.idle_timeout(17, 0, 0), t.udp);
        assert_eq!(t.idle_timeout(IPPROTO_ICMP, 0, 0), t.icmp);
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_now_ns();
        std::thread::sleep(Duration::from_millis(2));
        let b = monotonic_now_ns();
        assert!(b >= a + 1_000_000, "{a} → {b}");
    }
}
