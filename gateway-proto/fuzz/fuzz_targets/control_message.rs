//! Control-channel text messages (§10–§13): framing by NUL, every keyword, and
//! PUSH_REPLY options read into a typed configuration. Parsing never panics; what emits
//! parses back the same; a parsed PUSH_REPLY configuration survives being split into
//! messages and reassembled.
#![no_main]

use gateway_proto::push::{
    ControlMessage, PUSH_BUNDLE_SIZE, PushConfig, PushReplyAssembler, split_push_reply,
    take_message,
};
use libfuzzer_sys::fuzz_target;

fn check_push_reply(options: &[gateway_proto::key_method::Directive]) {
    let _ = PushReplyAssembler::new().push(options.to_vec());
    let Ok(config) = PushConfig::from_directives(options.iter().cloned()) else {
        return;
    };
    let Ok(directives) = config.to_directives() else {
        return;
    };
    assert_eq!(
        PushConfig::from_directives(directives.iter().cloned()).as_ref(),
        Ok(&config),
        "from_directives(to_directives(c)) == c"
    );
    let Ok(messages) = split_push_reply(&directives, PUSH_BUNDLE_SIZE) else {
        return;
    };
    let mut assembler = PushReplyAssembler::new();
    let mut assembled = None;
    for message in messages {
        let mut wire = Vec::new();
        message.emit(&mut wire).expect("split messages emit");
        let ControlMessage::PushReply { options } =
            ControlMessage::parse(&wire).expect("emitted PUSH_REPLY parses")
        else {
            panic!("split_push_reply made a non-PUSH_REPLY message");
        };
        assert!(
            assembled.is_none(),
            "assembler finished before the last message"
        );
        assembled = assembler.push(options).expect("split reply reassembles");
    }
    assert_eq!(assembled, Some(config), "reassembled reply == original");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((message, consumed))) = take_message(data) {
        assert_eq!(consumed, message.len() + 1);
        assert_eq!(data.get(message.len()), Some(&0));
    }
    let Ok(message) = ControlMessage::parse(data) else {
        return;
    };
    let mut wire = Vec::new();
    if message.emit(&mut wire).is_ok() {
        assert_eq!(
            ControlMessage::parse(&wire).as_ref(),
            Ok(&message),
            "parse(emit(m)) == m"
        );
    }
    if let ControlMessage::PushReply { options } = &message {
        check_push_reply(options);
    }
});
