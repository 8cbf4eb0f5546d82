//! The 2.6 stateless HMAC-cookie server handshake (protocol doc §4.4–4.5): answer a client
//! reset without storing anything, accept the client's next packet only if it echoes our
//! keyed server session id, and rate-limit the reset reflections.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ring::hmac;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::packet::{Acks, ControlRepr, KeyId, Opcode, SESSION_ID_LEN, SessionId};
use crate::wrap::ReplayStamp;

/// Default `hand-window` in seconds; the cookie time slot is half of it (30 s).
pub const DEFAULT_HAND_WINDOW_SECS: u64 = 60;
/// Shortest process secret accepted.
pub const MIN_SECRET_LEN: usize = 16;
/// Time slots whose cookie is accepted: the current one and the two before it.
pub const ACCEPTED_SLOTS: u64 = 3;
/// Replay-id the wrap layer puts on the stateless server reset.
pub const SERVER_RESET_REPLAY_ID: u32 = 1;
/// First replay-id the session sends after the stateless reset.
pub const SESSION_FIRST_REPLAY_ID: u32 = SERVER_RESET_REPLAY_ID + 1;
/// Top byte of a tls-crypt-v2 client's replay-id when it supports early negotiation.
pub const EARLY_NEG_MARKER: u8 = 0x0F;
/// TLV type EARLY_NEG_FLAGS.
pub const TLV_EARLY_NEG_FLAGS: u16 = 1;
/// EARLY_NEG_FLAGS bit asking the client to resend its WKc (P_CONTROL_WKC_V1).
pub const EARLY_NEG_RESEND_WKC: u16 = 1;
/// The reset payload answering an early-negotiation V3 reset: EARLY_NEG_FLAGS = RESEND_WKC.
pub const EARLY_NEG_TLV: [u8; 6] = {
    let [t0, t1] = TLV_EARLY_NEG_FLAGS.to_be_bytes();
    let [v0, v1] = EARLY_NEG_RESEND_WKC.to_be_bytes();
    [t0, t1, 0x00, 0x02, v0, v1]
};
/// Default reset reflections allowed per period (2.6 `connect-freq-initial 100 10`).
pub const DEFAULT_RESETS_PER_PERIOD: u32 = 100;
/// Default rate-limit period.
pub const DEFAULT_RESET_PERIOD: Duration = Duration::from_secs(10);

/// Invalid cookie or rate-limit settings (our configuration, not the peer's fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CookieConfigError {
    /// The process secret is too short to key the HMAC.
    #[error("cookie secret of {found} bytes: expected at least {MIN_SECRET_LEN}")]
    SecretTooShort {
        /// Bytes given.
        found: usize,
    },
    /// `hand-window` 0 gives no time slot.
    #[error("hand-window 0 s: expected at least 1")]
    ZeroHandWindow,
    /// A rate limit of zero resets or over a zero period.
    #[error("reset rate limit {count} per {period:?}: expected a positive count and period")]
    InvalidRateLimit {
        /// Resets per period.
        count: u32,
        /// The period.
        period: Duration,
    },
}

/// A packet the stateless handshake refuses; all are the peer's doing: drop it silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    /// Not HARD_RESET_CLIENT_V2/V3 where a client reset is expected.
    #[error("{found} where a client hard reset was expected")]
    NotAClientReset {
        /// The opcode found.
        found: Opcode,
    },
    /// Not P_ACK_V1, P_CONTROL_V1 or P_CONTROL_WKC_V1 where the third packet is expected.
    #[error("{found} where P_ACK_V1, P_CONTROL_V1 or P_CONTROL_WKC_V1 was expected")]
    NotAContinuation {
        /// The opcode found.
        found: Opcode,
    },
    /// A handshake packet with key_id other than 0.
    #[error("key_id {found} in the initial handshake: expected 0")]
    NonZeroKeyId {
        /// The key_id found.
        found: KeyId,
    },
    /// A packet other than P_ACK_V1 without a msg-id.
    #[error("{opcode} without a message id")]
    MissingMessageId {
        /// The opcode found.
        opcode: Opcode,
    },
    /// A client reset whose msg-id is not 0.
    #[error("client reset with message id {found}: expected 0")]
    ResetMessageId {
        /// The msg-id found.
        found: u32,
    },
    /// A V3 reset without the early-negotiation replay-id marker (a 2.5 client): it will not
    /// resend its WKc, so it needs a stateful handshake or refusal.
    #[error("tls-crypt-v2 reset with replay-id {replay_id:?}: no early-negotiation marker")]
    NoEarlyNegotiation {
        /// The unwrapped replay-id, if any.
        replay_id: Option<u32>,
    },
    /// A V3 reset while early negotiation is switched off.
    #[error("tls-crypt-v2 reset but early negotiation is disabled")]
    EarlyNegotiationDisabled,
    /// The third packet carries no ACK, hence no echoed server session id.
    #[error("{opcode} without ACKs: the echoed server session id is missing")]
    MissingAck {
        /// The opcode found.
        opcode: Opcode,
    },
    /// The third packet ACKs an id we cannot have sent yet.
    #[error("ACK of message id {found}: expected at most 1")]
    AckTooHigh {
        /// The id found.
        found: u32,
    },
    /// The third packet's msg-id is too high to open a session.
    #[error("message id {found}: expected at most 1")]
    MessageIdTooHigh {
        /// The id found.
        found: u32,
    },
    /// The echoed session id matches none of the accepted time slots.
    #[error("echoed server session id matches no recent cookie")]
    SessionIdMismatch,
}

/// Cookie-handshake settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieConfig {
    /// `hand-window` in seconds; the time slot is `(hand_window + 1) / 2`.
    pub hand_window_secs: u64,
    /// Answer tls-crypt-v2 V3 resets carrying the `0x0F` marker with EARLY_NEG_FLAGS
    /// RESEND_WKC (§4.5); when false every V3 reset is refused.
    pub early_negotiation: bool,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            hand_window_secs: DEFAULT_HAND_WINDOW_SECS,
            early_negotiation: true,
        }
    }
}

/// The keyed server-session-id generator and checker. `Debug` does not print the key.
#[derive(Clone)]
pub struct CookieKey {
    key: hmac::Key,
    slot_secs: u64,
    early_negotiation: bool,
}

impl fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieKey")
            .field("slot_secs", &self.slot_secs)
            .field("early_negotiation", &self.early_negotiation)
            .finish_non_exhaustive()
    }
}

/// The stateless answer to a client reset: send [`repr`](Self::repr) wrapped with
/// [`replay_stamp`](Self::replay_stamp), then forget it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetReply {
    /// Our session id `Ss` for this client and time slot.
    pub session_id: SessionId,
    /// The client's session id `Cs`.
    pub client_session_id: SessionId,
    /// True when the reply carries EARLY_NEG_FLAGS RESEND_WKC.
    pub early_negotiation: bool,
}

impl ResetReply {
    /// The reset payload: [`EARLY_NEG_TLV`] or empty.
    pub fn payload(&self) -> &'static [u8] {
        if self.early_negotiation {
            &EARLY_NEG_TLV
        } else {
            &[]
        }
    }

    /// HARD_RESET_SERVER_V2, key_id 0, own sid `Ss`, ACK \[0\] for `Cs`, msg-id 0.
    pub fn repr(&self) -> ControlRepr<'static> {
        let mut acks = Acks::new();
        // An empty list takes one id.
        let _ = acks.push(0);
        ControlRepr {
            opcode: Opcode::ControlHardResetServerV2,
            key_id: KeyId::ZERO,
            session_id: self.session_id,
            acks,
            remote_session_id: Some(self.client_session_id),
            message_id: Some(0),
            payload: self.payload(),
        }
    }

    /// Replay stamp for wrapping: id [`SERVER_RESET_REPLAY_ID`], `unix_time` the sender's
    /// current Unix time. The session later sends replay-ids from [`SESSION_FIRST_REPLAY_ID`]
    /// with a replay-time not earlier than this one.
    pub fn replay_stamp(&self, unix_time: u32) -> ReplayStamp {
        ReplayStamp {
            id: SERVER_RESET_REPLAY_ID,
            time: unix_time,
        }
    }
}

/// What the session needs once the client's third packet passed [`CookieKey::verify`]:
/// both resets count as exchanged and ACKed, so reliability starts at msg-id 1 both ways
/// (`Reliable::with_next_ids(config, 1, 1)`); then process the packet normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieSession {
    /// Our session id `Ss`.
    pub session_id: SessionId,
    /// The client's session id `Cs`.
    pub peer_session_id: SessionId,
    /// The next msg-id expected from the client (1).
    pub next_rx_message_id: u32,
    /// The msg-id of our next new packet (1).
    pub next_tx_message_id: u32,
    /// The wrap layer's next send replay-id ([`SESSION_FIRST_REPLAY_ID`]).
    pub next_tx_replay_id: u32,
    /// How many slots ago the cookie was issued (0, 1 or 2).
    pub slot_age: u64,
}

impl CookieKey {
    /// A generator keyed by `secret` (random bytes chosen once per process).
    pub fn new(secret: &[u8], config: CookieConfig) -> Result<Self, CookieConfigError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(CookieConfigError::SecretTooShort {
                found: secret.len(),
            });
        }
        if config.hand_window_secs == 0 {
            return Err(CookieConfigError::ZeroHandWindow);
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            slot_secs: config.hand_window_secs.div_ceil(2),
            early_negotiation: config.early_negotiation,
        })
    }

    /// Length of a time slot in seconds: `(hand_window + 1) / 2`.
    pub fn slot_secs(&self) -> u64 {
        self.slot_secs
    }

    /// The time slot of `now_secs` (seconds since any fixed epoch the caller keeps).
    pub fn time_slot(&self, now_secs: u64) -> u64 {
        now_secs / self.slot_secs
    }

    /// `Ss` = first 8 bytes of HMAC-SHA256(secret, slot ‖ client ip:port ‖ Cs).
    pub fn server_session_id(
        &self,
        slot: u64,
        client: SocketAddr,
        client_session_id: SessionId,
    ) -> SessionId {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&slot.to_be_bytes());
        match client {
            SocketAddr::V4(v4) => {
                ctx.update(&[4]);
                ctx.update(&v4.ip().octets());
            }
            SocketAddr::V6(v6) => {
                ctx.update(&[6]);
                ctx.update(&v6.ip().octets());
            }
        }
        ctx.update(&client.port().to_be_bytes());
        ctx.update(&client_session_id.0);
        let tag = ctx.sign();
        let mut sid = [0u8; SESSION_ID_LEN];
        for (dst, src) in sid.iter_mut().zip(tag.as_ref()) {
            *dst = *src;
        }
        SessionId(sid)
    }

    /// Answers a wrap-checked client reset from `client` (rule 1); its ACKs and payload are
    /// ignored. `client_replay_id` is the replay-id the wrap layer unwrapped (`None` without
    /// wrapping); a V3 reset gets the early-negotiation TLV when it carries the `0x0F`
    /// marker, and is refused without it (the client would not resend its WKc).
    pub fn reply_to_reset(
        &self,
        reset: &ControlRepr<'_>,
        client: SocketAddr,
        client_replay_id: Option<u32>,
        now_secs: u64,
    ) -> Result<ResetReply, CookieError> {
        let early_negotiation = match reset.opcode {
            Opcode::ControlHardResetClientV2 => false,
            Opcode::ControlHardResetClientV3 => true,
            found => return Err(CookieError::NotAClientReset { found }),
        };
        check_key_id(reset.key_id)?;
        match reset.message_id {
            Some(0) => {}
            Some(found) => return Err(CookieError::ResetMessageId { found }),
            None => {
                return Err(CookieError::MissingMessageId {
                    opcode: reset.opcode,
                });
            }
        }
        if early_negotiation {
            if !self.early_negotiation {
                return Err(CookieError::EarlyNegotiationDisabled);
            }
            let marked = client_replay_id.is_some_and(|id| id >> 24 == u32::from(EARLY_NEG_MARKER));
            if !marked {
                return Err(CookieError::NoEarlyNegotiation {
                    replay_id: client_replay_id,
                });
            }
        }
        let slot = self.time_slot(now_secs);
        Ok(ResetReply {
            session_id: self.server_session_id(slot, client, reset.session_id),
            client_session_id: reset.session_id,
            early_negotiation,
        })
    }

    /// Checks the client's next packet from `client` (rule 2): P_ACK_V1, P_CONTROL_V1 or
    /// P_CONTROL_WKC_V1 with key_id 0, ACKed ids ≤ 1, msg-id ≤ 1, and an echoed server sid
    /// equal to `Ss` of the current or one of the two previous slots (constant time).
    pub fn verify(
        &self,
        packet: &ControlRepr<'_>,
        client: SocketAddr,
        now_secs: u64,
    ) -> Result<CookieSession, CookieError> {
        let opcode = packet.opcode;
        if !matches!(
            opcode,
            Opcode::AckV1 | Opcode::ControlV1 | Opcode::ControlWkcV1
        ) {
            return Err(CookieError::NotAContinuation { found: opcode });
        }
        check_key_id(packet.key_id)?;
        if opcode != Opcode::AckV1 {
            match packet.message_id {
                None => return Err(CookieError::MissingMessageId { opcode }),
                Some(found) if found > 1 => return Err(CookieError::MessageIdTooHigh { found }),
                Some(_) => {}
            }
        }
        let Some(echoed) = packet.remote_session_id.filter(|_| !packet.acks.is_empty()) else {
            return Err(CookieError::MissingAck { opcode });
        };
        if let Some(&found) = packet.acks.as_slice().iter().find(|&&id| id > 1) {
            return Err(CookieError::AckTooHigh { found });
        }
        let current = self.time_slot(now_secs);
        let mut matched = Choice::from(0);
        let mut slot_age = 0u64;
        for age in 0..ACCEPTED_SLOTS {
            let Some(slot) = current.checked_sub(age) else {
                break;
            };
            let expected = self.server_session_id(slot, client, packet.session_id);
            let hit = expected.0.ct_eq(&echoed.0);
            slot_age = u64::conditional_select(&slot_age, &age, hit & !matched);
            matched |= hit;
        }
        if !bool::from(matched) {
            return Err(CookieError::SessionIdMismatch);
        }
        Ok(CookieSession {
            session_id: echoed,
            peer_session_id: packet.session_id,
            next_rx_message_id: 1,
            next_tx_message_id: 1,
            next_tx_replay_id: SESSION_FIRST_REPLAY_ID,
            slot_age,
        })
    }
}

fn check_key_id(key_id: KeyId) -> Result<(), CookieError> {
    if key_id != KeyId::ZERO {
        return Err(CookieError::NonZeroKeyId { found: key_id });
    }
    Ok(())
}

/// Token bucket limiting stateless reset reflections: `count` per `period`, bursts up to
/// `count`, starting full. One per listening socket, shared by all clients like 2.6's
/// `connect-freq-initial`; ask it before [`CookieKey::reply_to_reset`]. Time is passed in.
#[derive(Debug, Clone)]
pub struct ResetRateLimiter {
    /// Fill level in token-nanoseconds: one token is `period_nanos` units.
    level: u128,
    capacity: u128,
    token_cost: u128,
    refill_per_nano: u128,
    last: Option<Instant>,
}

impl Default for ResetRateLimiter {
    fn default() -> Self {
        Self::with_limit(DEFAULT_RESETS_PER_PERIOD, DEFAULT_RESET_PERIOD)
    }
}

impl ResetRateLimiter {
    /// Allows `count` resets per `period`.
    pub fn new(count: u32, period: Duration) -> Result<Self, CookieConfigError> {
        if count == 0 || period.is_zero() {
            return Err(CookieConfigError::InvalidRateLimit { count, period });
        }
        Ok(Self::with_limit(count, period))
    }

    fn with_limit(count: u32, period: Duration) -> Self {
        let token_cost = period.as_nanos();
        let capacity = token_cost.saturating_mul(u128::from(count));
        Self {
            level: capacity,
            capacity,
            token_cost,
            refill_per_nano: u128::from(count),
            last: None,
        }
    }

    /// Takes a token if one is left at `now`; false means: do not answer this reset.
    /// A `now` earlier than a previous one adds nothing.
    pub fn allow(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_nanos();
            self.level = self
                .level
                .saturating_add(elapsed.saturating_mul(self.refill_per_nano))
                .min(self.capacity);
        }
        if self.last.is_none_or(|last| now > last) {
            self.last = Some(now);
        }
        if self.level >= self.token_cost {
            self.level -= self.token_cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests;
