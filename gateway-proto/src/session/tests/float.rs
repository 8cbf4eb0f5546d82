//! What `handle_datagram` reports, for the server driver's float decision (§11).

use super::*;
use crate::packet::peek_peer_id;

#[test]
fn only_authenticated_data_allows_a_float() {
    let mut pair = Pair::new(Setup::default());
    pair.run_until(Duration::from_secs(30), Pair::both_established);
    let now = pair.now;
    pair.client.send_data(now, &[0x45, 1, 2, 3]).unwrap();
    let data = pair.client.poll_transmit(now).unwrap().contents;
    assert_eq!(peek_peer_id(&data), Some(PEER_ID));

    let mut forged = data.clone();
    let tag_byte = 8;
    forged[tag_byte] ^= 0x01;
    assert!(matches!(
        pair.server().handle_datagram(now, &forged),
        Err(DropReason::Data(_))
    ));
    let accepted = pair.server().handle_datagram(now, &data).unwrap();
    assert_eq!(accepted, Accepted::AuthenticatedData);
    assert!(accepted.allows_float());
    assert!(
        pair.server().handle_datagram(now, &data).is_err(),
        "a replay is dropped"
    );

    pair.client.renegotiate(now);
    let reset = pair.client.poll_transmit(now).unwrap().contents;
    assert_eq!(peek_peer_id(&reset), None);
    let accepted = pair.server().handle_datagram(now, &reset).unwrap();
    assert_eq!(accepted, Accepted::Control);
    assert!(!accepted.allows_float());
    pair.run_until(Duration::from_secs(30), |p| {
        p.server_events
            .iter()
            .any(|e| matches!(e, Event::Rekeyed(_)))
    });
    assert_eq!(pair.server_packets.pop_front().unwrap(), [0x45, 1, 2, 3]);
    pair.exchange_data(9);
}

#[test]
fn data_v1_is_authenticated_but_no_float() {
    let setup = Setup {
        client_flags: DEFAULT_CLIENT_PROTO_FLAGS & !ProtoFlags::DATA_V2,
        ..Setup::default()
    };
    let mut pair = Pair::new(setup);
    pair.run_until(Duration::from_secs(30), Pair::both_established);
    let now = pair.now;
    pair.client.send_data(now, &[0x45, 1, 2, 3]).unwrap();
    let data = pair.client.poll_transmit(now).unwrap().contents;
    assert_eq!(peek_peer_id(&data), None);
    let accepted = pair.server().handle_datagram(now, &data).unwrap();
    assert_eq!(accepted, Accepted::DataV1);
    assert!(!accepted.allows_float());
}
