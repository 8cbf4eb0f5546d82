//! Sealing and opening data packets in place with the negotiated AEAD: nonce from the
//! packet id and implicit IV, the header as associated data, replay check after the tag.

use core::fmt;
use core::ops::Range;
#[cfg(test)]
use std::time::Instant;

use ring::aead;

use super::{Cipher, DataError, DataKeyError, PACKET_ID_LEN, TAG_LEN};
use crate::keys::{DataChannelKeys, IMPLICIT_IV_LEN};
#[cfg(test)]
use crate::keys::{KEY_BLOCK_LEN, KeyBlock, Role};
use crate::packet::DataHeader;
use crate::replay::PacketIdCounter;
#[cfg(test)]
use crate::replay::ReplayWindow;

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
/// Used through [`super::DataKey`], which also counts what it seals.
pub(crate) struct SealingKey {
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
    pub(crate) fn new(
        cipher: Cipher,
        key: &[u8],
        implicit_iv: &[u8],
    ) -> Result<Self, DataKeyError> {
        let (key, implicit_iv) = build_key(cipher, key, implicit_iv)?;
        Ok(Self {
            cipher,
            key,
            implicit_iv,
            packet_ids: PacketIdCounter::new(),
        })
    }

    /// The cipher.
    pub(crate) fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// True once the packet-id passed [`crate::replay::RENEGOTIATE_AT`]: start a soft reset.
    pub(crate) fn needs_renegotiation(&self) -> bool {
        self.packet_ids.needs_renegotiation()
    }

    /// Encrypts in place and returns the packet length.
    ///
    /// The caller writes the plaintext at `buf[overhead..overhead + plaintext_len]`, where
    /// `overhead` is [`DATA_V2_OVERHEAD`](super::DATA_V2_OVERHEAD) or [`DATA_V1_OVERHEAD`](super::DATA_V1_OVERHEAD) for `header`; this fills in
    /// `header ‖ packet-id ‖ tag` in front and turns the plaintext into ciphertext, so the
    /// packet is `buf[..returned length]`. Takes the next packet-id from the key's counter.
    pub(crate) fn seal_in_place(
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
    /// This packet took its key past a renegotiation limit: tell the session (see
    /// [`super::DataKey::renegotiation_due`]).
    pub renegotiate: bool,
}

/// The receiving half of a data-channel key. Immutable and shareable; the replay window is
/// the caller's (see [`super::DataKey`], which keeps the one every receiver shares).
pub(crate) struct OpeningKey {
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
    pub(crate) fn new(
        cipher: Cipher,
        key: &[u8],
        implicit_iv: &[u8],
    ) -> Result<Self, DataKeyError> {
        let (key, implicit_iv) = build_key(cipher, key, implicit_iv)?;
        Ok(Self {
            cipher,
            key,
            implicit_iv,
        })
    }

    /// The cipher.
    #[cfg(test)]
    pub(crate) fn cipher(&self) -> Cipher {
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
    #[cfg(test)]
    pub(crate) fn open_in_place(
        &self,
        buf: &mut [u8],
        replay: &mut ReplayWindow,
        now: Instant,
    ) -> Result<Opened, DataError> {
        // One owner: check, decrypt and commit under the one `&mut`.
        let replay = std::cell::RefCell::new(replay);
        self.open_with(
            buf,
            |id| Ok(replay.borrow().check(id, now)?),
            |id| Ok(replay.borrow_mut().commit(id, now)?),
        )
    }

    /// Opens `buf` in place; `check` vets the packet-id before decryption and `commit`
    /// records it after the tag verified.
    pub(crate) fn open_with(
        &self,
        buf: &mut [u8],
        check: impl FnOnce(u32) -> Result<(), DataError>,
        commit: impl FnOnce(u32) -> Result<(), DataError>,
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
        check(packet_id)?;
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
        commit(packet_id)?;
        Ok(Opened {
            header,
            packet_id,
            plaintext: ciphertext_start..packet_len,
            renegotiate: false,
        })
    }
}

/// Both directions of a data-channel key for one key_id, without the shared state a
/// [`super::DataKey`] adds around them.
#[derive(Debug)]
pub(crate) struct DataKeys {
    /// What we send with.
    pub sealing: SealingKey,
    /// What we receive with.
    pub opening: OpeningKey,
}

/// The first `cipher.key_len()` bytes of a 64-byte cipher slot.
fn cipher_key_of(cipher: Cipher, slot: &[u8; crate::keys::KEY_LEN]) -> Result<&[u8], DataKeyError> {
    let expected = cipher.key_len();
    slot.get(..expected).ok_or(DataKeyError::KeyLength {
        cipher,
        expected,
        found: slot.len(),
    })
}

impl DataKeys {
    /// Both directions from the keys of one role (`keys::KeyBlock::data_channel_keys`):
    /// each AEAD key is the first `cipher.key_len()` bytes of its 64-byte cipher slot,
    /// each implicit IV the first 8 bytes of the matching HMAC slot.
    pub fn new(cipher: Cipher, keys: &DataChannelKeys) -> Result<Self, DataKeyError> {
        Ok(Self {
            sealing: SealingKey::new(
                cipher,
                cipher_key_of(cipher, &keys.encrypt_cipher_key)?,
                &keys.encrypt_implicit_iv(),
            )?,
            opening: OpeningKey::new(
                cipher,
                cipher_key_of(cipher, &keys.decrypt_cipher_key)?,
                &keys.decrypt_implicit_iv(),
            )?,
        })
    }

    /// Splits a 256-byte key block (§8: TLS exporter or legacy PRF output) for `role`.
    #[cfg(test)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DATA_V2_OVERHEAD;
    use crate::data::tests::{key_block, pair, v2, window};
    use crate::replay::{PacketIdExhausted, ReplayError};

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
}
