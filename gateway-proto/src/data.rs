//! The AEAD data channel (P_DATA_V2, and P_DATA_V1 for clients without a peer-id): in-place
//! sealing and opening with AES-128-GCM, AES-256-GCM or ChaCha20-Poly1305, replay checks on
//! receive, and the plaintext framing (ping, OCC, compression byte) around the payload.

use core::fmt;
use core::ops::Range;
use core::str::FromStr;
use std::time::Instant;

use ring::aead;

use crate::keys::{DataChannelKeys, IMPLICIT_IV_LEN, KEY_BLOCK_LEN, KeyBlock, Role};
use crate::packet::{DataHeader, PacketError};
use crate::replay::{PacketIdCounter, PacketIdExhausted, ReplayError, ReplayWindow};

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

/// `comp-lzo` framing byte of an uncompressed packet.
const COMP_LZO_NONE: u8 = 0xFA;
/// `compress` framing byte of an uncompressed packet whose first byte moved to the end.
const COMPRESS_SWAP: u8 = 0xFB;
/// `compress stub-v2` escape byte (followed by 0x00 for "uncompressed").
const COMPRESS_V2_INDICATOR: u8 = 0x50;

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

fn nonce(packet_id: u32, implicit_iv: &[u8; IMPLICIT_IV_LEN]) -> aead::Nonce {
    let mut bytes = [0u8; aead::NONCE_LEN];
    let (id, iv) = bytes.split_at_mut(PACKET_ID_LEN);
    id.copy_from_slice(&packet_id.to_be_bytes());
    iv.copy_from_slice(implicit_iv);
    aead::Nonce::assume_unique_for_key(bytes)
}

/// Offset of the additional data inside `header ‖ packet-id`: P_DATA_V2 authenticates all
/// eight bytes, P_DATA_V1 only the packet-id.
fn aad_start(header: &DataHeader) -> usize {
    match header {
        DataHeader::V1 { .. } => header.buffer_len(),
        DataHeader::V2 { .. } => 0,
    }
}

fn build_key(
    cipher: Cipher,
    key: &[u8],
    implicit_iv: &[u8],
) -> Result<(aead::LessSafeKey, [u8; IMPLICIT_IV_LEN]), DataKeyError> {
    if key.len() != cipher.key_len() {
        return Err(DataKeyError::KeyLength {
            cipher,
            expected: cipher.key_len(),
            found: key.len(),
        });
    }
    let implicit_iv: [u8; IMPLICIT_IV_LEN] =
        implicit_iv
            .try_into()
            .map_err(|_| DataKeyError::ImplicitIvLength {
                expected: IMPLICIT_IV_LEN,
                found: implicit_iv.len(),
            })?;
    let unbound =
        aead::UnboundKey::new(cipher.algorithm(), key).map_err(|_| DataKeyError::KeyLength {
            cipher,
            expected: cipher.key_len(),
            found: key.len(),
        })?;
    Ok((aead::LessSafeKey::new(unbound), implicit_iv))
}

/// The sending half of a data-channel key, with its packet-id counter. Shareable between
/// threads: [`SealingKey::seal_in_place`] takes `&self` and never repeats a packet-id.
pub struct SealingKey {
    cipher: Cipher,
    key: aead::LessSafeKey,
    implicit_iv: [u8; IMPLICIT_IV_LEN],
    packet_ids: PacketIdCounter,
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealingKey")
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

impl SealingKey {
    /// A sending key from the cipher key (exactly `cipher.key_len()` bytes: the start of the
    /// sender's 64-byte cipher slot) and the implicit IV (exactly 8 bytes: the start of the
    /// sender's 64-byte HMAC slot). The first packet gets packet-id 1.
    pub fn new(cipher: Cipher, key: &[u8], implicit_iv: &[u8]) -> Result<Self, DataKeyError> {
        let (key, implicit_iv) = build_key(cipher, key, implicit_iv)?;
        Ok(Self {
            cipher,
            key,
            implicit_iv,
            packet_ids: PacketIdCounter::new(),
        })
    }

    /// The cipher.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// True once the packet-id passed [`crate::replay::RENEGOTIATE_AT`]: start a soft reset.
    pub fn needs_renegotiation(&self) -> bool {
        self.packet_ids.needs_renegotiation()
    }

    /// Encrypts in place and returns the packet length.
    ///
    /// The caller writes the plaintext at `buf[overhead..overhead + plaintext_len]`, where
    /// `overhead` is [`DATA_V2_OVERHEAD`] or [`DATA_V1_OVERHEAD`] for `header`; this fills in
    /// `header ‖ packet-id ‖ tag` in front and turns the plaintext into ciphertext, so the
    /// packet is `buf[..returned length]`. Takes the next packet-id from the key's counter.
    pub fn seal_in_place(
        &self,
        header: DataHeader,
        buf: &mut [u8],
        plaintext_len: usize,
    ) -> Result<usize, DataError> {
        let needed = Self::packet_len(header, plaintext_len)?;
        if buf.len() < needed {
            return Err(DataError::BufferTooSmall {
                needed,
                found: buf.len(),
            });
        }
        let packet_id = self.packet_ids.next()?;
        self.seal_with_packet_id(packet_id, header, buf, plaintext_len)
    }

    fn packet_len(header: DataHeader, plaintext_len: usize) -> Result<usize, DataError> {
        (header.buffer_len() + PACKET_ID_LEN + TAG_LEN)
            .checked_add(plaintext_len)
            .ok_or(DataError::PlaintextTooLong {
                found: plaintext_len,
            })
    }

    fn seal_with_packet_id(
        &self,
        packet_id: u32,
        header: DataHeader,
        buf: &mut [u8],
        plaintext_len: usize,
    ) -> Result<usize, DataError> {
        let needed = Self::packet_len(header, plaintext_len)?;
        let found = buf.len();
        let packet = buf
            .get_mut(..needed)
            .ok_or(DataError::BufferTooSmall { needed, found })?;
        let header_len = header.emit(packet)?;
        let (head, ciphertext) = packet
            .split_at_mut_checked(header_len + PACKET_ID_LEN + TAG_LEN)
            .ok_or(DataError::BufferTooSmall { needed, found })?;
        let (prefix, tag_slot) = head
            .split_at_mut_checked(header_len + PACKET_ID_LEN)
            .ok_or(DataError::BufferTooSmall { needed, found })?;
        if let Some(id_slot) = prefix.get_mut(header_len..) {
            id_slot.copy_from_slice(&packet_id.to_be_bytes());
        }
        let aad = prefix.get(aad_start(&header)..).unwrap_or(&[]);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                nonce(packet_id, &self.implicit_iv),
                aead::Aad::from(aad),
                ciphertext,
            )
            .map_err(|_| DataError::PlaintextTooLong {
                found: plaintext_len,
            })?;
        tag_slot.copy_from_slice(tag.as_ref());
        Ok(needed)
    }
}

/// A data packet that authenticated and passed the replay window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The header (key_id, and peer-id for P_DATA_V2).
    pub header: DataHeader,
    /// The packet-id, now committed to the replay window.
    pub packet_id: u32,
    /// Where the plaintext lies in the buffer that was opened.
    pub plaintext: Range<usize>,
}

/// The receiving half of a data-channel key. Immutable and shareable; the replay window is
/// passed in so that each receiving worker keeps its own.
pub struct OpeningKey {
    cipher: Cipher,
    key: aead::LessSafeKey,
    implicit_iv: [u8; IMPLICIT_IV_LEN],
}

impl fmt::Debug for OpeningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpeningKey")
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

impl OpeningKey {
    /// A receiving key from the peer's cipher key (exactly `cipher.key_len()` bytes) and
    /// implicit IV (exactly 8 bytes), taken from the peer's slots as for [`SealingKey::new`].
    pub fn new(cipher: Cipher, key: &[u8], implicit_iv: &[u8]) -> Result<Self, DataKeyError> {
        let (key, implicit_iv) = build_key(cipher, key, implicit_iv)?;
        Ok(Self {
            cipher,
            key,
            implicit_iv,
        })
    }

    /// The cipher.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// Authenticates and decrypts the P_DATA_V1/V2 packet in `buf` in place.
    ///
    /// The packet-id is checked against `replay` before decryption and committed only
    /// after the tag verified. On success the plaintext is `buf[opened.plaintext]`; on
    /// failure the ciphertext bytes of `buf` are unspecified.
    ///
    /// Choose this key by the packet's key_id (and peer-id) first: P_DATA_V1 authenticates
    /// only its packet-id, so its key_id is trustworthy only through that choice.
    pub fn open_in_place(
        &self,
        buf: &mut [u8],
        replay: &mut ReplayWindow,
        now: Instant,
    ) -> Result<Opened, DataError> {
        let header = DataHeader::parse(buf)?;
        let header_len = header.buffer_len();
        let ciphertext_start = header_len + PACKET_ID_LEN + TAG_LEN;
        let packet_len = buf.len();
        let truncated = DataError::Truncated {
            needed: ciphertext_start,
            found: packet_len,
        };
        let (head, ciphertext) = buf
            .split_at_mut_checked(ciphertext_start)
            .ok_or(truncated)?;
        let (prefix, tag_bytes) = head
            .split_at_checked(header_len + PACKET_ID_LEN)
            .ok_or(truncated)?;
        let id_bytes: [u8; PACKET_ID_LEN] = prefix
            .get(header_len..)
            .and_then(|b| b.try_into().ok())
            .ok_or(truncated)?;
        let packet_id = u32::from_be_bytes(id_bytes);
        replay.check(packet_id, now)?;
        let tag = aead::Tag::try_from(tag_bytes).map_err(|_| truncated)?;
        let aad = prefix.get(aad_start(&header)..).unwrap_or(&[]);
        self.key
            .open_in_place_separate_tag(
                nonce(packet_id, &self.implicit_iv),
                aead::Aad::from(aad),
                tag,
                ciphertext,
                0..,
            )
            .map_err(|_| DataError::Authentication)?;
        replay.commit(packet_id, now)?;
        Ok(Opened {
            header,
            packet_id,
            plaintext: ciphertext_start..packet_len,
        })
    }
}

/// Both directions of a data-channel key for one key_id.
#[derive(Debug)]
pub struct DataKeys {
    /// What we send with.
    pub sealing: SealingKey,
    /// What we receive with.
    pub opening: OpeningKey,
}

impl DataKeys {
    /// Both directions from the keys of one role (`keys::KeyBlock::data_channel_keys`):
    /// each AEAD key is the first `cipher.key_len()` bytes of its 64-byte cipher slot,
    /// each implicit IV the first 8 bytes of the matching HMAC slot.
    pub fn new(cipher: Cipher, keys: &DataChannelKeys) -> Result<Self, DataKeyError> {
        let len = cipher.key_len();
        Ok(Self {
            sealing: SealingKey::new(
                cipher,
                &keys.encrypt_cipher_key[..len],
                &keys.encrypt_implicit_iv(),
            )?,
            opening: OpeningKey::new(
                cipher,
                &keys.decrypt_cipher_key[..len],
                &keys.decrypt_implicit_iv(),
            )?,
        })
    }

    /// Splits a 256-byte key block (§8: TLS exporter or legacy PRF output) for `role`.
    pub fn from_key_block(
        cipher: Cipher,
        block: &[u8; KEY_BLOCK_LEN],
        role: Role,
    ) -> Result<Self, DataKeyError> {
        Self::new(
            cipher,
            &KeyBlock::from_exporter(*block).data_channel_keys(role),
        )
    }
}

/// What a decrypted data-channel plaintext carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plaintext<'a> {
    /// The keepalive ping: drop it.
    Ping,
    /// An OCC message: its type byte and what follows it.
    Occ {
        /// 0 REQUEST, 1 REPLY, …, [`OCC_EXIT`].
        message_type: u8,
        /// Bytes after the type byte.
        body: &'a [u8],
    },
    /// Anything else: a tunnelled IP packet for the caller to validate.
    Packet(&'a [u8]),
}

impl<'a> Plaintext<'a> {
    /// Classifies a plaintext whose compression framing was already removed.
    pub fn classify(plaintext: &'a [u8]) -> Result<Self, DataError> {
        if plaintext == PING_PAYLOAD {
            return Ok(Self::Ping);
        }
        if let Some(rest) = plaintext.strip_prefix(&OCC_MAGIC) {
            let (&message_type, body) = rest.split_first().ok_or(DataError::TruncatedOcc)?;
            return Ok(Self::Occ { message_type, body });
        }
        Ok(Self::Packet(plaintext))
    }
}

/// The framing byte(s) a client profile puts around every plaintext (pings included).
/// Stock 2.6 and AWS profiles use none; we never compress and refuse compressed input.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CompressionFraming {
    /// No framing.
    #[default]
    None,
    /// `comp-lzo`: a `0xFA` byte before the plaintext.
    CompLzo,
    /// `compress` (stub or lz4 v1): byte 0 becomes `0xFB` and moves to the end.
    Compress,
    /// `compress stub-v2`: only a plaintext starting with `0x50` is escaped, as `50 00`.
    CompressStubV2,
}

impl CompressionFraming {
    /// Bytes reserved before the plaintext for [`CompressionFraming::encode`].
    pub const fn headroom(self) -> usize {
        match self {
            Self::None | Self::Compress => 0,
            Self::CompLzo => 1,
            Self::CompressStubV2 => 2,
        }
    }

    /// Most bytes framing adds to a plaintext (the framed length is at most
    /// `len + max_overhead()`).
    pub const fn max_overhead(self) -> usize {
        match self {
            Self::None => 0,
            Self::CompLzo | Self::Compress => 1,
            Self::CompressStubV2 => 2,
        }
    }

    /// Frames a plaintext in place so that the framed bytes start at `start`.
    ///
    /// The caller wrote the `len`-byte plaintext at `buf[start + headroom()..]`; the framed
    /// plaintext is `buf[start..start + returned length]`. For sealing, use `start` =
    /// [`DATA_V2_OVERHEAD`] (or [`DATA_V1_OVERHEAD`]) and pass the returned length to
    /// [`SealingKey::seal_in_place`].
    pub fn encode(self, buf: &mut [u8], start: usize, len: usize) -> Result<usize, DataError> {
        let found = buf.len();
        let raw_start = start + self.headroom();
        let needed = raw_start
            .checked_add(len)
            .and_then(|end| end.checked_add(self.max_overhead() - self.headroom()))
            .ok_or(DataError::PlaintextTooLong { found: len })?;
        if needed > found {
            return Err(DataError::BufferTooSmall { needed, found });
        }
        match self {
            Self::None => Ok(len),
            Self::CompLzo => {
                set(buf, start, COMP_LZO_NONE);
                Ok(len + 1)
            }
            Self::Compress => {
                if len > 0 {
                    let first = buf.get(start).copied().unwrap_or_default();
                    set(buf, start + len, first);
                }
                set(buf, start, COMPRESS_SWAP);
                Ok(len + 1)
            }
            Self::CompressStubV2 => {
                if len > 0 && buf.get(raw_start) == Some(&COMPRESS_V2_INDICATOR) {
                    set(buf, start, COMPRESS_V2_INDICATOR);
                    set(buf, start + 1, 0);
                    return Ok(len + 2);
                }
                // Nothing to escape: move the plaintext down over the reserved bytes.
                buf.copy_within(raw_start..raw_start + len, start);
                Ok(len)
            }
        }
    }

    /// Removes the framing from `buf[plaintext]` in place; returns the range of the bare
    /// plaintext. Compressed packets are refused with [`DataError::Compressed`].
    pub fn decode(
        self,
        buf: &mut [u8],
        plaintext: Range<usize>,
    ) -> Result<Range<usize>, DataError> {
        let found = buf.len();
        let Range { start, end } = plaintext;
        let framed = buf
            .get(start..end)
            .ok_or(DataError::BufferTooSmall { needed: end, found })?;
        let missing = DataError::MissingCompressionFraming {
            found: framed.len(),
        };
        match self {
            Self::None => Ok(start..end),
            Self::CompLzo => match framed.first() {
                Some(&COMP_LZO_NONE) => Ok(start + 1..end),
                Some(&other) => Err(DataError::Compressed { found: other }),
                None => Err(missing),
            },
            Self::Compress => match framed.first() {
                Some(&COMPRESS_SWAP) => {
                    let last = end - 1;
                    if last > start {
                        let moved = framed.last().copied().unwrap_or_default();
                        set(buf, start, moved);
                    }
                    Ok(start..last)
                }
                Some(&other) => Err(DataError::Compressed { found: other }),
                None => Err(missing),
            },
            Self::CompressStubV2 => match framed {
                [COMPRESS_V2_INDICATOR, 0, ..] => Ok(start + 2..end),
                [COMPRESS_V2_INDICATOR, other, ..] => Err(DataError::Compressed { found: *other }),
                [COMPRESS_V2_INDICATOR] => Err(missing),
                _ => Ok(start..end),
            },
        }
    }
}

fn set(buf: &mut [u8], index: usize, value: u8) {
    if let Some(byte) = buf.get_mut(index) {
        *byte = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{KeyId, PeerId};
    use crate::replay::ReplayConfig;
    use proptest::prelude::*;

    fn key_block() -> [u8; KEY_BLOCK_LEN] {
        core::array::from_fn(|i| i as u8)
    }

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    fn v2(key_id: u8, peer_id: u32) -> DataHeader {
        DataHeader::V2 {
            key_id: KeyId::new(key_id).unwrap(),
            peer_id: PeerId::new(peer_id).unwrap(),
        }
    }

    fn window() -> ReplayWindow {
        ReplayWindow::new(ReplayConfig::default())
    }

    fn seal(key: &SealingKey, header: DataHeader, plaintext: &[u8]) -> Vec<u8> {
        let overhead = header.buffer_len() + PACKET_ID_LEN + TAG_LEN;
        let mut buf = vec![0u8; overhead + plaintext.len()];
        buf[overhead..].copy_from_slice(plaintext);
        let n = key
            .seal_in_place(header, &mut buf, plaintext.len())
            .unwrap();
        assert_eq!(n, buf.len());
        buf
    }

    const SERVER_TO_CLIENT_PING: &str =
        "4800000500000001 4733b9b60b56cf3ada0169d9be9a4594 935c53e2eadd3824275aa3759531edf7";
    const CLIENT_TO_SERVER_PING: &str =
        "4800000500000001 ec453d1dbd9f22d610a3a7300856dd03 e1d3004e0fa812021253797dec29cf6b";

    #[test]
    fn worked_example_seals_byte_for_byte() {
        let block = key_block();
        let server = DataKeys::from_key_block(Cipher::Aes256Gcm, &block, Role::Server).unwrap();
        let client = DataKeys::from_key_block(Cipher::Aes256Gcm, &block, Role::Client).unwrap();
        assert_eq!(
            seal(&server.sealing, v2(0, 5), &PING_PAYLOAD),
            hex(SERVER_TO_CLIENT_PING)
        );
        assert_eq!(
            seal(&client.sealing, v2(0, 5), &PING_PAYLOAD),
            hex(CLIENT_TO_SERVER_PING)
        );
    }

    #[test]
    fn worked_example_opens_with_the_opposite_direction() {
        let block = key_block();
        let t = Instant::now();
        let server = DataKeys::from_key_block(Cipher::Aes256Gcm, &block, Role::Server).unwrap();
        let client = DataKeys::from_key_block(Cipher::Aes256Gcm, &block, Role::Client).unwrap();

        let mut from_client = hex(CLIENT_TO_SERVER_PING);
        let opened = server
            .opening
            .open_in_place(&mut from_client, &mut window(), t)
            .unwrap();
        assert_eq!(opened.header, v2(0, 5));
        assert_eq!(opened.packet_id, 1);
        assert_eq!(opened.plaintext, 24..40);
        assert_eq!(&from_client[opened.plaintext], &PING_PAYLOAD);

        let mut from_server = hex(SERVER_TO_CLIENT_PING);
        let opened = client
            .opening
            .open_in_place(&mut from_server, &mut window(), t)
            .unwrap();
        assert_eq!(
            Plaintext::classify(&from_server[opened.plaintext]),
            Ok(Plaintext::Ping)
        );

        // The same direction's key must not open it.
        let mut wrong = hex(SERVER_TO_CLIENT_PING);
        assert_eq!(
            server.opening.open_in_place(&mut wrong, &mut window(), t),
            Err(DataError::Authentication)
        );
    }

    #[test]
    fn explicit_keys_match_the_key_block_layout() {
        let block = key_block();
        let key = SealingKey::new(Cipher::Aes256Gcm, &block[128..160], &block[192..200]).unwrap();
        assert_eq!(
            seal(&key, v2(0, 5), &PING_PAYLOAD),
            hex(SERVER_TO_CLIENT_PING)
        );
    }

    fn pair(cipher: Cipher) -> (SealingKey, OpeningKey) {
        let keys = DataKeys::from_key_block(cipher, &key_block(), Role::Client).unwrap();
        let peer = DataKeys::from_key_block(cipher, &key_block(), Role::Server).unwrap();
        (keys.sealing, peer.opening)
    }

    #[test]
    fn round_trip_every_cipher_v1_and_v2() {
        let t = Instant::now();
        for cipher in Cipher::ALL {
            let (sealing, opening) = pair(cipher);
            let mut replay = window();
            let headers = [
                v2(3, 0x00AB_CDEF),
                DataHeader::V1 {
                    key_id: KeyId::new(2).unwrap(),
                },
            ];
            for (i, header) in headers.into_iter().enumerate() {
                let plaintext = b"\x45\x00 an IPv4 packet, more or less";
                let mut packet = seal(&sealing, header, plaintext);
                assert_eq!(packet.len(), header.buffer_len() + 20 + plaintext.len());
                assert_ne!(
                    &packet[packet.len() - plaintext.len()..],
                    plaintext,
                    "{cipher}"
                );
                let opened = opening.open_in_place(&mut packet, &mut replay, t).unwrap();
                assert_eq!(opened.header, header);
                assert_eq!(opened.packet_id, i as u32 + 1);
                assert_eq!(&packet[opened.plaintext], plaintext);
            }
        }
    }

    #[test]
    fn v1_authenticates_only_the_packet_id() {
        // Recompute a P_DATA_V1 packet with ring directly: AAD = packet-id, nonce = id ‖ IV.
        let block = key_block();
        let (sealing, _) = pair(Cipher::Aes128Gcm);
        let packet = seal(
            &sealing,
            DataHeader::V1 {
                key_id: KeyId::ZERO,
            },
            b"hello",
        );
        let key = aead::LessSafeKey::new(
            aead::UnboundKey::new(&aead::AES_128_GCM, &block[..16]).unwrap(),
        );
        let mut nonce_bytes = [0u8; 12];
        nonce_bytes[..4].copy_from_slice(&1u32.to_be_bytes());
        nonce_bytes[4..].copy_from_slice(&block[64..72]);
        let mut data = b"hello".to_vec();
        let tag = key
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce_bytes),
                aead::Aad::from(1u32.to_be_bytes()),
                &mut data,
            )
            .unwrap();
        let mut expected = vec![0x30, 0, 0, 0, 1];
        expected.extend_from_slice(tag.as_ref());
        expected.extend_from_slice(&data);
        assert_eq!(packet, expected);
    }

    #[test]
    fn any_bit_flip_is_rejected() {
        let t = Instant::now();
        for cipher in Cipher::ALL {
            let (sealing, opening) = pair(cipher);
            for header in [
                v2(1, 77),
                DataHeader::V1 {
                    key_id: KeyId::new(1).unwrap(),
                },
            ] {
                let packet = seal(&sealing, header, b"payload bytes");
                for bit in 0..packet.len() * 8 {
                    let mut tampered = packet.clone();
                    tampered[bit / 8] ^= 1 << (bit % 8);
                    let mut replay = window();
                    if matches!(header, DataHeader::V1 { .. }) && bit < 3 {
                        // P_DATA_V1 authenticates only the packet-id: its key_id bits are
                        // not covered by the tag (the receiver picks the key by key_id, so a
                        // changed key_id selects another key and fails there).
                        let opened = opening
                            .open_in_place(&mut tampered, &mut replay, t)
                            .unwrap();
                        assert_ne!(opened.header, header);
                        continue;
                    }
                    assert!(
                        opening
                            .open_in_place(&mut tampered, &mut replay, t)
                            .is_err(),
                        "{cipher} bit {bit} accepted"
                    );
                    assert_eq!(replay.highest(), 0, "a failed packet must not be committed");
                }
                let mut intact = packet.clone();
                assert!(opening.open_in_place(&mut intact, &mut window(), t).is_ok());
            }
        }
    }

    #[test]
    fn wrong_key_is_rejected() {
        let t = Instant::now();
        let (sealing, _) = pair(Cipher::ChaCha20Poly1305);
        let mut other_block = key_block();
        other_block[0] ^= 1;
        let other =
            DataKeys::from_key_block(Cipher::ChaCha20Poly1305, &other_block, Role::Server).unwrap();
        let mut packet = seal(&sealing, v2(0, 1), b"secret");
        assert_eq!(
            other.opening.open_in_place(&mut packet, &mut window(), t),
            Err(DataError::Authentication)
        );
        // Same key bytes, wrong implicit IV.
        let mut iv_block = key_block();
        iv_block[64] ^= 1;
        let other_iv =
            DataKeys::from_key_block(Cipher::ChaCha20Poly1305, &iv_block, Role::Server).unwrap();
        let mut packet = seal(&sealing, v2(0, 1), b"secret");
        assert_eq!(
            other_iv
                .opening
                .open_in_place(&mut packet, &mut window(), t),
            Err(DataError::Authentication)
        );
    }

    #[test]
    fn replay_is_rejected_and_forgery_does_not_burn_the_id() {
        let t = Instant::now();
        let (sealing, opening) = pair(Cipher::Aes256Gcm);
        let mut replay = window();
        let packet = seal(&sealing, v2(0, 9), b"once");
        let mut forged = packet.clone();
        let last = forged.len() - 1;
        forged[last] ^= 0x80;
        assert_eq!(
            opening.open_in_place(&mut forged, &mut replay, t),
            Err(DataError::Authentication)
        );
        let mut first = packet.clone();
        assert!(opening.open_in_place(&mut first, &mut replay, t).is_ok());
        let mut again = packet.clone();
        assert_eq!(
            opening.open_in_place(&mut again, &mut replay, t),
            Err(DataError::Replay(ReplayError::Replayed { packet_id: 1 }))
        );
    }

    #[test]
    fn reordered_packets_inside_the_window_open() {
        let t = Instant::now();
        let (sealing, opening) = pair(Cipher::Aes128Gcm);
        let mut packets: Vec<Vec<u8>> = (0..3).map(|_| seal(&sealing, v2(0, 2), b"ip")).collect();
        let mut replay = window();
        for index in [2, 0, 1] {
            let opened = opening
                .open_in_place(&mut packets[index], &mut replay, t)
                .unwrap();
            assert_eq!(opened.packet_id, index as u32 + 1);
        }
        assert_eq!(replay.highest(), 3);
    }

    #[test]
    fn packet_id_zero_is_rejected_before_decryption() {
        let t = Instant::now();
        let (sealing, opening) = pair(Cipher::Aes128Gcm);
        let mut buf = vec![0u8; DATA_V2_OVERHEAD + 3];
        let n = sealing
            .seal_with_packet_id(0, v2(0, 1), &mut buf, 3)
            .unwrap();
        assert_eq!(
            opening.open_in_place(&mut buf[..n], &mut window(), t),
            Err(DataError::Replay(ReplayError::ZeroPacketId))
        );
    }

    #[test]
    fn truncated_and_non_data_packets() {
        let t = Instant::now();
        let (_, opening) = pair(Cipher::Aes256Gcm);
        let mut short = hex(SERVER_TO_CLIENT_PING)[..23].to_vec();
        assert_eq!(
            opening.open_in_place(&mut short, &mut window(), t),
            Err(DataError::Truncated {
                needed: 24,
                found: 23
            })
        );
        let mut v1_short = vec![0x30, 0, 0, 0, 1];
        assert_eq!(
            opening.open_in_place(&mut v1_short, &mut window(), t),
            Err(DataError::Truncated {
                needed: 21,
                found: 5
            })
        );
        let mut control = hex(SERVER_TO_CLIENT_PING);
        control[0] = 0x20;
        assert!(matches!(
            opening.open_in_place(&mut control, &mut window(), t),
            Err(DataError::Packet(PacketError::UnexpectedOpcode { .. }))
        ));
        assert!(matches!(
            opening.open_in_place(&mut [], &mut window(), t),
            Err(DataError::Packet(PacketError::Truncated { .. }))
        ));
    }

    #[test]
    fn seal_buffer_too_small_does_not_consume_an_id() {
        let t = Instant::now();
        let (sealing, opening) = pair(Cipher::Aes256Gcm);
        let mut buf = vec![0u8; DATA_V2_OVERHEAD + 4];
        assert_eq!(
            sealing.seal_in_place(v2(0, 1), &mut buf, 5),
            Err(DataError::BufferTooSmall {
                needed: 29,
                found: 28
            })
        );
        let n = sealing.seal_in_place(v2(0, 1), &mut buf, 4).unwrap();
        let opened = opening
            .open_in_place(&mut buf[..n], &mut window(), t)
            .unwrap();
        assert_eq!(opened.packet_id, 1);
    }

    #[test]
    fn exhausted_key_refuses_to_seal() {
        let block = key_block();
        let mut key = SealingKey::new(Cipher::Aes256Gcm, &block[..32], &block[64..72]).unwrap();
        key.packet_ids = PacketIdCounter::starting_at(u32::MAX);
        let mut buf = vec![0u8; DATA_V2_OVERHEAD];
        assert!(key.needs_renegotiation());
        assert_eq!(
            key.seal_in_place(v2(0, 1), &mut buf, 0),
            Ok(DATA_V2_OVERHEAD)
        );
        assert_eq!(
            key.seal_in_place(v2(0, 1), &mut buf, 0),
            Err(DataError::PacketIdExhausted(PacketIdExhausted))
        );
    }

    #[test]
    fn key_length_errors() {
        assert_eq!(
            SealingKey::new(Cipher::Aes128Gcm, &[0; 32], &[0; 8]).unwrap_err(),
            DataKeyError::KeyLength {
                cipher: Cipher::Aes128Gcm,
                expected: 16,
                found: 32
            }
        );
        assert_eq!(
            OpeningKey::new(Cipher::ChaCha20Poly1305, &[0; 32], &[0; 12]).unwrap_err(),
            DataKeyError::ImplicitIvLength {
                expected: 8,
                found: 12
            }
        );
        let key = OpeningKey::new(Cipher::Aes128Gcm, &[0; 16], &[0; 8]).unwrap();
        assert_eq!(key.cipher(), Cipher::Aes128Gcm);
        assert!(!format!("{key:?}").contains("iv"));
    }

    #[test]
    fn cipher_names() {
        for (name, cipher, key_len) in [
            ("AES-128-GCM", Cipher::Aes128Gcm, 16),
            ("AES-256-GCM", Cipher::Aes256Gcm, 32),
            ("CHACHA20-POLY1305", Cipher::ChaCha20Poly1305, 32),
        ] {
            assert_eq!(name.parse::<Cipher>(), Ok(cipher));
            assert_eq!(cipher.to_string(), name);
            assert_eq!(cipher.key_len(), key_len);
            assert_eq!((cipher.implicit_iv_len(), cipher.tag_len()), (8, 16));
        }
        assert_eq!("aes-256-gcm".parse::<Cipher>(), Ok(Cipher::Aes256Gcm));
        assert_eq!(
            "BF-CBC".parse::<Cipher>(),
            Err(UnknownCipher {
                found: "BF-CBC".to_owned()
            })
        );
    }

    #[test]
    fn classify_plaintexts() {
        assert_eq!(Plaintext::classify(&PING_PAYLOAD), Ok(Plaintext::Ping));
        let mut exit = OCC_MAGIC.to_vec();
        exit.push(OCC_EXIT);
        assert_eq!(
            Plaintext::classify(&exit),
            Ok(Plaintext::Occ {
                message_type: OCC_EXIT,
                body: &[]
            })
        );
        assert_eq!(
            Plaintext::classify(&OCC_MAGIC),
            Err(DataError::TruncatedOcc)
        );
        let ip = [0x45, 0, 0, 20];
        assert_eq!(Plaintext::classify(&ip), Ok(Plaintext::Packet(&ip[..])));
        // A ping with a trailing byte is not a ping.
        let mut long_ping = PING_PAYLOAD.to_vec();
        long_ping.push(0);
        assert!(matches!(
            Plaintext::classify(&long_ping),
            Ok(Plaintext::Packet(_))
        ));
    }

    #[test]
    fn compression_framing_wire_forms() {
        // comp-lzo: FA prefix.
        let mut buf = [9, 0, 0x45, 1, 2];
        assert_eq!(CompressionFraming::CompLzo.encode(&mut buf, 1, 3), Ok(4));
        assert_eq!(&buf[1..5], &[0xFA, 0x45, 1, 2]);
        assert_eq!(CompressionFraming::CompLzo.decode(&mut buf, 1..5), Ok(2..5));

        // compress: first byte moves to the end, FB in front.
        let mut buf = [0x45, 1, 2, 0];
        assert_eq!(CompressionFraming::Compress.encode(&mut buf, 0, 3), Ok(4));
        assert_eq!(buf, [0xFB, 1, 2, 0x45]);
        let bare = CompressionFraming::Compress.decode(&mut buf, 0..4).unwrap();
        assert_eq!(&buf[bare], &[0x45, 1, 2]);

        // stub-v2: only a leading 0x50 is escaped; otherwise the bytes move down.
        let mut buf = [0, 0, 0x45, 1];
        assert_eq!(
            CompressionFraming::CompressStubV2.encode(&mut buf, 0, 2),
            Ok(2)
        );
        assert_eq!(&buf[..2], &[0x45, 1]);
        assert_eq!(
            CompressionFraming::CompressStubV2.decode(&mut buf, 0..2),
            Ok(0..2)
        );
        let mut buf = [0, 0, 0x50, 1];
        assert_eq!(
            CompressionFraming::CompressStubV2.encode(&mut buf, 0, 2),
            Ok(4)
        );
        assert_eq!(buf, [0x50, 0, 0x50, 1]);
        assert_eq!(
            CompressionFraming::CompressStubV2.decode(&mut buf, 0..4),
            Ok(2..4)
        );

        let mut buf = [1, 2];
        assert_eq!(CompressionFraming::None.encode(&mut buf, 0, 2), Ok(2));
        assert_eq!(CompressionFraming::None.decode(&mut buf, 0..2), Ok(0..2));
    }

    #[test]
    fn framed_ping_seals_and_opens() {
        let t = Instant::now();
        let (sealing, opening) = pair(Cipher::Aes256Gcm);
        let framing = CompressionFraming::CompLzo;
        let start = DATA_V2_OVERHEAD;
        let mut buf = vec![0u8; start + framing.headroom() + 16 + framing.max_overhead()];
        buf[start + framing.headroom()..][..16].copy_from_slice(&PING_PAYLOAD);
        let framed_len = framing.encode(&mut buf, start, 16).unwrap();
        let n = sealing
            .seal_in_place(v2(0, 1), &mut buf, framed_len)
            .unwrap();
        let opened = opening
            .open_in_place(&mut buf[..n], &mut window(), t)
            .unwrap();
        assert_eq!(buf[opened.plaintext.start], 0xFA);
        let bare = framing.decode(&mut buf, opened.plaintext).unwrap();
        assert_eq!(Plaintext::classify(&buf[bare]), Ok(Plaintext::Ping));
    }

    #[test]
    fn compression_framing_errors() {
        let mut lzo = [0x66, 1, 2];
        assert_eq!(
            CompressionFraming::CompLzo.decode(&mut lzo, 0..3),
            Err(DataError::Compressed { found: 0x66 })
        );
        assert_eq!(
            CompressionFraming::CompLzo.decode(&mut lzo, 0..0),
            Err(DataError::MissingCompressionFraming { found: 0 })
        );
        assert_eq!(
            CompressionFraming::Compress.decode(&mut [0x69, 1], 0..2),
            Err(DataError::Compressed { found: 0x69 })
        );
        assert_eq!(
            CompressionFraming::Compress.decode(&mut [], 0..0),
            Err(DataError::MissingCompressionFraming { found: 0 })
        );
        assert_eq!(
            CompressionFraming::CompressStubV2.decode(&mut [0x50, 1, 9], 0..3),
            Err(DataError::Compressed { found: 1 })
        );
        assert_eq!(
            CompressionFraming::CompressStubV2.decode(&mut [0x50], 0..1),
            Err(DataError::MissingCompressionFraming { found: 1 })
        );
        assert_eq!(
            CompressionFraming::None.decode(&mut [0; 2], 0..3),
            Err(DataError::BufferTooSmall {
                needed: 3,
                found: 2
            })
        );
        // Not enough room for the framing.
        assert_eq!(
            CompressionFraming::CompLzo.encode(&mut [0, 0x45], 0, 2),
            Err(DataError::BufferTooSmall {
                needed: 3,
                found: 2
            })
        );
        assert_eq!(
            CompressionFraming::Compress.encode(&mut [0x45], 0, 1),
            Err(DataError::BufferTooSmall {
                needed: 2,
                found: 1
            })
        );
        assert_eq!(
            CompressionFraming::CompressStubV2.encode(&mut [0, 0x50], 0, 1),
            Err(DataError::BufferTooSmall {
                needed: 3,
                found: 2
            })
        );
        assert_eq!(
            CompressionFraming::None.encode(&mut [0; 2], 1, 2),
            Err(DataError::BufferTooSmall {
                needed: 3,
                found: 2
            })
        );
        assert_eq!(
            CompressionFraming::None.encode(&mut [0; 2], usize::MAX, 2),
            Err(DataError::PlaintextTooLong { found: 2 })
        );
    }

    fn framing() -> impl Strategy<Value = CompressionFraming> {
        prop::sample::select(vec![
            CompressionFraming::None,
            CompressionFraming::CompLzo,
            CompressionFraming::Compress,
            CompressionFraming::CompressStubV2,
        ])
    }

    proptest! {
        #[test]
        fn seal_open_round_trip(
            cipher in prop::sample::select(Cipher::ALL.to_vec()),
            use_v2 in any::<bool>(),
            key_id in 0u8..8,
            peer_id in 0u32..=PeerId::MAX,
            plaintext in prop::collection::vec(any::<u8>(), 0..1500),
        ) {
            let (sealing, opening) = pair(cipher);
            let header = if use_v2 { v2(key_id, peer_id) } else { DataHeader::V1 { key_id: KeyId::new(key_id).unwrap() } };
            let mut packet = seal(&sealing, header, &plaintext);
            let opened = opening.open_in_place(&mut packet, &mut window(), Instant::now()).unwrap();
            prop_assert_eq!(opened.header, header);
            prop_assert_eq!(&packet[opened.plaintext], &plaintext[..]);
        }

        #[test]
        fn compression_framing_round_trip(
            framing in framing(),
            plaintext in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let start = 3;
            let raw = start + framing.headroom();
            let mut buf = vec![0u8; raw + plaintext.len() + framing.max_overhead()];
            buf[raw..raw + plaintext.len()].copy_from_slice(&plaintext);
            let framed_len = framing.encode(&mut buf, start, plaintext.len()).unwrap();
            prop_assert!(framed_len <= plaintext.len() + framing.max_overhead());
            let bare = framing.decode(&mut buf, start..start + framed_len).unwrap();
            prop_assert_eq!(&buf[bare], &plaintext[..]);
        }

        #[test]
        fn open_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let (_, opening) = pair(Cipher::Aes128Gcm);
            let mut bytes = bytes;
            prop_assert!(opening.open_in_place(&mut bytes, &mut window(), Instant::now()).is_err());
        }
    }
}
