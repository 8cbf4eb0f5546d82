//! Control-channel unwrapping with fixed keys: none, tls-auth (every digest and
//! direction), tls-crypt, and the tls-crypt-v2 client key cut off a V3 reset. No input
//! panics; a packet wrapped by the peer unwraps to itself and its replay stamp.
#![no_main]

use gateway_proto::keys::Role;
use gateway_proto::static_key::{
    KeyDirection, STATIC_KEY_LEN, StaticKey, TLS_CRYPT_V2_SERVER_KEY_LEN, TlsCryptV2ServerKey,
};
use gateway_proto::wrap::{
    AuthDigest, HEADER_LEN, ReplayStamp, TlsAuth, TlsCrypt, Wrap, split_client_key,
};
use libfuzzer_sys::fuzz_target;

/// Our side and the peer's side of one protection mode, chosen by `selector`.
fn pair(selector: u8) -> (Wrap, Wrap) {
    let key = StaticKey::from_bytes(core::array::from_fn::<u8, STATIC_KEY_LEN, _>(|i| i as u8));
    let digest =
        [AuthDigest::Sha1, AuthDigest::Sha256, AuthDigest::Sha512][usize::from(selector / 8) % 3];
    let auth = |ours, theirs| {
        (
            Wrap::TlsAuth(TlsAuth::new(&key, ours, digest)),
            Wrap::TlsAuth(TlsAuth::new(&key, theirs, digest)),
        )
    };
    match selector % 6 {
        0 => (Wrap::None, Wrap::None),
        1 => auth(KeyDirection::Bidirectional, KeyDirection::Bidirectional),
        2 => auth(KeyDirection::Normal, KeyDirection::Inverse),
        3 => auth(KeyDirection::Inverse, KeyDirection::Normal),
        4 => (
            Wrap::TlsCrypt(TlsCrypt::new(&key, Role::Server)),
            Wrap::TlsCrypt(TlsCrypt::new(&key, Role::Client)),
        ),
        _ => (
            Wrap::TlsCrypt(TlsCrypt::new(&key, Role::Client)),
            Wrap::TlsCrypt(TlsCrypt::new(&key, Role::Server)),
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (ours, peer) = pair(selector);
    let mut out = vec![0u8; rest.len()];
    if let Ok(unwrapped) = ours.unwrap(rest, &mut out) {
        assert!(unwrapped.len <= rest.len());
    }

    // Round trip: the peer wraps the input as a packet, we unwrap it unchanged.
    if rest.len() >= HEADER_LEN {
        let stamp = ReplayStamp {
            id: u32::from(selector) + 1,
            time: rest.len() as u32,
        };
        let mut wire = vec![0u8; rest.len() + peer.overhead()];
        let len = peer
            .wrap(rest, stamp, &mut wire)
            .expect("sized for the overhead");
        let mut back = vec![0u8; len];
        let unwrapped = ours
            .unwrap(&wire[..len], &mut back)
            .expect("peer's packet unwraps");
        assert_eq!(&back[..unwrapped.len], rest);
        let expected = (!matches!(ours, Wrap::None)).then_some(stamp);
        assert_eq!(unwrapped.replay, expected);
    }

    // tls-crypt-v2: cut the WKc off a V3 reset and try to unwrap it.
    if let Ok((packet, wkc)) = split_client_key(rest) {
        assert_eq!(packet.len() + wkc.len(), rest.len());
        let server_key = TlsCryptV2ServerKey::from_bytes(&[0x5a; TLS_CRYPT_V2_SERVER_KEY_LEN]);
        if let Ok(client) = server_key.unwrap_client_key(wkc) {
            let _ = client.timestamp();
        }
    }
});
