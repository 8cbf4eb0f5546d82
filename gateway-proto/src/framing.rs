//! TCP stream framing: every packet is preceded by a big-endian `u16` length that counts the
//! packet only. UDP needs no framing (one datagram carries exactly one packet), so UDP
//! callers hand datagrams straight to the packet codecs and never use this module.

/// Length of the frame header.
pub const FRAME_HEADER_LEN: usize = 2;
/// The largest packet a 2-byte length can describe.
pub const MAX_FRAME_LEN: usize = u16::MAX as usize;

/// Why a TCP stream could not be (de)framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// A length prefix of zero: no OpenVPN packet is empty.
    #[error("frame length 0: expected 1..={max}")]
    ZeroLength {
        /// The configured maximum.
        max: usize,
    },
    /// A length prefix above the configured maximum.
    #[error("frame length {found} above the maximum {max}")]
    TooLong {
        /// The configured maximum.
        max: usize,
        /// The length found (or asked for).
        found: usize,
    },
    /// The decoder met an error earlier; a stream that lost its framing cannot recover.
    #[error("stream framing was lost earlier; close the connection")]
    Poisoned,
    /// `encode_frame` got a buffer too small for header and packet.
    #[error("output buffer too small: needed {needed} bytes, found {found}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        found: usize,
    },
}

/// The 2-byte header for a packet of `packet_len` bytes (for vectored writes).
pub fn frame_header(packet_len: usize) -> Result<[u8; FRAME_HEADER_LEN], FramingError> {
    if packet_len == 0 {
        return Err(FramingError::ZeroLength { max: MAX_FRAME_LEN });
    }
    let len = u16::try_from(packet_len).map_err(|_| FramingError::TooLong {
        max: MAX_FRAME_LEN,
        found: packet_len,
    })?;
    Ok(len.to_be_bytes())
}

/// Writes header and `packet` at the start of `out`; returns the bytes written.
pub fn encode_frame(packet: &[u8], out: &mut [u8]) -> Result<usize, FramingError> {
    let header = frame_header(packet.len())?;
    let needed = FRAME_HEADER_LEN + packet.len();
    let found = out.len();
    let frame = out
        .get_mut(..needed)
        .ok_or(FramingError::BufferTooSmall { needed, found })?;
    let (head, body) = frame.split_at_mut(FRAME_HEADER_LEN);
    head.copy_from_slice(&header);
    body.copy_from_slice(packet);
    Ok(needed)
}

/// Where the decoder is inside the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `have` bytes of the length prefix are in `header`.
    Header { have: usize },
    /// `filled` bytes of a `len`-byte packet are in `body`.
    Body { len: usize, filled: usize },
    /// A framing error happened.
    Poisoned,
}

/// Splits a TCP byte stream, fed in chunks of any size, into packets.
///
/// Memory is bounded by the configured maximum packet length and allocated once. A packet
/// that lies whole inside the input chunk is returned without copying; only a packet
/// split across reads is gathered in the internal buffer.
///
/// ```
/// # use gateway_proto::framing::StreamDecoder;
/// let mut decoder = StreamDecoder::new(1500).unwrap();
/// let mut input: &[u8] = &[0, 2, 0xaa, 0xbb, 0, 1];
/// let mut packets = Vec::new();
/// while let Some(packet) = decoder.decode(&mut input).unwrap() {
///     packets.push(packet.to_vec());
/// }
/// assert_eq!(packets, vec![vec![0xaa, 0xbb]]);
/// assert!(input.is_empty()); // the partial header `0, 1` is kept for the next read
/// ```
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    max_packet_len: usize,
    header: [u8; FRAME_HEADER_LEN],
    body: Box<[u8]>,
    state: State,
}

impl StreamDecoder {
    /// A decoder that accepts packets of 1..=`max_packet_len` bytes
    /// (`max_packet_len` itself must be 1..=65535).
    pub fn new(max_packet_len: usize) -> Result<Self, FramingError> {
        if max_packet_len == 0 {
            return Err(FramingError::ZeroLength { max: MAX_FRAME_LEN });
        }
        if max_packet_len > MAX_FRAME_LEN {
            return Err(FramingError::TooLong {
                max: MAX_FRAME_LEN,
                found: max_packet_len,
            });
        }
        Ok(Self {
            max_packet_len,
            header: [0; FRAME_HEADER_LEN],
            body: vec![0; max_packet_len].into_boxed_slice(),
            state: State::Header { have: 0 },
        })
    }

    /// The largest packet accepted.
    pub fn max_packet_len(&self) -> usize {
        self.max_packet_len
    }

    /// True when no partial frame is held (the stream may end here cleanly).
    pub fn is_idle(&self) -> bool {
        self.state == State::Header { have: 0 }
    }

    /// Consumes bytes from the front of `input` until one packet is complete and returns it,
    /// or returns `None` once `input` is exhausted with at most a partial frame held.
    ///
    /// Call in a loop until `None`. After an error the stream is unusable and every later
    /// call returns [`FramingError::Poisoned`]; close the connection.
    pub fn decode<'s, 'i: 's>(
        &'s mut self,
        input: &mut &'i [u8],
    ) -> Result<Option<&'s [u8]>, FramingError> {
        loop {
            match self.state {
                State::Poisoned => return Err(FramingError::Poisoned),
                State::Header { have } => {
                    let Some((&byte, rest)) = input.split_first() else {
                        return Ok(None);
                    };
                    *input = rest;
                    if let Some(slot) = self.header.get_mut(have) {
                        *slot = byte;
                    }
                    if have + 1 < FRAME_HEADER_LEN {
                        self.state = State::Header { have: have + 1 };
                        continue;
                    }
                    let len = usize::from(u16::from_be_bytes(self.header));
                    if len == 0 {
                        self.state = State::Poisoned;
                        return Err(FramingError::ZeroLength {
                            max: self.max_packet_len,
                        });
                    }
                    if len > self.max_packet_len {
                        self.state = State::Poisoned;
                        return Err(FramingError::TooLong {
                            max: self.max_packet_len,
                            found: len,
                        });
                    }
                    if let Some((packet, rest)) = input.split_at_checked(len) {
                        // Whole packet in this chunk: hand it out without copying.
                        *input = rest;
                        self.state = State::Header { have: 0 };
                        return Ok(Some(packet));
                    }
                    self.state = State::Body { len, filled: 0 };
                }
                State::Body { len, filled } => {
                    let take = (len - filled).min(input.len());
                    let (chunk, rest) = input.split_at(take);
                    if let Some(dst) = self.body.get_mut(filled..filled + take) {
                        dst.copy_from_slice(chunk);
                    }
                    *input = rest;
                    let filled = filled + take;
                    if filled < len {
                        self.state = State::Body { len, filled };
                        return Ok(None);
                    }
                    self.state = State::Header { have: 0 };
                    return Ok(self.body.get(..len));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(
        decoder: &mut StreamDecoder,
        mut input: &[u8],
    ) -> Result<Vec<Vec<u8>>, FramingError> {
        let mut packets = Vec::new();
        while let Some(packet) = decoder.decode(&mut input)? {
            packets.push(packet.to_vec());
        }
        assert!(
            input.is_empty(),
            "decode returned None before consuming its input"
        );
        Ok(packets)
    }

    fn frame(packet: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; packet.len() + FRAME_HEADER_LEN];
        let n = encode_frame(packet, &mut out).unwrap();
        assert_eq!(n, out.len());
        out
    }

    #[test]
    fn encodes_big_endian_length() {
        assert_eq!(frame(&[0x38, 1, 2]), vec![0, 3, 0x38, 1, 2]);
        assert_eq!(frame_header(0x1234), Ok([0x12, 0x34]));
        assert_eq!(frame_header(MAX_FRAME_LEN), Ok([0xff, 0xff]));
    }

    #[test]
    fn encoder_errors() {
        assert_eq!(
            frame_header(0),
            Err(FramingError::ZeroLength { max: MAX_FRAME_LEN })
        );
        assert_eq!(
            frame_header(65536),
            Err(FramingError::TooLong {
                max: MAX_FRAME_LEN,
                found: 65536
            })
        );
        assert_eq!(
            encode_frame(&[1, 2, 3], &mut [0u8; 4]),
            Err(FramingError::BufferTooSmall {
                needed: 5,
                found: 4
            })
        );
    }

    #[test]
    fn several_packets_in_one_read() {
        let mut decoder = StreamDecoder::new(100).unwrap();
        let mut stream = frame(b"one");
        stream.extend(frame(b"second"));
        stream.extend(frame(b"3"));
        let packets = decode_all(&mut decoder, &stream).unwrap();
        assert_eq!(
            packets,
            vec![b"one".to_vec(), b"second".to_vec(), b"3".to_vec()]
        );
        assert!(decoder.is_idle());
    }

    #[test]
    fn length_prefix_split_across_reads() {
        let mut decoder = StreamDecoder::new(300).unwrap();
        let packet = vec![7u8; 258];
        let stream = frame(&packet);
        assert_eq!(
            decode_all(&mut decoder, &stream[..1]).unwrap(),
            Vec::<Vec<u8>>::new()
        );
        assert!(!decoder.is_idle());
        assert_eq!(
            decode_all(&mut decoder, &stream[1..2]).unwrap(),
            Vec::<Vec<u8>>::new()
        );
        assert_eq!(
            decode_all(&mut decoder, &stream[2..100]).unwrap(),
            Vec::<Vec<u8>>::new()
        );
        assert_eq!(
            decode_all(&mut decoder, &stream[100..]).unwrap(),
            vec![packet]
        );
        assert!(decoder.is_idle());
    }

    #[test]
    fn byte_at_a_time() {
        let mut decoder = StreamDecoder::new(10).unwrap();
        let mut stream = frame(b"ab");
        stream.extend(frame(b"cde"));
        let mut packets = Vec::new();
        for byte in &stream {
            packets.extend(decode_all(&mut decoder, std::slice::from_ref(byte)).unwrap());
        }
        assert_eq!(packets, vec![b"ab".to_vec(), b"cde".to_vec()]);
    }

    #[test]
    fn rejects_zero_length_and_stays_poisoned() {
        let mut decoder = StreamDecoder::new(100).unwrap();
        let mut input: &[u8] = &[0, 0, 0, 1, 9];
        assert_eq!(
            decoder.decode(&mut input),
            Err(FramingError::ZeroLength { max: 100 })
        );
        let mut next: &[u8] = &[0, 1, 9];
        assert_eq!(decoder.decode(&mut next), Err(FramingError::Poisoned));
    }

    #[test]
    fn rejects_length_above_configured_max() {
        let mut decoder = StreamDecoder::new(100).unwrap();
        let mut input: &[u8] = &[0, 101];
        assert_eq!(
            decoder.decode(&mut input),
            Err(FramingError::TooLong {
                max: 100,
                found: 101
            })
        );
        assert_eq!(decoder.decode(&mut input), Err(FramingError::Poisoned));
        let mut at_max = StreamDecoder::new(100).unwrap();
        let packets = decode_all(&mut at_max, &frame(&[5u8; 100])).unwrap();
        assert_eq!(packets, vec![vec![5u8; 100]]);
    }

    #[test]
    fn constructor_bounds() {
        assert_eq!(
            StreamDecoder::new(0).unwrap_err(),
            FramingError::ZeroLength { max: MAX_FRAME_LEN }
        );
        assert_eq!(
            StreamDecoder::new(65536).unwrap_err(),
            FramingError::TooLong {
                max: MAX_FRAME_LEN,
                found: 65536
            }
        );
        assert_eq!(
            StreamDecoder::new(MAX_FRAME_LEN).unwrap().max_packet_len(),
            65535
        );
    }

    proptest! {
        #[test]
        fn random_chunking_yields_the_packets(
            packets in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..600), 0..12),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        ) {
            let mut stream = Vec::new();
            for packet in &packets {
                stream.extend(frame(packet));
            }
            let mut positions: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            positions.push(0);
            positions.push(stream.len());
            positions.sort_unstable();
            let mut decoder = StreamDecoder::new(600).unwrap();
            let mut decoded = Vec::new();
            for pair in positions.windows(2) {
                decoded.extend(decode_all(&mut decoder, &stream[pair[0]..pair[1]]).unwrap());
            }
            prop_assert_eq!(decoded, packets);
            prop_assert!(decoder.is_idle());
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            max in 1usize..300,
        ) {
            let mut decoder = StreamDecoder::new(max).unwrap();
            let mut input: &[u8] = &bytes;
            while let Ok(Some(packet)) = decoder.decode(&mut input) {
                prop_assert!(!packet.is_empty() && packet.len() <= max);
            }
        }
    }
}
