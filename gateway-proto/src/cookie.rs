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
mod tests {
    use super::*;
    use crate::packet::ControlPacket;
    use crate::reliable::{MessageOutcome, Reliable, ReliableConfig};
    use crate::wrap::TlsCrypt;
    use ::hmac::{Hmac, Mac};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const CS: SessionId = SessionId([1, 2, 3, 4, 5, 6, 7, 8]);
    const NOW: u64 = 1_700_000_000;

    fn key() -> CookieKey {
        CookieKey::new(SECRET, CookieConfig::default()).unwrap()
    }

    fn client() -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 50_000)
    }

    fn reset(opcode: Opcode) -> ControlRepr<'static> {
        ControlRepr {
            opcode,
            key_id: KeyId::ZERO,
            session_id: CS,
            acks: Acks::new(),
            remote_session_id: None,
            message_id: Some(0),
            payload: &[],
        }
    }

    fn third(
        opcode: Opcode,
        acks: &[u32],
        echoed: SessionId,
        message_id: Option<u32>,
    ) -> ControlRepr<'static> {
        let acks = Acks::from_slice(acks).unwrap();
        ControlRepr {
            opcode,
            key_id: KeyId::ZERO,
            session_id: CS,
            acks,
            remote_session_id: (!acks.is_empty()).then_some(echoed),
            message_id,
            payload: if message_id.is_some() { b"hello" } else { &[] },
        }
    }

    fn ss_at(now: u64) -> SessionId {
        let k = key();
        k.server_session_id(k.time_slot(now), client(), CS)
    }

    // ---- session id ----

    #[test]
    fn server_session_id_is_the_truncated_hmac_of_slot_address_and_client_sid() {
        let k = key();
        let slot = k.time_slot(NOW);
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
        mac.update(&slot.to_be_bytes());
        mac.update(&[4, 192, 0, 2, 7]);
        mac.update(&50_000u16.to_be_bytes());
        mac.update(&CS.0);
        let tag = mac.finalize().into_bytes();
        assert_eq!(k.server_session_id(slot, client(), CS).0, tag[..8]);
    }

    #[test]
    fn same_inputs_give_the_same_sid_and_any_change_another() {
        let k = key();
        let slot = k.time_slot(NOW);
        let base = k.server_session_id(slot, client(), CS);
        assert_eq!(base, k.server_session_id(slot, client(), CS));
        assert_eq!(base, key().server_session_id(slot, client(), CS));
        let other_port = SocketAddr::new(client().ip(), 50_001);
        let other_ip = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 8)), 50_000);
        let mapped = SocketAddr::new(
            IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped()),
            50_000,
        );
        let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 50_000);
        let mut other_cs = CS;
        other_cs.0[7] ^= 1;
        let other_secret = CookieKey::new(b"another secret, 16+ bytes", CookieConfig::default())
            .unwrap()
            .server_session_id(slot, client(), CS);
        for different in [
            k.server_session_id(slot, other_port, CS),
            k.server_session_id(slot, other_ip, CS),
            k.server_session_id(slot, mapped, CS),
            k.server_session_id(slot, v6, CS),
            k.server_session_id(slot, client(), other_cs),
            k.server_session_id(slot + 1, client(), CS),
            k.server_session_id(slot - 1, client(), CS),
            other_secret,
        ] {
            assert_ne!(different, base);
        }
    }

    #[test]
    fn time_slot_is_half_the_hand_window_rounded_up() {
        let k = key();
        assert_eq!(k.slot_secs(), 30);
        assert_eq!(k.time_slot(29), 0);
        assert_eq!(k.time_slot(30), 1);
        assert_eq!(k.time_slot(59), 1);
        assert_eq!(k.time_slot(60), 2);
        for (window, slot) in [(61, 31), (1, 1), (2, 1), (3, 2)] {
            let cfg = CookieConfig {
                hand_window_secs: window,
                ..CookieConfig::default()
            };
            assert_eq!(CookieKey::new(SECRET, cfg).unwrap().slot_secs(), slot);
        }
    }

    #[test]
    fn invalid_cookie_configs_are_refused() {
        assert_eq!(
            CookieKey::new(&SECRET[..15], CookieConfig::default()).unwrap_err(),
            CookieConfigError::SecretTooShort { found: 15 }
        );
        assert!(CookieKey::new(&SECRET[..16], CookieConfig::default()).is_ok());
        let zero = CookieConfig {
            hand_window_secs: 0,
            ..CookieConfig::default()
        };
        assert_eq!(
            CookieKey::new(SECRET, zero).unwrap_err(),
            CookieConfigError::ZeroHandWindow
        );
    }

    #[test]
    fn debug_hides_the_key() {
        let text = format!("{:?}", key());
        assert!(text.contains("slot_secs: 30"), "{text}");
        assert!(!text.contains("0123456789"), "{text}");
    }

    // ---- rule 1: the stateless reset reply ----

    #[test]
    fn v2_reset_gets_an_empty_server_reset_acking_zero() {
        let reply = key()
            .reply_to_reset(
                &reset(Opcode::ControlHardResetClientV2),
                client(),
                Some(1),
                NOW,
            )
            .unwrap();
        assert_eq!(reply.session_id, ss_at(NOW));
        assert_eq!(reply.client_session_id, CS);
        assert!(!reply.early_negotiation);
        let repr = reply.repr();
        assert_eq!(repr.opcode, Opcode::ControlHardResetServerV2);
        assert_eq!(repr.key_id, KeyId::ZERO);
        assert_eq!(repr.session_id, reply.session_id);
        assert_eq!(repr.acks.as_slice(), [0]);
        assert_eq!(repr.remote_session_id, Some(CS));
        assert_eq!(repr.message_id, Some(0));
        assert!(repr.payload.is_empty());
        let mut buf = [0u8; 64];
        let len = repr.emit(&mut buf).unwrap();
        // The lab's tls-crypt server reset was 66 bytes.
        assert_eq!(len + TlsCrypt::OVERHEAD, 66);
        let back = ControlRepr::parse(&ControlPacket::new_checked(&buf[..len]).unwrap());
        assert_eq!(back, repr);
        assert_eq!(
            reply.replay_stamp(0x6500_0000),
            ReplayStamp {
                id: 1,
                time: 0x6500_0000
            }
        );
    }

    #[test]
    fn reply_is_stateless_and_repeatable() {
        let k = key();
        let r = reset(Opcode::ControlHardResetClientV2);
        let a = k.reply_to_reset(&r, client(), None, NOW).unwrap();
        let b = k.reply_to_reset(&r, client(), None, NOW + 1).unwrap();
        assert_eq!(
            a, b,
            "a retransmitted reset in the same slot gets the same answer"
        );
    }

    #[test]
    fn v3_reset_with_marker_gets_the_early_negotiation_tlv() {
        let reply = key()
            .reply_to_reset(
                &reset(Opcode::ControlHardResetClientV3),
                client(),
                Some(0x0F00_0001),
                NOW,
            )
            .unwrap();
        assert!(reply.early_negotiation);
        assert_eq!(reply.payload(), [0x00, 0x01, 0x00, 0x02, 0x00, 0x01]);
        let repr = reply.repr();
        assert_eq!(repr.payload, EARLY_NEG_TLV);
        let mut buf = [0u8; 64];
        let len = repr.emit(&mut buf).unwrap();
        let back = ControlPacket::new_checked(&buf[..len]).unwrap();
        assert_eq!(back.payload(), EARLY_NEG_TLV);
        assert_eq!(back.message_id(), Some(0));
    }

    #[test]
    fn v2_reset_never_gets_tlvs_even_with_the_marker() {
        let reply = key()
            .reply_to_reset(
                &reset(Opcode::ControlHardResetClientV2),
                client(),
                Some(0x0F00_0001),
                NOW,
            )
            .unwrap();
        assert!(!reply.early_negotiation);
        assert!(reply.repr().payload.is_empty());
    }

    #[test]
    fn v3_reset_without_marker_or_with_the_option_off_is_refused() {
        let k = key();
        let v3 = reset(Opcode::ControlHardResetClientV3);
        for replay_id in [Some(1), Some(0x0E00_0001), Some(0x1F00_0001), None] {
            assert_eq!(
                k.reply_to_reset(&v3, client(), replay_id, NOW),
                Err(CookieError::NoEarlyNegotiation { replay_id })
            );
        }
        let off = CookieKey::new(
            SECRET,
            CookieConfig {
                early_negotiation: false,
                ..CookieConfig::default()
            },
        )
        .unwrap();
        assert_eq!(
            off.reply_to_reset(&v3, client(), Some(0x0F00_0001), NOW),
            Err(CookieError::EarlyNegotiationDisabled)
        );
        assert!(
            off.reply_to_reset(
                &reset(Opcode::ControlHardResetClientV2),
                client(),
                None,
                NOW
            )
            .is_ok()
        );
    }

    #[test]
    fn invalid_client_resets_are_refused() {
        let k = key();
        for opcode in [
            Opcode::ControlHardResetClientV1,
            Opcode::ControlSoftResetV1,
            Opcode::ControlV1,
            Opcode::ControlHardResetServerV2,
        ] {
            assert_eq!(
                k.reply_to_reset(&reset(opcode), client(), None, NOW),
                Err(CookieError::NotAClientReset { found: opcode })
            );
        }
        let kid1 = ControlRepr {
            key_id: KeyId::new(1).unwrap(),
            ..reset(Opcode::ControlHardResetClientV2)
        };
        assert_eq!(
            k.reply_to_reset(&kid1, client(), None, NOW),
            Err(CookieError::NonZeroKeyId {
                found: KeyId::new(1).unwrap()
            })
        );
        let id1 = ControlRepr {
            message_id: Some(1),
            ..reset(Opcode::ControlHardResetClientV2)
        };
        assert_eq!(
            k.reply_to_reset(&id1, client(), None, NOW),
            Err(CookieError::ResetMessageId { found: 1 })
        );
        let none = ControlRepr {
            message_id: None,
            ..reset(Opcode::ControlHardResetClientV2)
        };
        assert_eq!(
            k.reply_to_reset(&none, client(), None, NOW),
            Err(CookieError::MissingMessageId {
                opcode: Opcode::ControlHardResetClientV2
            })
        );
    }

    // ---- rule 2: the client's next packet ----

    #[test]
    fn every_continuation_opcode_with_the_current_cookie_opens_a_session() {
        let k = key();
        let ss = ss_at(NOW);
        for packet in [
            third(Opcode::ControlV1, &[0], ss, Some(1)),
            third(Opcode::ControlWkcV1, &[0], ss, Some(1)),
            third(Opcode::AckV1, &[0], ss, None),
            third(Opcode::ControlV1, &[0, 1], ss, Some(0)),
        ] {
            assert_eq!(
                k.verify(&packet, client(), NOW),
                Ok(CookieSession {
                    session_id: ss,
                    peer_session_id: CS,
                    next_rx_message_id: 1,
                    next_tx_message_id: 1,
                    next_tx_replay_id: 2,
                    slot_age: 0,
                })
            );
        }
    }

    #[test]
    fn cookies_of_the_two_previous_slots_are_accepted_three_ago_refused() {
        let k = key();
        let slot = k.slot_secs();
        let issued = NOW - NOW % slot;
        let ss = ss_at(issued);
        let packet = third(Opcode::ControlV1, &[0], ss, Some(1));
        for (age, now) in [
            (0, issued + slot - 1),
            (1, issued + slot),
            (2, issued + 2 * slot),
            (2, issued + 3 * slot - 1),
        ] {
            assert_eq!(k.verify(&packet, client(), now).unwrap().slot_age, age);
        }
        assert_eq!(
            k.verify(&packet, client(), issued + 3 * slot),
            Err(CookieError::SessionIdMismatch)
        );
        assert_eq!(
            k.verify(&packet, client(), issued - 1),
            Err(CookieError::SessionIdMismatch),
            "a cookie from a future slot is refused"
        );
    }

    #[test]
    fn early_times_check_only_existing_slots() {
        let k = key();
        let packet = third(Opcode::ControlV1, &[0], ss_at(0), Some(1));
        assert_eq!(k.verify(&packet, client(), 0).unwrap().slot_age, 0);
        assert_eq!(k.verify(&packet, client(), 45).unwrap().slot_age, 1);
    }

    #[test]
    fn forged_or_misdirected_cookies_are_refused() {
        let k = key();
        let ss = ss_at(NOW);
        for bit in [0, 7, 31, 63] {
            let mut forged = ss;
            forged.0[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                k.verify(
                    &third(Opcode::ControlV1, &[0], forged, Some(1)),
                    client(),
                    NOW
                ),
                Err(CookieError::SessionIdMismatch)
            );
        }
        let good = third(Opcode::ControlV1, &[0], ss, Some(1));
        let other_port = SocketAddr::new(client().ip(), 50_001);
        assert_eq!(
            k.verify(&good, other_port, NOW),
            Err(CookieError::SessionIdMismatch)
        );
        let other_cs = ControlRepr {
            session_id: SessionId([9; 8]),
            ..good
        };
        assert_eq!(
            k.verify(&other_cs, client(), NOW),
            Err(CookieError::SessionIdMismatch)
        );
        let other_key = CookieKey::new(b"a different secret!!", CookieConfig::default()).unwrap();
        assert_eq!(
            other_key.verify(&good, client(), NOW),
            Err(CookieError::SessionIdMismatch)
        );
    }

    #[test]
    fn continuation_rule_violations_are_refused() {
        let k = key();
        let ss = ss_at(NOW);
        let cases = [
            (
                third(Opcode::ControlV1, &[2], ss, Some(1)),
                CookieError::AckTooHigh { found: 2 },
            ),
            (
                third(Opcode::AckV1, &[0, 1, u32::MAX], ss, None),
                CookieError::AckTooHigh { found: u32::MAX },
            ),
            (
                third(Opcode::ControlV1, &[0], ss, Some(2)),
                CookieError::MessageIdTooHigh { found: 2 },
            ),
            (
                third(Opcode::ControlV1, &[], ss, Some(1)),
                CookieError::MissingAck {
                    opcode: Opcode::ControlV1,
                },
            ),
            (
                third(Opcode::ControlV1, &[0], ss, None),
                CookieError::MissingMessageId {
                    opcode: Opcode::ControlV1,
                },
            ),
            (
                third(Opcode::ControlHardResetClientV2, &[0], ss, Some(0)),
                CookieError::NotAContinuation {
                    found: Opcode::ControlHardResetClientV2,
                },
            ),
            (
                third(Opcode::ControlSoftResetV1, &[0], ss, Some(0)),
                CookieError::NotAContinuation {
                    found: Opcode::ControlSoftResetV1,
                },
            ),
            (
                ControlRepr {
                    key_id: KeyId::new(2).unwrap(),
                    ..third(Opcode::ControlV1, &[0], ss, Some(1))
                },
                CookieError::NonZeroKeyId {
                    found: KeyId::new(2).unwrap(),
                },
            ),
        ];
        for (packet, err) in cases {
            assert_eq!(k.verify(&packet, client(), NOW), Err(err), "{packet:?}");
        }
    }

    #[test]
    fn handshake_from_wire_bytes_hands_over_to_the_reliability_layer() {
        let k = key();
        let mut buf = [0u8; 128];
        let len = reset(Opcode::ControlHardResetClientV2)
            .emit(&mut buf)
            .unwrap();
        let client_reset = ControlRepr::parse(&ControlPacket::new_checked(&buf[..len]).unwrap());
        let reply = k
            .reply_to_reset(&client_reset, client(), None, NOW)
            .unwrap();
        let len = reply.repr().emit(&mut buf).unwrap();
        // The client learns Ss from our reset and echoes it with its ClientHello.
        let seen = ControlPacket::new_checked(&buf[..len]).unwrap();
        let hello = third(Opcode::ControlV1, &[0], seen.session_id(), Some(1));
        let len = hello.emit(&mut buf).unwrap();
        let wire = ControlRepr::parse(&ControlPacket::new_checked(&buf[..len]).unwrap());
        let session = k.verify(&wire, client(), NOW + 40).unwrap();
        assert_eq!(session.session_id, reply.session_id);
        let mut reliable = Reliable::with_next_ids(
            ReliableConfig::default(),
            session.next_tx_message_id,
            session.next_rx_message_id,
        )
        .unwrap();
        let got = reliable
            .on_packet(&wire, std::time::Instant::now())
            .unwrap();
        assert_eq!(got.message, MessageOutcome::Accepted { message_id: 1 });
        assert_eq!(
            got.newly_acked, 0,
            "the ACK of our stateless reset releases nothing"
        );
        assert_eq!(reliable.readable_len(), 5);
    }

    // ---- reset rate limiter ----

    #[test]
    fn rate_limiter_allows_a_burst_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut limiter = ResetRateLimiter::default();
        for i in 0..100 {
            assert!(limiter.allow(t0), "reset {i} of the initial burst");
        }
        assert!(!limiter.allow(t0));
        // 100 per 10 s is one token per 100 ms.
        assert!(!limiter.allow(t0 + Duration::from_millis(99)));
        assert!(limiter.allow(t0 + Duration::from_millis(100)));
        assert!(!limiter.allow(t0 + Duration::from_millis(100)));
        let t1 = t0 + Duration::from_millis(600);
        for _ in 0..5 {
            assert!(limiter.allow(t1));
        }
        assert!(!limiter.allow(t1));
    }

    #[test]
    fn rate_limiter_burst_is_capped_after_idling() {
        let t0 = Instant::now();
        let mut limiter = ResetRateLimiter::new(3, Duration::from_secs(1)).unwrap();
        assert!(limiter.allow(t0));
        let later = t0 + Duration::from_secs(3600);
        let allowed = (0..10).filter(|_| limiter.allow(later)).count();
        assert_eq!(allowed, 3);
    }

    #[test]
    fn rate_limiter_ignores_time_going_backwards() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut limiter = ResetRateLimiter::new(1, Duration::from_secs(1)).unwrap();
        assert!(limiter.allow(t0));
        assert!(!limiter.allow(t0 - Duration::from_secs(5)));
        assert!(!limiter.allow(t0 + Duration::from_millis(999)));
        assert!(limiter.allow(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn rate_limiter_refuses_empty_limits() {
        for (count, period) in [(0, Duration::from_secs(10)), (100, Duration::ZERO)] {
            assert_eq!(
                ResetRateLimiter::new(count, period).unwrap_err(),
                CookieConfigError::InvalidRateLimit { count, period }
            );
        }
        assert!(ResetRateLimiter::new(u32::MAX, Duration::MAX).is_ok());
    }
}
