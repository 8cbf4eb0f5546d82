//! What a data-channel plaintext carries (ping, OCC, IP packet) and the compression
//! framing byte stock OpenVPN puts in front of it.

use core::ops::Range;

use super::{DataError, OCC_MAGIC, PING_PAYLOAD};

/// `comp-lzo` framing byte of an uncompressed packet.
const COMP_LZO_NONE: u8 = 0xFA;
/// `compress` framing byte of an uncompressed packet whose first byte moved to the end.
const COMPRESS_SWAP: u8 = 0xFB;
/// `compress stub-v2` escape byte (followed by 0x00 for "uncompressed").
const COMPRESS_V2_INDICATOR: u8 = 0x50;

/// What a decrypted data-channel plaintext carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plaintext<'a> {
    /// The keepalive ping: drop it.
    Ping,
    /// An OCC message: its type byte and what follows it.
    Occ {
        /// 0 REQUEST, 1 REPLY, …, [`OCC_EXIT`](super::OCC_EXIT).
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
    /// [`DATA_V2_OVERHEAD`](super::DATA_V2_OVERHEAD) (or [`DATA_V1_OVERHEAD`](super::DATA_V1_OVERHEAD)) and pass the returned length to
    /// [`SealingKey::seal_in_place`](super::SealingKey::seal_in_place).
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
    use crate::data::OCC_EXIT;
    use proptest::prelude::*;

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
    }
}
