//! A session's data channel as every carrier of its packets shares it: one [`DataKey`]
//! per key_id (both AEAD directions, the one packet-id counter, the one replay window and
//! the use counters that `reneg-bytes` / `reneg-pkts` test), and the [`DataChannel`]
//! snapshot a data plane carries. [`DataKey::seal`] and [`DataKey::open`] (or the
//! [`DataChannel`] wrappers) are the only ways to seal or open a data packet: whoever
//! calls them — the session, a data-plane worker, a load generator — draws from the same
//! counters, so a packet-id is never sent twice, a packet is accepted once, and traffic
//! counts toward renegotiation whoever carried it.

use core::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::sealing::{DataKeys, OpeningKey, SealingKey};
use super::{Cipher, DataError, DataKeyError, Opened, PACKET_ID_LEN, TAG_LEN};
use crate::keys::{DataChannelKeys, KEY_BLOCK_LEN, KeyBlock, Role};
use crate::packet::{DataHeader, KeyId, PeerId};
use crate::replay::{ReplayConfig, ReplayWindow};

/// The use of a key after which a renegotiation starts (`reneg-bytes`, `reneg-pkts`;
/// 0: no limit). Both count data sent plus received on the key, as OpenVPN does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageLimits {
    /// Plaintext bytes.
    pub bytes: u64,
    /// Data packets.
    pub packets: u64,
}

/// One key_id's data keys and everything their users share.
pub struct DataKey {
    key_id: KeyId,
    sealing: SealingKey,
    opening: OpeningKey,
    /// Held for the check and the commit, not while decrypting.
    replay: Mutex<ReplayWindow>,
    limits: UsageLimits,
    bytes: AtomicU64,
    packets: AtomicU64,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("key_id", &self.key_id)
            .field("cipher", &self.sealing.cipher())
            .field("bytes", &self.bytes())
            .field("packets", &self.packets())
            .finish_non_exhaustive()
    }
}

/// A sealed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    /// The packet is `buf[..len]`.
    pub len: usize,
    /// This packet took the key past a renegotiation limit: tell the session (see
    /// [`DataKey::renegotiation_due`]).
    pub renegotiate: bool,
}

/// True when adding `added` to `before` reached `limit` (a limit of 0 never is).
fn crossed(before: u64, added: u64, limit: u64) -> bool {
    limit > 0 && before < limit && before.saturating_add(added) >= limit
}

impl DataKey {
    /// Both directions of `key_id` from the keys of one role
    /// (`keys::KeyBlock::data_channel_keys`): each AEAD key is the first
    /// `cipher.key_len()` bytes of its 64-byte cipher slot, each implicit IV the first 8
    /// bytes of the matching HMAC slot. The first packet sealed gets packet-id 1.
    pub fn new(
        key_id: KeyId,
        cipher: Cipher,
        keys: &DataChannelKeys,
        replay: ReplayConfig,
        limits: UsageLimits,
    ) -> Result<Self, DataKeyError> {
        let DataKeys { sealing, opening } = DataKeys::new(cipher, keys)?;
        Ok(Self {
            key_id,
            sealing,
            opening,
            replay: Mutex::new(ReplayWindow::new(replay)),
            limits,
            bytes: AtomicU64::new(0),
            packets: AtomicU64::new(0),
        })
    }

    /// [`DataKey::new`] from a 256-byte key block (§8: TLS exporter or legacy PRF
    /// output), split for `role`, with the default replay window and no usage limits.
    pub fn from_key_block(
        key_id: KeyId,
        cipher: Cipher,
        block: &[u8; KEY_BLOCK_LEN],
        role: Role,
    ) -> Result<Self, DataKeyError> {
        Self::new(
            key_id,
            cipher,
            &KeyBlock::from_exporter(*block).data_channel_keys(role),
            ReplayConfig::default(),
            UsageLimits::default(),
        )
    }

    /// The key_id on the packets.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The data cipher.
    pub fn cipher(&self) -> Cipher {
        self.sealing.cipher()
    }

    /// Plaintext bytes sealed and opened with this key so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Data packets sealed and opened with this key so far.
    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }

    /// The highest packet-id the replay window accepted.
    pub fn highest_received(&self) -> u32 {
        self.window().highest()
    }

    /// True once the key's use reached a limit, or its packet-ids are nearly spent: the
    /// session should renegotiate.
    pub fn renegotiation_due(&self) -> bool {
        let limits = self.limits;
        (limits.bytes > 0 && self.bytes() >= limits.bytes)
            || (limits.packets > 0 && self.packets() >= limits.packets)
            || self.sealing.needs_renegotiation()
    }

    fn window(&self) -> std::sync::MutexGuard<'_, ReplayWindow> {
        self.replay
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one packet of `len` plaintext bytes; true when it crossed a limit.
    fn count(&self, len: usize) -> bool {
        let len = len as u64;
        let bytes = self.bytes.fetch_add(len, Ordering::Relaxed);
        let packets = self.packets.fetch_add(1, Ordering::Relaxed);
        crossed(bytes, len, self.limits.bytes) || crossed(packets, 1, self.limits.packets)
    }

    /// Encrypts in place with the next packet-id.
    ///
    /// The caller writes the plaintext at `buf[overhead..overhead + plaintext_len]`, where
    /// `overhead` is [`DataHeader::buffer_len`] of `header` plus packet-id and tag
    /// ([`DATA_V2_OVERHEAD`](super::DATA_V2_OVERHEAD) or
    /// [`DATA_V1_OVERHEAD`](super::DATA_V1_OVERHEAD)); this fills in
    /// `header ‖ packet-id ‖ tag` in front and turns the plaintext into ciphertext.
    pub fn seal(
        &self,
        header: DataHeader,
        buf: &mut [u8],
        plaintext_len: usize,
    ) -> Result<Sealed, DataError> {
        // Whoever takes the packet-id that crosses the threshold saw it not crossed
        // before, so at least one sender reports it.
        let spent_before = self.sealing.needs_renegotiation();
        let len = self.sealing.seal_in_place(header, buf, plaintext_len)?;
        let spent = !spent_before && self.sealing.needs_renegotiation();
        let limit = self.count(plaintext_len);
        Ok(Sealed {
            len,
            renegotiate: spent || limit,
        })
    }

    /// Authenticates and decrypts the P_DATA_V1/V2 packet in `buf` in place.
    ///
    /// The packet-id is checked against the key's replay window before decryption and
    /// committed only after the tag verified, so two carriers racing with the same
    /// packet accept it once. On success the plaintext is `buf[opened.plaintext]`; on
    /// failure the ciphertext bytes of `buf` are unspecified and nothing is counted.
    ///
    /// Choose this key by the packet's key_id (and peer-id) first: P_DATA_V1
    /// authenticates only its packet-id, so its key_id is trustworthy only through that
    /// choice.
    pub fn open(&self, buf: &mut [u8], now: Instant) -> Result<Opened, DataError> {
        let mut opened = self.opening.open_with(
            buf,
            |id| Ok(self.window().check(id, now)?),
            |id| Ok(self.window().commit(id, now)?),
        )?;
        opened.renegotiate = self.count(opened.plaintext.len());
        Ok(opened)
    }
}

/// What a data plane needs to carry a session's data packets: see
/// `Session::data_channel`. The keys are the session's own, shared.
#[derive(Debug, Clone)]
pub struct DataChannel {
    /// The peer-id for P_DATA_V2 headers; `None` when the session sends P_DATA_V1.
    pub peer_id: Option<PeerId>,
    /// The key_id to seal with.
    pub send_key: KeyId,
    /// Every key_id that still opens packets (the sending key, a lame duck, a new key
    /// the peer may already use).
    pub keys: Vec<Arc<DataKey>>,
}

impl DataChannel {
    /// The key for `key_id`.
    pub fn key(&self, key_id: KeyId) -> Option<&Arc<DataKey>> {
        self.keys.iter().find(|k| k.key_id == key_id)
    }

    /// The header of a data packet we send.
    pub fn send_header(&self) -> DataHeader {
        match self.peer_id {
            Some(peer_id) => DataHeader::V2 {
                key_id: self.send_key,
                peer_id,
            },
            None => DataHeader::V1 {
                key_id: self.send_key,
            },
        }
    }

    /// Where the plaintext goes in a buffer for [`DataChannel::seal`]: the length of
    /// header, packet-id and tag of the packets this channel sends.
    pub fn overhead(&self) -> usize {
        self.send_header().buffer_len() + PACKET_ID_LEN + TAG_LEN
    }

    /// Seals the plaintext at `buf[self.overhead()..][..plaintext_len]` with the sending
    /// key and header (see [`DataKey::seal`]).
    pub fn seal(&self, buf: &mut [u8], plaintext_len: usize) -> Result<Sealed, DataError> {
        let key = self.key(self.send_key).ok_or(DataError::NoKey {
            key_id: self.send_key,
        })?;
        key.seal(self.send_header(), buf, plaintext_len)
    }

    /// Opens a data packet with the key its key_id names (see [`DataKey::open`]); the
    /// key_id is on the result's header.
    pub fn open(&self, buf: &mut [u8], now: Instant) -> Result<Opened, DataError> {
        let key_id = DataHeader::parse(buf)?.key_id();
        self.key(key_id)
            .ok_or(DataError::NoKey { key_id })?
            .open(buf, now)
    }

    /// True when both carry the same keys (the same shared objects) in the same roles.
    pub fn same_keys(&self, other: &DataChannel) -> bool {
        self.peer_id == other.peer_id
            && self.send_key == other.send_key
            && self.keys.len() == other.keys.len()
            && self
                .keys
                .iter()
                .zip(&other.keys)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tests::{key_block, v2};
    use crate::data::{DATA_V2_OVERHEAD, Plaintext};
    use crate::replay::ReplayError;

    fn pair(limits: UsageLimits) -> (DataKey, DataKey) {
        let block = KeyBlock::from_exporter(key_block());
        let make = |role| {
            DataKey::new(
                KeyId::ZERO,
                Cipher::Aes256Gcm,
                &block.data_channel_keys(role),
                ReplayConfig::default(),
                limits,
            )
            .unwrap()
        };
        (make(Role::Server), make(Role::Client))
    }

    fn sealed(key: &DataKey, plaintext: &[u8]) -> (Vec<u8>, Sealed) {
        let mut buf = vec![0u8; DATA_V2_OVERHEAD + plaintext.len()];
        buf[DATA_V2_OVERHEAD..].copy_from_slice(plaintext);
        let out = key.seal(v2(0, 3), &mut buf, plaintext.len()).unwrap();
        buf.truncate(out.len);
        (buf, out)
    }

    #[test]
    fn both_directions_count_and_the_crossing_packet_says_so_once() {
        let (server, client) = pair(UsageLimits {
            bytes: 250,
            packets: 0,
        });
        let mut crossings = 0;
        for _ in 0..5 {
            // 100 bytes out, 100 bytes in: the limit falls inside the second send.
            let (_, out) = sealed(&server, &[1u8; 100]);
            crossings += usize::from(out.renegotiate);
            let (mut wire, _) = sealed(&client, &[2u8; 100]);
            let opened = server.open(&mut wire, Instant::now()).unwrap();
            crossings += usize::from(opened.renegotiate);
        }
        assert_eq!((server.bytes(), server.packets()), (1000, 10));
        assert_eq!(crossings, 1, "reported once, by the packet that crossed");
        assert!(server.renegotiation_due());
        assert!(!pair(UsageLimits::default()).0.renegotiation_due());
    }

    #[test]
    fn the_packet_limit_is_counted_like_the_byte_limit() {
        let (server, client) = pair(UsageLimits {
            bytes: 0,
            packets: 3,
        });
        let flags: Vec<bool> = (0..4)
            .map(|_| {
                let (mut wire, _) = sealed(&client, b"x");
                server.open(&mut wire, Instant::now()).unwrap().renegotiate
            })
            .collect();
        assert_eq!(flags, [false, false, true, false]);
    }

    #[test]
    fn a_packet_opens_once_and_a_forgery_counts_nothing() {
        let (server, client) = pair(UsageLimits::default());
        let (wire, _) = sealed(&client, b"hello");
        let mut first = wire.clone();
        let opened = server.open(&mut first, Instant::now()).unwrap();
        assert_eq!(&first[opened.plaintext], b"hello");
        let mut again = wire.clone();
        assert!(matches!(
            server.open(&mut again, Instant::now()),
            Err(DataError::Replay(ReplayError::Replayed { .. }))
        ));
        let (mut forged, _) = sealed(&client, b"hello");
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(
            server.open(&mut forged, Instant::now()),
            Err(DataError::Authentication)
        );
        assert_eq!((server.bytes(), server.packets()), (5, 1));
        assert_eq!(server.highest_received(), 1);
    }

    #[test]
    fn a_channel_seals_with_its_sending_key_and_opens_by_key_id() {
        let (server, client) = pair(UsageLimits::default());
        let server = DataChannel {
            peer_id: Some(PeerId::new(3).unwrap()),
            send_key: KeyId::ZERO,
            keys: vec![Arc::new(server)],
        };
        let mut buf = vec![0u8; server.overhead() + 4];
        buf[server.overhead()..].copy_from_slice(b"ping");
        let out = server.seal(&mut buf, 4).unwrap();
        let mut wire = buf[..out.len].to_vec();
        let opened = client.open(&mut wire, Instant::now()).unwrap();
        assert_eq!(opened.header, v2(0, 3));
        assert_eq!(
            Plaintext::classify(&wire[opened.plaintext]).unwrap(),
            Plaintext::Packet(b"ping")
        );
        // A key_id the channel does not hold.
        let other = DataKey::from_key_block(
            KeyId::new(1).unwrap(),
            Cipher::Aes256Gcm,
            &key_block(),
            Role::Client,
        )
        .unwrap();
        let mut buf = vec![0u8; DATA_V2_OVERHEAD + 1];
        let n = other.seal(v2(1, 3), &mut buf, 1).unwrap().len;
        assert_eq!(
            server.open(&mut buf[..n], Instant::now()),
            Err(DataError::NoKey {
                key_id: KeyId::new(1).unwrap()
            })
        );
        assert!(server.same_keys(&server.clone()));
    }
}
