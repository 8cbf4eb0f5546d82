//! Control-channel packet protection (protocol doc §3.2–3.4): none, tls-auth (HMAC with a
//! replay stamp) and tls-crypt (AES-256-CTR + HMAC-SHA256) around a whole control packet,
//! plus cutting the tls-crypt-v2 wrapped client key off a V3 reset (§5.2).

use std::fmt;

use aes::Aes256;
use ctr::cipher::{KeyIvInit, StreamCipher};
use ring::hmac;
use subtle::ConstantTimeEq;

use crate::keys::Role;
use crate::static_key::{
    KeyDirection, KeySets, MAX_WRAPPED_CLIENT_KEY_LEN, MIN_WRAPPED_CLIENT_KEY_LEN, StaticKey,
};

/// Bytes every control packet starts with and that stay in clear: op|key_id and own sid.
pub const HEADER_LEN: usize = 9;
/// Bytes of the replay stamp (replay-id and replay-time).
pub const REPLAY_LEN: usize = 8;
/// Bytes of the tls-crypt tag (HMAC-SHA256).
pub const TLS_CRYPT_TAG_LEN: usize = 32;
const TLS_CRYPT_IV_LEN: usize = 16;
const TLS_CRYPT_KEY_LEN: usize = 32;

type Aes256Ctr = ctr::Ctr128BE<Aes256>;

/// The replay-id and replay-time carried by every tls-auth/tls-crypt packet (§3.4). The
/// sender uses a new id for every transmission; checking them is the replay window's job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStamp {
    /// Per-direction counter, starting at 1.
    pub id: u32,
    /// Sender's Unix time at its first wrapped packet.
    pub time: u32,
}

impl ReplayStamp {
    fn to_bytes(self) -> [u8; REPLAY_LEN] {
        let mut bytes = [0u8; REPLAY_LEN];
        bytes[..4].copy_from_slice(&self.id.to_be_bytes());
        bytes[4..].copy_from_slice(&self.time.to_be_bytes());
        bytes
    }

    /// Reads the stamp from the 8 bytes after the header (callers pass exactly 8).
    fn from_wire(bytes: &[u8]) -> Self {
        let word = |b: &[u8]| b.iter().fold(0u32, |acc, x| (acc << 8) | u32::from(*x));
        let (id, time) = bytes.split_at(bytes.len().min(4));
        ReplayStamp {
            id: word(id),
            time: word(time),
        }
    }
}

/// Why a packet could not be wrapped or unwrapped. `TooShort`, `BadTag` and
/// `BadClientKeyLength` are the peer's fault (drop the packet); `PacketTooShort` and
/// `BufferTooSmall` are the caller's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WrapError {
    /// The received packet is shorter than header + wrap overhead.
    #[error("wrapped control packet: {len} bytes, expected at least {min}")]
    TooShort {
        /// Bytes received.
        len: usize,
        /// Minimum for this wrap mode.
        min: usize,
    },
    /// The HMAC (tls-auth) or tag (tls-crypt) did not verify.
    #[error("wrapped control packet: authentication tag mismatch")]
    BadTag,
    /// The trailing wrapped-client-key length of a V3 reset / WKC packet is impossible.
    #[error(
        "tls-crypt-v2 packet: wrapped client key length {len} does not fit the {packet_len}-byte packet"
    )]
    BadClientKeyLength {
        /// Value of the trailing u16.
        len: usize,
        /// Packet length.
        packet_len: usize,
    },
    /// The packet to wrap lacks the 9-byte op|key_id + session id header.
    #[error("control packet to wrap: {len} bytes, expected at least {HEADER_LEN}")]
    PacketTooShort {
        /// Bytes given.
        len: usize,
    },
    /// The output buffer cannot hold the result.
    #[error("output buffer: {available} bytes, need {needed}")]
    BufferTooSmall {
        /// Bytes required.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
}

/// The `--auth` digest used by tls-auth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthDigest {
    /// HMAC-SHA1, 20 bytes (OpenVPN's default).
    Sha1,
    /// HMAC-SHA256, 32 bytes.
    Sha256,
    /// HMAC-SHA512, 64 bytes.
    Sha512,
}

impl AuthDigest {
    /// Length of the HMAC on the wire, also the length of the key taken from the slice.
    pub fn tag_len(self) -> usize {
        match self {
            AuthDigest::Sha1 => 20,
            AuthDigest::Sha256 => 32,
            AuthDigest::Sha512 => 64,
        }
    }

    fn algorithm(self) -> hmac::Algorithm {
        match self {
            AuthDigest::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            AuthDigest::Sha256 => hmac::HMAC_SHA256,
            AuthDigest::Sha512 => hmac::HMAC_SHA512,
        }
    }
}

/// tls-auth keys for one side. `Debug` does not print them.
#[derive(Clone)]
pub struct TlsAuth {
    digest: AuthDigest,
    send: hmac::Key,
    recv: hmac::Key,
}

impl fmt::Debug for TlsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAuth")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// tls-crypt (or tls-crypt-v2 client-key) keys for one side. `Debug` does not print them.
#[derive(Clone)]
pub struct TlsCrypt {
    send_cipher: [u8; TLS_CRYPT_KEY_LEN],
    send_hmac: hmac::Key,
    recv_cipher: [u8; TLS_CRYPT_KEY_LEN],
    recv_hmac: hmac::Key,
}

impl fmt::Debug for TlsCrypt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCrypt").finish_non_exhaustive()
    }
}

/// The control-channel protection of a session.
#[derive(Debug, Clone)]
pub enum Wrap {
    /// No protection: packets pass unchanged.
    None,
    /// tls-auth (§3.2).
    TlsAuth(TlsAuth),
    /// tls-crypt v1, or tls-crypt-v2 with the client's key (§3.3).
    TlsCrypt(TlsCrypt),
}

/// Where an unwrapped packet landed in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unwrapped {
    /// Bytes written to the output buffer (§3.1 layout).
    pub len: usize,
    /// The replay stamp; `None` without wrapping.
    pub replay: Option<ReplayStamp>,
}

fn check_output(needed: usize, out: &[u8]) -> Result<(), WrapError> {
    if out.len() < needed {
        return Err(WrapError::BufferTooSmall {
            needed,
            available: out.len(),
        });
    }
    Ok(())
}

/// `out[range]`, or the error naming how much was needed: never a panic.
fn region(out: &mut [u8], range: std::ops::Range<usize>) -> Result<&mut [u8], WrapError> {
    let available = out.len();
    let needed = range.end;
    out.get_mut(range)
        .ok_or(WrapError::BufferTooSmall { needed, available })
}

/// Writes `pieces` one after another from the start of `out`; returns the bytes written.
fn put(out: &mut [u8], pieces: &[&[u8]]) -> Result<usize, WrapError> {
    let needed: usize = pieces.iter().map(|p| p.len()).sum();
    check_output(needed, out)?;
    let mut at = 0;
    for piece in pieces {
        region(out, at..at + piece.len())?.copy_from_slice(piece);
        at += piece.len();
    }
    Ok(at)
}

fn check_packet(packet: &[u8]) -> Result<(), WrapError> {
    if packet.len() < HEADER_LEN {
        return Err(WrapError::PacketTooShort { len: packet.len() });
    }
    Ok(())
}

impl Wrap {
    /// Bytes wrapping adds to a packet.
    pub fn overhead(&self) -> usize {
        match self {
            Wrap::None => 0,
            Wrap::TlsAuth(auth) => auth.overhead(),
            Wrap::TlsCrypt(_) => TlsCrypt::OVERHEAD,
        }
    }

    /// Wraps `packet` (§3.1 layout) into `out`; returns the bytes written.
    /// `replay` is ignored without wrapping.
    pub fn wrap(
        &self,
        packet: &[u8],
        replay: ReplayStamp,
        out: &mut [u8],
    ) -> Result<usize, WrapError> {
        match self {
            Wrap::None => {
                check_packet(packet)?;
                put(out, &[packet])
            }
            Wrap::TlsAuth(auth) => auth.wrap(packet, replay, out),
            Wrap::TlsCrypt(crypt) => crypt.wrap(packet, replay, out),
        }
    }

    /// Verifies and unwraps a received packet into `out` in the §3.1 layout.
    pub fn unwrap(&self, wire: &[u8], out: &mut [u8]) -> Result<Unwrapped, WrapError> {
        let (len, replay) = match self {
            Wrap::None => {
                if wire.len() < HEADER_LEN {
                    return Err(WrapError::TooShort {
                        len: wire.len(),
                        min: HEADER_LEN,
                    });
                }
                (put(out, &[wire])?, None)
            }
            Wrap::TlsAuth(auth) => {
                let (len, replay) = auth.unwrap(wire, out)?;
                (len, Some(replay))
            }
            Wrap::TlsCrypt(crypt) => {
                let (len, replay) = crypt.unwrap(wire, out)?;
                (len, Some(replay))
            }
        };
        Ok(Unwrapped { len, replay })
    }
}

impl TlsAuth {
    /// Keys from a static key file: the HMAC slices chosen by `direction`, cut to the
    /// digest length.
    #[expect(
        clippy::indexing_slicing,
        reason = "set-up from a key file, not network input: a digest is at most the 64-byte slice"
    )]
    pub fn new(key: &StaticKey, direction: KeyDirection, digest: AuthDigest) -> Self {
        let sets = KeySets::tls_auth(direction);
        let hmac_key =
            |set| hmac::Key::new(digest.algorithm(), &key.hmac_key(set)[..digest.tag_len()]);
        TlsAuth {
            digest,
            send: hmac_key(sets.send),
            recv: hmac_key(sets.recv),
        }
    }

    /// Bytes tls-auth adds: the HMAC and the replay stamp.
    pub fn overhead(&self) -> usize {
        self.digest.tag_len() + REPLAY_LEN
    }

    fn mac(key: &hmac::Key, replay: &[u8], header: &[u8], body: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(replay);
        ctx.update(header);
        ctx.update(body);
        ctx.sign()
    }

    /// Wraps `packet` into `out`: `header | HMAC | replay | body`; returns bytes written.
    pub fn wrap(
        &self,
        packet: &[u8],
        replay: ReplayStamp,
        out: &mut [u8],
    ) -> Result<usize, WrapError> {
        check_packet(packet)?;
        let total = packet.len() + self.overhead();
        check_output(total, out)?;
        let (header, body) = packet.split_at(HEADER_LEN);
        let replay = replay.to_bytes();
        let tag = Self::mac(&self.send, &replay, header, body);
        put(out, &[header, tag.as_ref(), &replay, body])
    }

    /// Verifies `wire` and writes `header | body` to `out`; returns length and stamp.
    pub fn unwrap(&self, wire: &[u8], out: &mut [u8]) -> Result<(usize, ReplayStamp), WrapError> {
        let min = HEADER_LEN + self.overhead();
        if wire.len() < min {
            return Err(WrapError::TooShort {
                len: wire.len(),
                min,
            });
        }
        let total = wire.len() - self.overhead();
        check_output(total, out)?;
        let (header, rest) = wire.split_at(HEADER_LEN);
        let (received, rest) = rest.split_at(self.digest.tag_len());
        let (replay, body) = rest.split_at(REPLAY_LEN);
        let expected = Self::mac(&self.recv, replay, header, body);
        if !bool::from(expected.as_ref().ct_eq(received)) {
            return Err(WrapError::BadTag);
        }
        let stamp = ReplayStamp::from_wire(replay);
        Ok((put(out, &[header, body])?, stamp))
    }
}

impl TlsCrypt {
    /// Bytes tls-crypt adds: replay stamp and tag.
    pub const OVERHEAD: usize = REPLAY_LEN + TLS_CRYPT_TAG_LEN;

    /// Keys from a tls-crypt key file (or a tls-crypt-v2 client key) for `role`: the server
    /// sends with set 0 and receives with set 1. Ke and Ka are the first 32 bytes of the
    /// cipher and HMAC slices.
    pub fn new(key: &StaticKey, role: Role) -> Self {
        let sets = KeySets::tls_crypt(role);
        let cipher = |set| {
            let mut k = [0u8; TLS_CRYPT_KEY_LEN];
            k.copy_from_slice(&key.cipher_key(set)[..TLS_CRYPT_KEY_LEN]);
            k
        };
        let mac = |set| hmac::Key::new(hmac::HMAC_SHA256, &key.hmac_key(set)[..TLS_CRYPT_KEY_LEN]);
        TlsCrypt {
            send_cipher: cipher(sets.send),
            send_hmac: mac(sets.send),
            recv_cipher: cipher(sets.recv),
            recv_hmac: mac(sets.recv),
        }
    }

    fn tag(key: &hmac::Key, header: &[u8], replay: &[u8], plaintext: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(header);
        ctx.update(replay);
        ctx.update(plaintext);
        ctx.sign()
    }

    /// AES-256-CTR over `data` with the first 16 bytes of `tag` as the IV.
    fn apply_ctr(
        key: &[u8; TLS_CRYPT_KEY_LEN],
        tag: &[u8],
        data: &mut [u8],
    ) -> Result<(), WrapError> {
        let iv = *tag
            .first_chunk::<TLS_CRYPT_IV_LEN>()
            .ok_or(WrapError::BadTag)?;
        Aes256Ctr::new(key.into(), &iv.into()).apply_keystream(data);
        Ok(())
    }

    /// Wraps `packet` into `out`: `header | replay | tag | AES-256-CTR(body)`; returns
    /// bytes written.
    pub fn wrap(
        &self,
        packet: &[u8],
        replay: ReplayStamp,
        out: &mut [u8],
    ) -> Result<usize, WrapError> {
        check_packet(packet)?;
        let total = packet.len() + Self::OVERHEAD;
        check_output(total, out)?;
        let (header, body) = packet.split_at(HEADER_LEN);
        let replay = replay.to_bytes();
        let tag = Self::tag(&self.send_hmac, header, &replay, body);
        let body_start = HEADER_LEN + Self::OVERHEAD;
        let written = put(out, &[header, &replay, tag.as_ref(), body])?;
        Self::apply_ctr(
            &self.send_cipher,
            tag.as_ref(),
            region(out, body_start..written)?,
        )?;
        Ok(written)
    }

    /// Verifies and decrypts `wire`, writing `header | body` to `out`; returns length and
    /// stamp. On a bad tag the decrypted bytes in `out` are zeroed.
    pub fn unwrap(&self, wire: &[u8], out: &mut [u8]) -> Result<(usize, ReplayStamp), WrapError> {
        let min = HEADER_LEN + Self::OVERHEAD;
        if wire.len() < min {
            return Err(WrapError::TooShort {
                len: wire.len(),
                min,
            });
        }
        let total = wire.len() - Self::OVERHEAD;
        check_output(total, out)?;
        let (header, rest) = wire.split_at(HEADER_LEN);
        let (replay, rest) = rest.split_at(REPLAY_LEN);
        let (received, ciphertext) = rest.split_at(TLS_CRYPT_TAG_LEN);
        let plaintext = region(out, HEADER_LEN..total)?;
        plaintext.copy_from_slice(ciphertext);
        Self::apply_ctr(&self.recv_cipher, received, plaintext)?;
        let expected = Self::tag(&self.recv_hmac, header, replay, plaintext);
        if !bool::from(expected.as_ref().ct_eq(received)) {
            plaintext.fill(0);
            return Err(WrapError::BadTag);
        }
        let stamp = ReplayStamp::from_wire(replay);
        region(out, 0..HEADER_LEN)?.copy_from_slice(header);
        Ok((total, stamp))
    }
}

/// Splits a tls-crypt-v2 P_CONTROL_HARD_RESET_CLIENT_V3 or P_CONTROL_WKC_V1 packet into
/// the tls-crypt packet and the wrapped client key (WKc) appended in clear; the WKc's last
/// two bytes give its own length. Unwrap the WKc with
/// [`TlsCryptV2ServerKey`](crate::static_key::TlsCryptV2ServerKey), then the packet with
/// [`TlsCrypt::new`] on the client key and [`Role::Server`].
pub fn split_client_key(wire: &[u8]) -> Result<(&[u8], &[u8]), WrapError> {
    let min = HEADER_LEN + TlsCrypt::OVERHEAD + MIN_WRAPPED_CLIENT_KEY_LEN;
    let Some((_, len_field)) = wire.split_last_chunk::<2>().filter(|_| wire.len() >= min) else {
        return Err(WrapError::TooShort {
            len: wire.len(),
            min,
        });
    };
    let len = usize::from(u16::from_be_bytes(*len_field));
    let fits = (MIN_WRAPPED_CLIENT_KEY_LEN..=MAX_WRAPPED_CLIENT_KEY_LEN).contains(&len)
        && len + HEADER_LEN + TlsCrypt::OVERHEAD <= wire.len();
    if !fits {
        return Err(WrapError::BadClientKeyLength {
            len,
            packet_len: wire.len(),
        });
    }
    Ok(wire.split_at(wire.len() - len))
}

#[cfg(test)]
mod tests;
