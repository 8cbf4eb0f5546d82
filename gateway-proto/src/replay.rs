//! Packet-id replay protection as OpenVPN's `replay-window n t` does it (a sliding window of
//! `n` ids plus a time limit on reordering), with a check-then-commit API, and the sender's
//! packet-id counter with its renegotiation and exhaustion limits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Default backtrack window (`replay-window 64 …`).
pub const DEFAULT_WINDOW: u32 = 64;
/// Default time window (`replay-window … 15`).
pub const DEFAULT_TIME_WINDOW: Duration = Duration::from_secs(15);
/// Largest backtrack window OpenVPN accepts.
pub const MAX_WINDOW: u32 = 65_536;
/// Largest time window OpenVPN accepts.
pub const MAX_TIME_WINDOW: Duration = Duration::from_secs(600);
/// Sent packet-id at which a sender starts a soft reset (renegotiation).
pub const RENEGOTIATE_AT: u32 = 0xFF00_0000;

/// Invalid `replay-window` settings (a configuration error, not the peer's fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayConfigError {
    /// The backtrack window is too large.
    #[error("replay-window size {found} too large: expected at most {max}")]
    WindowTooLarge {
        /// The limit.
        max: u32,
        /// The value given.
        found: u32,
    },
    /// The time window is too large.
    #[error("replay-window time {found:?} too large: expected at most {max:?}")]
    TimeWindowTooLarge {
        /// The limit.
        max: Duration,
        /// The value given.
        found: Duration,
    },
}

/// The `replay-window n t` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayConfig {
    window: u32,
    time_window: Duration,
}

impl ReplayConfig {
    /// `window` ids of backtrack (0 = ids must arrive strictly in sequence) and a time
    /// window (zero = no time limit on reordering).
    pub fn new(window: u32, time_window: Duration) -> Result<Self, ReplayConfigError> {
        if window > MAX_WINDOW {
            return Err(ReplayConfigError::WindowTooLarge {
                max: MAX_WINDOW,
                found: window,
            });
        }
        if time_window > MAX_TIME_WINDOW {
            return Err(ReplayConfigError::TimeWindowTooLarge {
                max: MAX_TIME_WINDOW,
                found: time_window,
            });
        }
        Ok(Self {
            window,
            time_window,
        })
    }

    /// The backtrack window in ids.
    pub fn window(&self) -> u32 {
        self.window
    }

    /// The time window.
    pub fn time_window(&self) -> Duration {
        self.time_window
    }
}

impl Default for ReplayConfig {
    fn default() -> Self {
        Self {
            window: DEFAULT_WINDOW,
            time_window: DEFAULT_TIME_WINDOW,
        }
    }
}

/// Why a received packet-id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Packet-id 0 is never sent.
    #[error("packet-id 0: expected 1 or more")]
    ZeroPacketId,
    /// The id was already accepted.
    #[error("packet-id {packet_id} replayed")]
    Replayed {
        /// The id.
        packet_id: u32,
    },
    /// The id is further behind the highest one seen than the window allows.
    #[error("packet-id {packet_id} too old: highest seen {highest}, window {window}")]
    TooOld {
        /// The id.
        packet_id: u32,
        /// The highest id accepted so far.
        highest: u32,
        /// The backtrack window.
        window: u32,
    },
    /// The id is inside the window but a higher id arrived more than the time window ago.
    #[error("packet-id {packet_id} arrived more than {time_window:?} after a higher id")]
    Expired {
        /// The id.
        packet_id: u32,
        /// The time window.
        time_window: Duration,
    },
    /// With a window of 0, ids must follow each other without gaps.
    #[error("packet-id {packet_id} out of sequence: expected {expected}")]
    OutOfSequence {
        /// The id.
        packet_id: u32,
        /// The only id acceptable.
        expected: u32,
    },
    /// The sender timestamp (long-form ids) went backwards.
    #[error("sender time {sender_time} went back: current {current}")]
    TimeBacktrack {
        /// The timestamp received.
        sender_time: u32,
        /// The timestamp of the current id sequence.
        current: u32,
    },
}

/// Receive-side replay state of one key and direction.
///
/// Call [`ReplayWindow::check`] before authenticating a packet and
/// [`ReplayWindow::commit`] only after its tag verified; `commit` checks again, so a batch
/// may check several packets first and a duplicate inside the batch still fails at commit.
///
/// The time window is evaluated at each `now` with millisecond arrival times; OpenVPN
/// expires ids in a periodic sweep with 1 s clock granularity, so it may accept a late id
/// a few seconds longer than we do.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    config: ReplayConfig,
    /// Timestamp of the current id sequence (0 for short-form ids).
    sender_time: u32,
    /// Highest id accepted in the current sequence; 0 before the first one.
    highest: u32,
    /// Where the arrival clock of `seen` starts: the first arrival (moved forward
    /// before the clock overflows).
    epoch: Option<Instant>,
    /// Arrival time of each accepted id in `(highest - window, highest]`, at
    /// `id % window`: milliseconds after `epoch` plus one, 0 for none (4 bytes a slot, a
    /// quarter of an `Option<Instant>`: every session keeps two windows).
    seen: Box<[u32]>,
}

/// Arrival stamps at or past this many milliseconds after the epoch move it forward.
const REBASE_AT_MS: u128 = 1 << 31;
/// How far behind `now` the epoch is put when it moves: arrivals older than this (12
/// days, far beyond any time window) all read as this old afterwards.
const REBASE_KEEP_MS: u128 = 1 << 30;

impl ReplayWindow {
    /// An empty window; allocates `config.window()` slots once.
    pub fn new(config: ReplayConfig) -> Self {
        let slots = usize::try_from(config.window).unwrap_or(0);
        Self {
            config,
            sender_time: 0,
            highest: 0,
            epoch: None,
            seen: vec![0; slots].into_boxed_slice(),
        }
    }

    /// The stamp of an arrival at `now`, moving the epoch forward first if `now` is
    /// too far from it for 32 bits.
    fn stamp(&mut self, now: Instant) -> u32 {
        let epoch = self.epoch.get_or_insert(now);
        let mut ms = now.saturating_duration_since(*epoch).as_millis();
        if ms >= REBASE_AT_MS {
            let shift = ms - REBASE_KEEP_MS;
            *epoch += Duration::from_millis(shift as u64);
            for slot in self.seen.iter_mut().filter(|s| **s != 0) {
                *slot = (u128::from(*slot).saturating_sub(shift) as u32).max(1);
            }
            ms -= shift;
        }
        ms as u32 + 1
    }

    /// The settings.
    pub fn config(&self) -> ReplayConfig {
        self.config
    }

    /// The highest id accepted in the current sequence (0 before the first).
    pub fn highest(&self) -> u32 {
        self.highest
    }

    /// Would a short-form (data channel) `packet_id` be accepted at `now`? Changes nothing.
    pub fn check(&self, packet_id: u32, now: Instant) -> Result<(), ReplayError> {
        self.check_timed(packet_id, 0, now)
    }

    /// Records a short-form `packet_id` as seen at `now`, after its tag verified.
    pub fn commit(&mut self, packet_id: u32, now: Instant) -> Result<(), ReplayError> {
        self.commit_timed(packet_id, 0, now)
    }

    /// Like [`ReplayWindow::check`] for long-form ids (`packet_id`, `sender_time`) as on
    /// tls-auth/tls-crypt control packets: a later `sender_time` starts a new sequence,
    /// an earlier one is refused.
    pub fn check_timed(
        &self,
        packet_id: u32,
        sender_time: u32,
        now: Instant,
    ) -> Result<(), ReplayError> {
        if packet_id == 0 {
            return Err(ReplayError::ZeroPacketId);
        }
        if sender_time < self.sender_time {
            return Err(ReplayError::TimeBacktrack {
                sender_time,
                current: self.sender_time,
            });
        }
        let new_sequence = sender_time > self.sender_time;
        if self.config.window == 0 {
            let expected = if new_sequence {
                1
            } else {
                self.highest.saturating_add(1)
            };
            if (!new_sequence && self.highest == 0) || packet_id == expected {
                return Ok(());
            }
            return Err(ReplayError::OutOfSequence {
                packet_id,
                expected,
            });
        }
        if new_sequence || packet_id > self.highest {
            return Ok(());
        }
        let behind = self.highest - packet_id;
        if behind >= self.config.window {
            return Err(ReplayError::TooOld {
                packet_id,
                highest: self.highest,
                window: self.config.window,
            });
        }
        if self.arrival(packet_id).is_some() {
            return Err(ReplayError::Replayed { packet_id });
        }
        let time_window = self.config.time_window;
        if !time_window.is_zero() {
            let expired = (packet_id..=self.highest)
                .filter_map(|id| self.arrival(id))
                .any(|arrived| now.saturating_duration_since(arrived) > time_window);
            if expired {
                return Err(ReplayError::Expired {
                    packet_id,
                    time_window,
                });
            }
        }
        Ok(())
    }

    /// Like [`ReplayWindow::commit`] for long-form ids.
    pub fn commit_timed(
        &mut self,
        packet_id: u32,
        sender_time: u32,
        now: Instant,
    ) -> Result<(), ReplayError> {
        self.check_timed(packet_id, sender_time, now)?;
        if sender_time > self.sender_time {
            self.sender_time = sender_time;
            self.highest = 0;
            self.seen.fill(0);
        }
        if self.config.window == 0 {
            self.highest = packet_id;
            return Ok(());
        }
        if packet_id > self.highest {
            let advance = packet_id - self.highest;
            if advance >= self.config.window {
                self.seen.fill(0);
            } else {
                for id in self.highest + 1..packet_id {
                    if let Some(slot) = self.slot_mut(id) {
                        *slot = 0;
                    }
                }
            }
            self.highest = packet_id;
        }
        let stamp = self.stamp(now);
        if let Some(slot) = self.slot_mut(packet_id) {
            *slot = stamp;
        }
        Ok(())
    }

    fn slot_index(&self, packet_id: u32) -> Option<usize> {
        let window = self.config.window;
        if window == 0 {
            return None;
        }
        usize::try_from(packet_id % window).ok()
    }

    fn arrival(&self, packet_id: u32) -> Option<Instant> {
        let index = self.slot_index(packet_id)?;
        match (self.seen.get(index).copied()?, self.epoch) {
            (0, _) | (_, None) => None,
            (stamp, Some(epoch)) => Some(epoch + Duration::from_millis(u64::from(stamp - 1))),
        }
    }

    fn slot_mut(&mut self, packet_id: u32) -> Option<&mut u32> {
        let index = self.slot_index(packet_id)?;
        self.seen.get_mut(index)
    }
}

/// The 32-bit packet-id space of a key is used up: renegotiate before sending more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("packet-id space exhausted: the key must be renegotiated")]
pub struct PacketIdExhausted;

/// The sender's packet-id counter for one key and direction: 1, 2, … up to `u32::MAX`,
/// never 0 and never wrapping. Shared senders may call [`PacketIdCounter::next`]
/// concurrently; every call gets a distinct id.
#[derive(Debug)]
pub struct PacketIdCounter {
    next: AtomicU64,
}

impl PacketIdCounter {
    /// A counter whose first id is 1.
    pub const fn new() -> Self {
        Self {
            next: AtomicU64::new(1),
        }
    }

    /// A counter whose next id is `first` (for tests; 0 is raised to 1).
    #[cfg(test)]
    pub(crate) const fn starting_at(first: u32) -> Self {
        let first = if first == 0 { 1 } else { first as u64 };
        Self {
            next: AtomicU64::new(first),
        }
    }

    /// Takes the next id, or fails once `u32::MAX` has been used.
    pub fn next(&self) -> Result<u32, PacketIdExhausted> {
        // A u64 cannot realistically wrap, so a failed call leaves the counter failing.
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        u32::try_from(id).map_err(|_| PacketIdExhausted)
    }

    /// True once [`RENEGOTIATE_AT`] ids have been handed out: start a soft reset.
    pub fn needs_renegotiation(&self) -> bool {
        self.next.load(Ordering::Relaxed) > u64::from(RENEGOTIATE_AT)
    }
}

impl Default for PacketIdCounter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn secs(base: Instant, s: u64) -> Instant {
        base + Duration::from_secs(s)
    }

    fn accept(w: &mut ReplayWindow, id: u32, now: Instant) -> Result<(), ReplayError> {
        w.check(id, now)?;
        w.commit(id, now)
    }

    #[test]
    fn config_bounds() {
        assert_eq!(
            ReplayConfig::new(65_537, DEFAULT_TIME_WINDOW),
            Err(ReplayConfigError::WindowTooLarge {
                max: 65_536,
                found: 65_537
            })
        );
        assert_eq!(
            ReplayConfig::new(64, Duration::from_secs(601)),
            Err(ReplayConfigError::TimeWindowTooLarge {
                max: MAX_TIME_WINDOW,
                found: Duration::from_secs(601)
            })
        );
        let c = ReplayConfig::default();
        assert_eq!((c.window(), c.time_window()), (64, Duration::from_secs(15)));
    }

    #[test]
    fn zero_is_rejected() {
        let w = ReplayWindow::new(ReplayConfig::default());
        assert_eq!(w.check(0, Instant::now()), Err(ReplayError::ZeroPacketId));
    }

    #[test]
    fn replay_is_rejected_and_check_alone_marks_nothing() {
        let t = Instant::now();
        let mut w = ReplayWindow::new(ReplayConfig::default());
        assert_eq!(w.check(1, t), Ok(()));
        assert_eq!(w.check(1, t), Ok(()), "check must not mark the id seen");
        assert_eq!(w.commit(1, t), Ok(()));
        assert_eq!(w.check(1, t), Err(ReplayError::Replayed { packet_id: 1 }));
        assert_eq!(w.commit(1, t), Err(ReplayError::Replayed { packet_id: 1 }));
        assert_eq!(w.highest(), 1);
    }

    #[test]
    fn duplicate_inside_a_checked_batch_fails_at_commit() {
        let t = Instant::now();
        let mut w = ReplayWindow::new(ReplayConfig::default());
        assert!(w.check(7, t).is_ok() && w.check(7, t).is_ok());
        assert_eq!(w.commit(7, t), Ok(()));
        assert_eq!(w.commit(7, t), Err(ReplayError::Replayed { packet_id: 7 }));
    }

    #[test]
    fn reordering_inside_the_window() {
        let t = Instant::now();
        let mut w = ReplayWindow::new(ReplayConfig::default());
        accept(&mut w, 100, t).unwrap();
        // First packet 100: ids 37..=99 are still acceptable, 36 is 64 behind.
        assert_eq!(accept(&mut w, 37, t), Ok(()));
        assert_eq!(
            w.check(36, t),
            Err(ReplayError::TooOld {
                packet_id: 36,
                highest: 100,
                window: 64
            })
        );
        assert_eq!(accept(&mut w, 99, t), Ok(()));
        assert_eq!(w.check(99, t), Err(ReplayError::Replayed { packet_id: 99 }));
        // Moving up clears the slots reused by the new ids.
        accept(&mut w, 164, t).unwrap();
        assert_eq!(accept(&mut w, 163, t), Ok(()));
        assert_eq!(w.check(101, t), Ok(()));
        assert_eq!(
            w.check(100, t),
            Err(ReplayError::TooOld {
                packet_id: 100,
                highest: 164,
                window: 64
            })
        );
        // A jump beyond the window forgets everything older.
        accept(&mut w, 1000, t).unwrap();
        assert_eq!(w.check(937, t), Ok(()));
        assert!(matches!(w.check(936, t), Err(ReplayError::TooOld { .. })));
    }

    #[test]
    fn the_arrival_clock_survives_weeks_without_a_rekey() {
        let t0 = Instant::now();
        let days = |n: u64| t0 + Duration::from_secs(n * 86_400);
        let mut w = ReplayWindow::new(ReplayConfig::default());
        accept(&mut w, 1, t0).unwrap();
        // 30 days on, past the 32-bit millisecond clock (24.8 days): the epoch moves.
        accept(&mut w, 3, days(30)).unwrap();
        assert_eq!(w.arrival(3), Some(days(30)));
        // 1 is still remembered (as long ago), 2 is judged by 3's arrival.
        assert_eq!(
            w.check(1, days(30)),
            Err(ReplayError::Replayed { packet_id: 1 })
        );
        assert_eq!(w.check(2, days(30) + Duration::from_secs(15)), Ok(()));
        assert!(matches!(
            w.check(2, days(30) + Duration::from_secs(16)),
            Err(ReplayError::Expired { .. })
        ));
        // And again 60 days on.
        accept(&mut w, 4, days(60)).unwrap();
        assert_eq!(w.arrival(4), Some(days(60)));
        assert_eq!(
            w.check(3, days(60)),
            Err(ReplayError::Replayed { packet_id: 3 })
        );
    }

    #[test]
    fn time_window_expires_late_reordered_ids() {
        let t0 = Instant::now();
        let mut w = ReplayWindow::new(ReplayConfig::default());
        accept(&mut w, 1, t0).unwrap();
        accept(&mut w, 3, t0).unwrap();
        // 2 may arrive up to 15 s after 3.
        assert_eq!(w.check(2, secs(t0, 15)), Ok(()));
        assert_eq!(
            w.check(2, secs(t0, 16)),
            Err(ReplayError::Expired {
                packet_id: 2,
                time_window: DEFAULT_TIME_WINDOW
            })
        );
        // New ids are always fine, and a higher id seen recently does not rescue 2:
        // 3 arrived too long ago.
        accept(&mut w, 4, secs(t0, 16)).unwrap();
        assert!(matches!(
            w.check(2, secs(t0, 16)),
            Err(ReplayError::Expired { .. })
        ));
        // But an unseen id above 3 is judged by later arrivals only.
        accept(&mut w, 6, secs(t0, 16)).unwrap();
        assert_eq!(w.check(5, secs(t0, 20)), Ok(()));
    }

    #[test]
    fn zero_time_window_disables_the_time_check() {
        let t0 = Instant::now();
        let mut w = ReplayWindow::new(ReplayConfig::new(64, Duration::ZERO).unwrap());
        accept(&mut w, 3, t0).unwrap();
        assert_eq!(w.check(2, secs(t0, 500)), Ok(()));
    }

    #[test]
    fn window_zero_requires_sequence() {
        let t = Instant::now();
        let mut w = ReplayWindow::new(ReplayConfig::new(0, Duration::ZERO).unwrap());
        accept(&mut w, 5, t).unwrap();
        assert_eq!(
            w.check(7, t),
            Err(ReplayError::OutOfSequence {
                packet_id: 7,
                expected: 6
            })
        );
        assert!(matches!(
            w.check(5, t),
            Err(ReplayError::OutOfSequence { .. })
        ));
        assert_eq!(accept(&mut w, 6, t), Ok(()));
        // A new sender time restarts at 1.
        assert!(matches!(
            w.check_timed(7, 9, t),
            Err(ReplayError::OutOfSequence { expected: 1, .. })
        ));
        assert_eq!(w.commit_timed(1, 9, t), Ok(()));
    }

    #[test]
    fn long_form_time_moves_forward_only() {
        let t = Instant::now();
        let mut w = ReplayWindow::new(ReplayConfig::default());
        w.commit_timed(1, 0x6500_0000, t).unwrap();
        w.commit_timed(2, 0x6500_0000, t).unwrap();
        assert_eq!(
            w.check_timed(3, 0x64FF_FFFF, t),
            Err(ReplayError::TimeBacktrack {
                sender_time: 0x64FF_FFFF,
                current: 0x6500_0000
            })
        );
        assert_eq!(
            w.check_timed(2, 0x6500_0000, t),
            Err(ReplayError::Replayed { packet_id: 2 })
        );
        // A later time starts a fresh sequence: id 1 is new again.
        w.commit_timed(1, 0x6500_0001, t).unwrap();
        assert_eq!(w.highest(), 1);
        assert_eq!(
            w.check_timed(1, 0x6500_0001, t),
            Err(ReplayError::Replayed { packet_id: 1 })
        );
    }

    #[test]
    fn counter_starts_at_one_and_never_wraps() {
        let c = PacketIdCounter::new();
        assert_eq!(c.next(), Ok(1));
        assert_eq!(c.next(), Ok(2));
        assert!(!c.needs_renegotiation());

        let c = PacketIdCounter::starting_at(RENEGOTIATE_AT - 1);
        assert_eq!(c.next(), Ok(RENEGOTIATE_AT - 1));
        assert!(!c.needs_renegotiation());
        assert_eq!(c.next(), Ok(RENEGOTIATE_AT));
        assert!(c.needs_renegotiation());

        let c = PacketIdCounter::starting_at(u32::MAX);
        assert_eq!(c.next(), Ok(u32::MAX));
        assert_eq!(c.next(), Err(PacketIdExhausted));
        assert_eq!(c.next(), Err(PacketIdExhausted));
    }

    /// The rule of §9.2 stated directly over every id ever accepted.
    struct Model {
        window: u32,
        time_window: Duration,
        highest: u32,
        accepted: BTreeMap<u32, Instant>,
    }

    impl Model {
        fn accepts(&self, id: u32, now: Instant) -> bool {
            if id == 0 {
                return false;
            }
            if id > self.highest {
                return true;
            }
            if self.highest - id >= self.window || self.accepted.contains_key(&id) {
                return false;
            }
            self.time_window.is_zero()
                || !self
                    .accepted
                    .range(id..=self.highest)
                    .any(|(_, &at)| now.saturating_duration_since(at) > self.time_window)
        }
    }

    proptest! {
        #[test]
        fn window_matches_reference_model(
            window in 1u32..80,
            time_window in 0u64..20,
            steps in prop::collection::vec((0u32..120, 0u64..4, any::<bool>()), 1..300),
        ) {
            let config = ReplayConfig::new(window, Duration::from_secs(time_window)).unwrap();
            let mut w = ReplayWindow::new(config);
            let mut model = Model {
                window,
                time_window: config.time_window(),
                highest: 0,
                accepted: BTreeMap::new(),
            };
            let start = Instant::now();
            let mut now = start;
            let mut base = 0u32;
            for (offset, advance, jump) in steps {
                now += Duration::from_secs(advance);
                if jump {
                    base += 40;
                }
                let id = (base + offset).saturating_sub(60);
                let expected = model.accepts(id, now);
                prop_assert_eq!(w.check(id, now).is_ok(), expected, "check id {} highest {}", id, model.highest);
                if expected {
                    prop_assert_eq!(w.commit(id, now), Ok(()));
                    model.accepted.insert(id, now);
                    model.highest = model.highest.max(id);
                    prop_assert_eq!(w.highest(), model.highest);
                } else {
                    prop_assert!(w.commit(id, now).is_err());
                }
            }
        }
    }
}
