//! TCP framing (§2): a byte stream cut into arbitrary chunks decodes to the same packets,
//! and the same error, as a plain reading of the length prefixes; each decoded packet
//! encodes back to the bytes it came from.
#![no_main]

use gateway_proto::framing::{FRAME_HEADER_LEN, FramingError, StreamDecoder, encode_frame};
use libfuzzer_sys::fuzz_target;

/// What a plain reading of the whole stream gives: the packets, whether it stopped at a
/// bad length, and whether a partial frame remains.
fn reference(stream: &[u8], max: usize) -> (Vec<&[u8]>, bool, bool) {
    let mut packets = Vec::new();
    let mut rest = stream;
    loop {
        let Some((header, body)) = rest.split_first_chunk::<FRAME_HEADER_LEN>() else {
            return (packets, false, !rest.is_empty());
        };
        let len = usize::from(u16::from_be_bytes(*header));
        if len == 0 || len > max {
            return (packets, true, true);
        }
        let Some((packet, after)) = body.split_at_checked(len) else {
            return (packets, false, true);
        };
        packets.push(packet);
        rest = after;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((setup, stream)) = data.split_first_chunk::<4>() else {
        return;
    };
    let max = usize::from(u16::from_be_bytes([setup[0], setup[1]]).max(1));
    let chunk_sizes = [usize::from(setup[2]) + 1, usize::from(setup[3] % 7) + 1];
    let mut decoder = StreamDecoder::new(max).expect("max in 1..=65535");
    let mut packets = Vec::new();
    let mut error = None;
    let mut input = stream;
    let mut turn = 0;
    'feed: while !input.is_empty() {
        let size = chunk_sizes[turn % 2].min(input.len());
        turn += 1;
        let (mut chunk, rest) = input.split_at(size);
        input = rest;
        loop {
            match decoder.decode(&mut chunk) {
                Ok(Some(packet)) => packets.push(packet.to_vec()),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break 'feed;
                }
            }
        }
    }
    let (expected, bad_length, partial) = reference(stream, max);
    assert_eq!(packets, expected, "chunking changes nothing");
    assert_eq!(error.is_some(), bad_length);
    if let Some(e) = error {
        assert!(matches!(
            e,
            FramingError::ZeroLength { .. } | FramingError::TooLong { .. }
        ));
        assert_eq!(
            decoder.decode(&mut &[0u8, 1, 0][..]),
            Err(FramingError::Poisoned)
        );
    } else {
        assert_eq!(decoder.is_idle(), !partial);
    }
    let mut offset = 0;
    for packet in &packets {
        let mut frame = vec![0u8; FRAME_HEADER_LEN + packet.len()];
        let written = encode_frame(packet, &mut frame).expect("decoded packet fits a frame");
        assert_eq!(&frame[..written], &stream[offset..offset + written]);
        offset += written;
    }
});
