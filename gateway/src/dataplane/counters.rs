//! The data plane's counters, defined once: [`Counter`] names each one, [`Counters`] is
//! one worker's live set (atomics, written by the worker, read by the control plane) and
//! [`Totals`] a snapshot or sum of them, which `gateway dataplane` and the counters log
//! line render by [`Counter::name`].

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de, ser::SerializeMap};

macro_rules! counters {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// One data-plane counter.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Counter {
            $($(#[$doc])* $variant,)*
        }

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: &[Counter] = &[$(Counter::$variant,)*];

            /// The name in `gateway dataplane`, its JSON and the log line.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Counter::$variant => $name,)*
                }
            }
        }
    };
}

counters! {
    /// Data packets opened (tunnel packets from clients).
    RxPackets => "rx_packets",
    /// Their plaintext bytes.
    RxBytes => "rx_bytes",
    /// Data packets sealed and sent.
    TxPackets => "tx_packets",
    /// Their plaintext bytes.
    TxBytes => "tx_bytes",
    /// Data packets that failed authentication or the replay window.
    RxDropped => "rx_dropped",
    /// Tunnelled packets whose source was not the session's lease.
    Spoofed => "spoofed",
    /// Frames read from the TAP, or steered by `target`, for no carried session.
    NoSession => "no_session",
    /// Datagrams, and frames from AF_XDP sockets, too big for a slot.
    Truncated => "truncated",
    /// Reports dropped because the control plane was behind.
    ReportOverflow => "report_overflow",
    /// Datagrams the kernel refused or could not take, and failed TAP writes.
    SendErrors => "send_errors",
    /// UDP GSO sends (each several datagrams to one client).
    GsoSends => "gso_sends",
    /// UDP GRO reads (each several datagrams of one client).
    GroReads => "gro_reads",
    /// Data packets `edge` steered to the worker's AF_XDP sockets.
    XskEdgeFrames => "xsk_edge_frames",
    /// Translated replies `target` steered to the worker's AF_XDP sockets.
    XskTargetFrames => "xsk_target_frames",
    /// Frames from AF_XDP sockets that were not the IPv4 (and, from `edge`, UDP) they
    /// should be.
    Malformed => "malformed",
    /// Frames the kernel dropped on the way into the worker's AF_XDP sockets (rx ring
    /// full, no free frame, too long), as the kernel counts them (`XDP_STATISTICS`),
    /// read about once a second.
    XskKernelDrops => "xsk_kernel_drops",
    /// Replies whose TCP/UDP checksum a local sender had left partial, finished here
    /// before sealing (see `frame::finish_partial_checksum`).
    ChecksumsFinished => "checksums_finished",
}

/// How many counters there are.
pub const COUNTERS: usize = Counter::ALL.len();

/// One worker's counters.
#[derive(Debug, Default)]
pub struct Counters([AtomicU64; COUNTERS]);

impl Counters {
    pub fn add(&self, counter: Counter, n: u64) {
        self.0[counter as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a counter that mirrors one kept elsewhere (the kernel's).
    pub fn set(&self, counter: Counter, n: u64) {
        self.0[counter as usize].store(n, Ordering::Relaxed);
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.0[counter as usize].load(Ordering::Relaxed)
    }

    /// The values now.
    pub fn snapshot(&self) -> Totals {
        let mut totals = Totals::default();
        for &counter in Counter::ALL {
            totals.0[counter as usize] = self.get(counter);
        }
        totals
    }
}

/// Counter values: one worker's, or the sum of every worker's. Serialized as a map from
/// [`Counter::name`] to value.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals([u64; COUNTERS]);

impl Totals {
    pub fn get(&self, counter: Counter) -> u64 {
        self.0[counter as usize]
    }

    /// Adds `other`'s values to these.
    pub fn add(&mut self, other: &Totals) {
        for (sum, n) in self.0.iter_mut().zip(other.0) {
            *sum = sum.saturating_add(n);
        }
    }

    /// Each counter with its value, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL.iter().map(|&c| (c, self.get(c)))
    }

    /// Totals with the given values, the rest zero (tests and fixtures).
    pub fn from_pairs(pairs: &[(Counter, u64)]) -> Self {
        let mut totals = Self::default();
        for &(counter, n) in pairs {
            totals.0[counter as usize] = n;
        }
        totals
    }
}

impl std::ops::Index<Counter> for Totals {
    type Output = u64;

    fn index(&self, counter: Counter) -> &u64 {
        &self.0[counter as usize]
    }
}

impl Serialize for Totals {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(COUNTERS))?;
        for (counter, n) in self.iter() {
            map.serialize_entry(counter.name(), &n)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Totals {
    /// Every counter must be present; names this build does not know are refused, so a
    /// CLI and a gateway of different versions say so instead of showing zeros.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<String, u64>::deserialize(deserializer)?;
        let mut totals = Totals::default();
        for (name, n) in &map {
            let counter = Counter::ALL
                .iter()
                .find(|c| c.name() == name)
                .ok_or_else(|| de::Error::unknown_field(name, &[]))?;
            totals.0[*counter as usize] = *n;
        }
        if let Some(missing) = Counter::ALL.iter().find(|c| !map.contains_key(c.name())) {
            return Err(de::Error::missing_field(missing.name()));
        }
        Ok(totals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_indexes_dense() {
        let names: std::collections::HashSet<_> = Counter::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), COUNTERS);
        for (i, &c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c as usize, i);
        }
    }

    #[test]
    fn totals_sum_and_round_trip_as_a_map_of_names() {
        let worker = Counters::default();
        worker.add(Counter::RxPackets, 3);
        worker.add(Counter::RxPackets, 2);
        worker.set(Counter::XskKernelDrops, 9);
        let mut sum = worker.snapshot();
        sum.add(&Totals::from_pairs(&[(Counter::RxPackets, 1)]));
        assert_eq!(sum[Counter::RxPackets], 6);
        assert_eq!(sum.get(Counter::XskKernelDrops), 9);
        let text = serde_json::to_string(&sum).unwrap();
        assert!(
            text.starts_with(r#"{"rx_packets":6,"rx_bytes":0,"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Totals>(&text).unwrap(), sum);
        let unknown = text.replacen("rx_bytes", "rx_byte", 1);
        assert!(serde_json::from_str::<Totals>(&unknown).is_err());
        let missing = r#"{"rx_packets":6}"#;
        let error = serde_json::from_str::<Totals>(missing).unwrap_err();
        assert!(error.to_string().contains("rx_bytes"), "{error}");
    }
}
