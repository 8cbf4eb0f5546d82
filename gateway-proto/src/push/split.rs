//! Splitting a PUSH_REPLY over several messages with `push-continuation` (protocol doc
//! §10.2), and reassembling them on the client into a [`PushConfig`].

use super::config::{PushConfig, PushError};
use super::message::ControlMessage;
use crate::key_method::Directive;

/// Message size a 2.6 server keeps each PUSH_REPLY under (`PUSH_BUNDLE_SIZE`).
pub const PUSH_BUNDLE_SIZE: usize = 1024;
/// Options must stay under 256 bytes of text each (§10.2).
pub const MAX_PUSH_OPTION_LEN: usize = 255;
/// Most options a client accepts in one (possibly continued) PUSH_REPLY.
pub const MAX_PUSH_OPTIONS: usize = 1024;

const CONTINUATION: &str = "push-continuation";
/// `PUSH_REPLY` and the terminating NUL.
const FRAME_LEN: usize = "PUSH_REPLY".len() + 1;
/// `,push-continuation N`.
const CONTINUATION_LEN: usize = ",push-continuation 2".len();

fn continuation(value: u8) -> Directive {
    Directive {
        name: CONTINUATION.to_owned(),
        args: vec![value.to_string()],
    }
}

/// Packs `options` into PUSH_REPLY messages of at most `max_message_len` bytes on the wire
/// (NUL included; use [`PUSH_BUNDLE_SIZE`] like a 2.6 server). One message when all fit,
/// without `push-continuation`; otherwise each message ends with `push-continuation 2`,
/// the last with `push-continuation 1`. Options keep their order and are never split.
pub fn split_push_reply(
    options: &[Directive],
    max_message_len: usize,
) -> Result<Vec<ControlMessage>, PushError> {
    let mut lens = Vec::with_capacity(options.len());
    for option in options {
        if option.name == CONTINUATION {
            return Err(PushError::TypedOptionInOther {
                name: option.name.clone(),
            });
        }
        let len = option.to_text()?.len();
        if len > MAX_PUSH_OPTION_LEN {
            return Err(PushError::OptionTooLong {
                name: option.name.clone(),
                len,
            });
        }
        lens.push(len);
    }
    let single: usize = FRAME_LEN + lens.iter().map(|len| len + 1).sum::<usize>();
    if single <= max_message_len {
        return Ok(vec![ControlMessage::PushReply {
            options: options.to_vec(),
        }]);
    }
    let mut messages = Vec::new();
    let mut current: Vec<Directive> = Vec::new();
    let mut used = FRAME_LEN + CONTINUATION_LEN;
    for (option, len) in options.iter().zip(lens) {
        let needed = FRAME_LEN + CONTINUATION_LEN + len + 1;
        if needed > max_message_len {
            return Err(PushError::LimitTooSmall {
                name: option.name.clone(),
                needed,
                limit: max_message_len,
            });
        }
        if used + len + 1 > max_message_len {
            current.push(continuation(2));
            messages.push(ControlMessage::PushReply {
                options: std::mem::take(&mut current),
            });
            used = FRAME_LEN + CONTINUATION_LEN;
        }
        current.push(option.clone());
        used += len + 1;
    }
    current.push(continuation(1));
    messages.push(ControlMessage::PushReply { options: current });
    Ok(messages)
}

impl PushConfig {
    /// The PUSH_REPLY messages for this configuration (see [`split_push_reply`]).
    pub fn to_messages(&self, max_message_len: usize) -> Result<Vec<ControlMessage>, PushError> {
        split_push_reply(&self.to_directives()?, max_message_len)
    }
}

/// Client side: collects the options of consecutive PUSH_REPLY messages until the one
/// without `push-continuation 2`, then applies them all.
#[derive(Debug, Default)]
pub struct PushReplyAssembler {
    options: Vec<Directive>,
    continued: bool,
}

impl PushReplyAssembler {
    /// A fresh assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a continued reply is waiting for more messages.
    pub fn in_progress(&self) -> bool {
        self.continued
    }

    /// Feeds the options of one PUSH_REPLY. Returns the configuration once complete
    /// (`push-continuation 1` or none), `None` after `push-continuation 2`. On error the
    /// collected options are dropped.
    pub fn push(&mut self, options: Vec<Directive>) -> Result<Option<PushConfig>, PushError> {
        let result = self.collect(options);
        self.continued = matches!(result, Ok(None));
        if !self.continued {
            self.options.clear();
        }
        result
    }

    fn collect(&mut self, options: Vec<Directive>) -> Result<Option<PushConfig>, PushError> {
        let mut more = None;
        for option in options {
            if option.name != CONTINUATION {
                if self.options.len() >= MAX_PUSH_OPTIONS {
                    return Err(PushError::TooManyOptions {
                        max: MAX_PUSH_OPTIONS,
                    });
                }
                self.options.push(option);
                continue;
            }
            let value = match option.args.as_slice() {
                [v] if v == "1" => false,
                [v] if v == "2" => true,
                _ => return Err(PushError::BadContinuation { found: option.args }),
            };
            if more.replace(value).is_some() {
                return Err(PushError::BadContinuation { found: option.args });
            }
        }
        if more == Some(true) {
            return Ok(None);
        }
        PushConfig::from_directives(std::mem::take(&mut self.options)).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::Route;
    use crate::push::message::ControlError;
    use crate::push::testing::{other_directive, push_config};
    use proptest::prelude::*;

    fn option(name: &str, arg_len: usize) -> Directive {
        Directive {
            name: name.to_owned(),
            args: vec!["a".repeat(arg_len)],
        }
    }

    fn wire(messages: &[ControlMessage]) -> Vec<Vec<u8>> {
        messages
            .iter()
            .map(|m| {
                let mut out = Vec::new();
                m.emit(&mut out).unwrap();
                out
            })
            .collect()
    }

    fn options_of(message: &ControlMessage) -> &[Directive] {
        match message {
            ControlMessage::PushReply { options } => options,
            other => panic!("not a PUSH_REPLY: {other:?}"),
        }
    }

    #[test]
    fn fits_exactly_in_one_message() {
        // "PUSH_REPLY" + 3 × ",x-? aaaaaaaaaa" + NUL = 10 + 45 + 1 = 56.
        let options = [option("x-a", 10), option("x-b", 10), option("x-c", 10)];
        let one = split_push_reply(&options, 56).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(options_of(&one[0]), options);
        assert_eq!(wire(&one)[0].len(), 56);
        // One byte less: continued messages carry 31 bytes of frame, so one option each.
        let three = split_push_reply(&options, 55).unwrap();
        assert_eq!(
            wire(&three),
            [
                b"PUSH_REPLY,x-a aaaaaaaaaa,push-continuation 2\0".to_vec(),
                b"PUSH_REPLY,x-b aaaaaaaaaa,push-continuation 2\0".to_vec(),
                b"PUSH_REPLY,x-c aaaaaaaaaa,push-continuation 1\0".to_vec(),
            ]
        );
    }

    #[test]
    fn continuation_parts_fill_up_to_the_limit() {
        // Each option costs 15 bytes; a continued message has 31 bytes of frame.
        let options: Vec<_> = ["x-a", "x-b", "x-c", "x-d", "x-e"]
            .iter()
            .map(|n| option(n, 10))
            .collect();
        let messages = split_push_reply(&options, 61).unwrap();
        let lens: Vec<_> = wire(&messages).iter().map(Vec::len).collect();
        assert_eq!(lens, [61, 61, 46]);
        let per_message: Vec<_> = messages.iter().map(|m| options_of(m).len()).collect();
        assert_eq!(per_message, [3, 3, 2]);
    }

    #[test]
    fn hundred_split_routes_at_bundle_size() {
        let routes = (0..100u8)
            .map(|i| Route::via_tunnel([10, i, 0, 0].into(), [255, 255, 0, 0].into()))
            .collect();
        let config = PushConfig {
            routes,
            ping: Some(10),
            ..PushConfig::default()
        };
        let messages = config.to_messages(PUSH_BUNDLE_SIZE).unwrap();
        assert_eq!(messages.len(), 3);
        let mut assembler = PushReplyAssembler::new();
        let mut result = None;
        for bytes in wire(&messages) {
            assert!(bytes.len() <= PUSH_BUNDLE_SIZE);
            let ControlMessage::PushReply { options } = ControlMessage::parse(&bytes).unwrap()
            else {
                panic!("not a PUSH_REPLY");
            };
            result = assembler.push(options).unwrap();
        }
        assert_eq!(result, Some(config));
    }

    #[test]
    fn empty_reply_is_bare_keyword() {
        let messages = split_push_reply(&[], PUSH_BUNDLE_SIZE).unwrap();
        assert_eq!(wire(&messages), [b"PUSH_REPLY\0".to_vec()]);
    }

    #[test]
    fn option_length_limit() {
        // "x-a " + 251 = 255 bytes: allowed; one more is not.
        assert!(split_push_reply(&[option("x-a", 251)], PUSH_BUNDLE_SIZE).is_ok());
        assert_eq!(
            split_push_reply(&[option("x-a", 252)], PUSH_BUNDLE_SIZE),
            Err(PushError::OptionTooLong {
                name: "x-a".into(),
                len: 256
            })
        );
    }

    #[test]
    fn limit_too_small_for_one_option() {
        let options = [option("x-a", 10), option("x-b", 30)];
        assert_eq!(
            split_push_reply(&options, 60),
            Err(PushError::LimitTooSmall {
                name: "x-b".into(),
                needed: 66,
                limit: 60
            })
        );
    }

    #[test]
    fn caller_continuation_is_refused() {
        let options = [Directive {
            name: CONTINUATION.into(),
            args: vec!["1".into()],
        }];
        assert!(split_push_reply(&options, PUSH_BUNDLE_SIZE).is_err());
    }

    #[test]
    fn assembler_rejects_bad_continuations() {
        let mut assembler = PushReplyAssembler::new();
        let bad = [
            vec![option("x-a", 1), continuation(3)],
            vec![continuation(2), continuation(2)],
            vec![Directive {
                name: CONTINUATION.into(),
                args: vec![],
            }],
        ];
        for options in bad {
            assert!(matches!(
                assembler.push(options),
                Err(PushError::BadContinuation { .. })
            ));
            assert!(!assembler.in_progress());
        }
    }

    #[test]
    fn assembler_state_across_messages() {
        let mut assembler = PushReplyAssembler::new();
        assert_eq!(assembler.push(vec![continuation(2)]), Ok(None));
        assert!(assembler.in_progress());
        let ping = Directive {
            name: "ping".into(),
            args: vec!["10".into()],
        };
        assert_eq!(
            assembler.push(vec![ping.clone(), continuation(2)]),
            Ok(None)
        );
        let done = assembler.push(vec![continuation(1)]).unwrap().unwrap();
        assert_eq!(done.ping, Some(10));
        assert!(!assembler.in_progress());
        let again = assembler.push(vec![ping]).unwrap().unwrap();
        assert_eq!(again.ping, Some(10));
        let error = assembler.push(vec![Directive {
            name: "ping".into(),
            args: vec![],
        }]);
        assert!(matches!(error, Err(PushError::InvalidOption { .. })));
    }

    #[test]
    fn assembler_bounds_the_option_count() {
        let mut assembler = PushReplyAssembler::new();
        let chunk: Vec<_> = (0..100).map(|_| option("x-a", 1)).collect();
        let mut result = Ok(None);
        for _ in 0..=MAX_PUSH_OPTIONS / 100 {
            let mut options = chunk.clone();
            options.push(continuation(2));
            result = assembler.push(options);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(
            result,
            Err(PushError::TooManyOptions {
                max: MAX_PUSH_OPTIONS
            })
        );
        assert!(!assembler.in_progress());
    }

    proptest! {
        #[test]
        fn split_then_assemble(config in push_config(), limit in 287usize..=2048) {
            let directives = config.to_directives().unwrap();
            let messages = config.to_messages(limit).unwrap();
            let wires = wire(&messages);
            let mut assembler = PushReplyAssembler::new();
            let mut rebuilt = Vec::new();
            let mut result = None;
            for (i, bytes) in wires.iter().enumerate() {
                prop_assert!(bytes.len() <= limit, "{} > {}", bytes.len(), limit);
                let parsed = ControlMessage::parse(bytes).unwrap();
                prop_assert_eq!(&parsed, &messages[i]);
                let options = options_of(&parsed).to_vec();
                let last = i + 1 == wires.len();
                if wires.len() > 1 {
                    let marker = continuation(if last { 1 } else { 2 });
                    prop_assert_eq!(options.last(), Some(&marker));
                    prop_assert_eq!(options.iter().filter(|d| d.name == CONTINUATION).count(), 1);
                    rebuilt.extend_from_slice(&options[..options.len() - 1]);
                } else {
                    rebuilt.extend_from_slice(&options);
                }
                result = assembler.push(options).unwrap();
                prop_assert_eq!(result.is_some(), last);
            }
            prop_assert_eq!(rebuilt, directives);
            prop_assert_eq!(result, Some(config));
        }

        #[test]
        fn split_many_small_options(
            options in proptest::collection::vec(other_directive(), 0..120),
            limit in 100usize..=1024,
        ) {
            match split_push_reply(&options, limit) {
                Ok(messages) => {
                    let mut rebuilt = Vec::new();
                    for bytes in wire(&messages) {
                        prop_assert!(bytes.len() <= limit);
                        let parsed = ControlMessage::parse(&bytes).unwrap();
                        rebuilt.extend(
                            options_of(&parsed).iter().filter(|d| d.name != CONTINUATION).cloned(),
                        );
                    }
                    prop_assert_eq!(rebuilt, options);
                }
                Err(PushError::LimitTooSmall { needed, .. }) => prop_assert!(needed > limit),
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn oversized_emit_is_caught_by_the_message_layer() {
        let options: Vec<_> = (0..10).map(|_| option("x-a", 250)).collect();
        let mut out = vec![1];
        let error = ControlMessage::PushReply { options }.emit(&mut out);
        assert!(matches!(error, Err(ControlError::TooLong { .. })));
        assert_eq!(out, [1]);
    }
}
