//! Key-method 2 messages in both framings (stock and AWS VPN Client), as client and server
//! messages: parsing never panics, a parsed message needs exactly the bytes it consumed,
//! and whatever emits (in either framing) parses back to the same message.
#![no_main]

use gateway_proto::key_method::{
    ClientKeySource, Framing, KeyMethod2, KeySource, Parsed, ServerKeySource,
};
use libfuzzer_sys::fuzz_target;

fn check<K: KeySource + Clone + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let Ok(Some(parsed)) = KeyMethod2::<K>::parse(data) else {
        return;
    };
    assert!(parsed.consumed <= data.len());
    assert_eq!(
        KeyMethod2::<K>::parse(&data[..parsed.consumed]),
        Ok(Some(parsed.clone())),
        "the consumed bytes alone hold the message"
    );
    for framing in [Framing::Stock, Framing::Aws] {
        let mut out = Vec::new();
        if parsed.message.emit(framing, &mut out).is_err() {
            continue;
        }
        let expected = Parsed {
            message: parsed.message.clone(),
            framing,
            consumed: out.len(),
        };
        assert_eq!(
            KeyMethod2::<K>::parse(&out),
            Ok(Some(expected)),
            "parse(emit(m)) == m"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    check::<ClientKeySource>(data);
    check::<ServerKeySource>(data);
});
