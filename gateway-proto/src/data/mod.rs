//! The AEAD data channel (P_DATA_V2, and P_DATA_V1 for clients without a peer-id): in-place
//! sealing and opening with AES-128-GCM, AES-256-GCM or ChaCha20-Poly1305, replay checks on
//! receive, and the plaintext framing (ping, OCC, compression byte) around the payload.
//!
//! [`DataKey`] is the only way in: every carrier of a session's packets (the session
//! itself, the data-plane workers, the benchmarks) seals and opens through the key the
//! session shares, so packet-ids, the replay window and the renegotiation counters stay
//! single.

use core::fmt;
use core::str::FromStr;

mod channel;
mod plaintext;
mod sealing;

pub use channel::{DataChannel, DataKey, Sealed, UsageLimits};
pub use plaintext::{CompressionFraming, Plaintext};
pub use sealing::Opened;
#[cfg(test)]
pub(crate) use sealing::{DataKeys, OpeningKey, SealingKey};

use ring::aead;

use crate::keys::IMPLICIT_IV_LEN;
use crate::packet::{KeyId, PacketError};
use crate::replay::{PacketIdExhausted, ReplayError};

/// Length of the AEAD tag.
pub const TAG_LEN: usize = 16;
/// Length of the packet-id that follows the header.
pub const PACKET_ID_LEN: usize = 4;
/// Bytes before the ciphertext of a P_DATA_V2 packet: header 4, packet-id 4, tag 16.
pub const DATA_V2_OVERHEAD: usize = 4 + PACKET_ID_LEN + TAG_LEN;
/// Bytes before the ciphertext of a P_DATA_V1 packet: header 1, packet-id 4, tag 16.
pub const DATA_V1_OVERHEAD: usize = 1 + PACKET_ID_LEN + TAG_LEN;

/// Plaintext of a keepalive ping; dropped by the receiver, never forwarded.
pub const PING_PAYLOAD: [u8; 16] = [
    0x2a, 0x18, 0x7b, 0xf3, 0x64, 0x1e, 0xb4, 0xcb, 0x07, 0xed, 0x2d, 0x0a, 0x98, 0x1f, 0xc7, 0x48,
];
/// Prefix of an OCC message; one type byte (and for some types a body) follows.
pub const OCC_MAGIC: [u8; 16] = [
    0x28, 0x7f, 0x34, 0x6b, 0xd4, 0xef, 0x7a, 0x81, 0x2d, 0x56, 0xb8, 0xd3, 0xaf, 0xc5, 0x45, 0x9c,
];
/// OCC type byte of an exit notification: tear the session down.
pub const OCC_EXIT: u8 = 6;

/// A data-channel AEAD cipher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// `AES-128-GCM`.
    Aes128Gcm,
    /// `AES-256-GCM`.
    Aes256Gcm,
    /// `CHACHA20-POLY1305`.
    ChaCha20Poly1305,
}

impl Cipher {
    /// Every supported cipher.
    pub const ALL: [Self; 3] = [Self::Aes256Gcm, Self::Aes128Gcm, Self::ChaCha20Poly1305];

    /// The name as OpenVPN spells it in `cipher`, `data-ciphers` and IV_CIPHERS.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Aes128Gcm => "AES-128-GCM",
            Self::Aes256Gcm => "AES-256-GCM",
            Self::ChaCha20Poly1305 => "CHACHA20-POLY1305",
        }
    }

    /// Key length in bytes: 16 for AES-128-GCM, 32 for the others.
    pub const fn key_len(self) -> usize {
        match self {
            Self::Aes128Gcm => 16,
            Self::Aes256Gcm | Self::ChaCha20Poly1305 => 32,
        }
    }

    /// Implicit IV length in bytes (8 for every AEAD cipher).
    pub const fn implicit_iv_len(self) -> usize {
        IMPLICIT_IV_LEN
    }

    /// Tag length in bytes (16 for every AEAD cipher).
    pub const fn tag_len(self) -> usize {
        TAG_LEN
    }

    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Self::Aes128Gcm => &aead::AES_128_GCM,
            Self::Aes256Gcm => &aead::AES_256_GCM,
            Self::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A cipher name we do not support (configuration or peer's IV_CIPHERS entry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown data cipher {found:?}: expected AES-256-GCM, AES-128-GCM or CHACHA20-POLY1305")]
pub struct UnknownCipher {
    /// The name given.
    pub found: String,
}

impl FromStr for Cipher {
    type Err = UnknownCipher;

    /// Parses an OpenVPN cipher name, ignoring ASCII case as OpenVPN does.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|cipher| cipher.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| UnknownCipher {
                found: name.to_owned(),
            })
    }
}

/// Key material of the wrong size (our bug or misconfiguration, never the peer's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DataKeyError {
    /// The cipher key has the wrong length.
    #[error("{cipher} key must be {expected} bytes, found {found}")]
    KeyLength {
        /// The cipher.
        cipher: Cipher,
        /// Its key length.
        expected: usize,
        /// The length given.
        found: usize,
    },
    /// The implicit IV has the wrong length.
    #[error("implicit IV must be {expected} bytes, found {found}")]
    ImplicitIvLength {
        /// Always [`IMPLICIT_IV_LEN`].
        expected: usize,
        /// The length given.
        found: usize,
    },
}

/// Why a data packet could not be sealed or opened, or its plaintext framing undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// The header is not a data header.
    #[error(transparent)]
    Packet(#[from] PacketError),
    /// The packet is shorter than header, packet-id and tag.
    #[error("data packet too short: needed at least {needed} bytes, found {found}")]
    Truncated {
        /// Header + packet-id + tag.
        needed: usize,
        /// The packet length.
        found: usize,
    },
    /// The packet-id was refused by the replay window.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The data channel holds no key with the packet's key_id (or no sending key).
    #[error("no data key with key_id {key_id}")]
    NoKey {
        /// The key_id asked for.
        key_id: KeyId,
    },
    /// The tag did not verify: wrong key, corrupted or forged packet.
    #[error("data packet failed authentication (AEAD tag mismatch)")]
    Authentication,
    /// This key has sent its last packet-id.
    #[error(transparent)]
    PacketIdExhausted(#[from] PacketIdExhausted),
    /// The caller's buffer cannot hold the packet.
    #[error("buffer too small: needed {needed} bytes, found {found}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        found: usize,
    },
    /// The plaintext is beyond what the AEAD can seal in one message.
    #[error("plaintext of {found} bytes too long for the AEAD")]
    PlaintextTooLong {
        /// The plaintext length.
        found: usize,
    },
    /// The peer sent compressed data (or an unknown framing byte); we never decompress.
    #[error("unsupported compression framing byte {found:#04x}: expected an uncompressed packet")]
    Compressed {
        /// The framing byte found.
        found: u8,
    },
    /// A compression-framed plaintext without its framing byte(s).
    #[error("plaintext of {found} bytes lacks its compression framing")]
    MissingCompressionFraming {
        /// The plaintext length.
        found: usize,
    },
    /// An OCC message without its type byte.
    #[error("OCC message without a type byte")]
    TruncatedOcc,
}

#[cfg(test)]
mod tests;
