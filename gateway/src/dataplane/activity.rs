//! A session's data-traffic record, shared between the workers that carry its packets and
//! the control plane that reads it (keepalive timers, `gateway connections`).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// A session's data traffic: when it last received and sent data packets (read by the
/// control plane for its keepalive timers) and how many tunnel packets and bytes went
/// each way (for `gateway connections`). Updated by the workers and, for what it opens
/// or seals itself, the control plane.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    /// Milliseconds after `epoch`, plus one (0: never).
    rx: AtomicU64,
    tx: AtomicU64,
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
}

/// Tunnel packets and their bytes, from the client (`rx`) and to it (`tx`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

impl Activity {
    pub fn new(now: Instant) -> Self {
        Self {
            epoch: now,
            rx: AtomicU64::new(0),
            tx: AtomicU64::new(0),
            rx_packets: AtomicU64::new(0),
            rx_bytes: AtomicU64::new(0),
            tx_packets: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
        }
    }

    /// A tunnel packet of `len` bytes came from the client.
    pub fn count_received(&self, len: usize) {
        add(&self.rx_packets, 1);
        add(&self.rx_bytes, len as u64);
    }

    /// A tunnel packet of `len` bytes went to the client.
    pub fn count_sent(&self, len: usize) {
        add(&self.tx_packets, 1);
        add(&self.tx_bytes, len as u64);
    }

    pub fn traffic(&self) -> Traffic {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Traffic {
            rx_packets: get(&self.rx_packets),
            rx_bytes: get(&self.rx_bytes),
            tx_packets: get(&self.tx_packets),
            tx_bytes: get(&self.tx_bytes),
        }
    }

    fn stamp(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }

    fn read(&self, at: &AtomicU64) -> Option<Instant> {
        match at.load(Ordering::Relaxed) {
            0 => None,
            ms => self.epoch.checked_add(Duration::from_millis(ms - 1)),
        }
    }

    pub fn received(&self, now: Instant) {
        self.rx.fetch_max(self.stamp(now), Ordering::Relaxed);
    }

    pub fn sent(&self, now: Instant) {
        self.tx.fetch_max(self.stamp(now), Ordering::Relaxed);
    }

    pub fn last_received(&self) -> Option<Instant> {
        self.read(&self.rx)
    }

    pub fn last_sent(&self) -> Option<Instant> {
        self.read(&self.tx)
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
