//! The stateless cookie handshake (§4.4) with a fixed secret: answering a client reset
//! and verifying the client's next packet never panic on any parsed control packet, and
//! the session id we hand out is accepted when echoed in the same time slot.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use gateway_proto::cookie::{CookieConfig, CookieKey};
use gateway_proto::packet::{Acks, ControlPacket, ControlRepr, KeyId, Opcode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((setup, wire)) = data.split_first_chunk::<30>() else {
        return;
    };
    let (time, setup) = setup.split_at(8);
    let (address, port) = setup.split_at(16);
    // `port` holds the client port (2 bytes) and the reset's replay-id (4 bytes).
    let now_secs = u64::from_be_bytes(time.try_into().expect("8 bytes"));
    let ip = if address[0] & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(
            address[1], address[2], address[3], address[4],
        ))
    } else {
        IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(address).expect("16 bytes"),
        ))
    };
    let client = SocketAddr::new(ip, u16::from_be_bytes([port[0], port[1]]));
    let replay_id = u32::from_be_bytes([port[2], port[3], port[4], port[5]]);
    let Ok(packet) = ControlPacket::new_checked(wire) else {
        return;
    };
    let repr = ControlRepr::parse(&packet);
    let key = CookieKey::new(b"fuzz cookie secret, 32 bytes ok!", CookieConfig::default())
        .expect("secret is long enough");

    let _ = key.verify(&repr, client, now_secs);
    let Ok(reply) = key.reply_to_reset(&repr, client, Some(replay_id), now_secs) else {
        return;
    };
    let _ = reply.repr();
    assert_eq!(reply.client_session_id, repr.session_id);

    // Round trip: the client ACKs our reset, echoing our session id.
    let ack = ControlRepr {
        opcode: Opcode::AckV1,
        key_id: KeyId::ZERO,
        session_id: repr.session_id,
        acks: Acks::from_slice(&[0]).expect("one ack fits"),
        remote_session_id: Some(reply.session_id),
        message_id: None,
        payload: &[],
    };
    let session = key
        .verify(&ack, client, now_secs)
        .expect("our own cookie verifies");
    assert_eq!(session.session_id, reply.session_id);
    assert_eq!(session.peer_session_id, repr.session_id);
    assert_eq!(session.slot_age, 0);
});
