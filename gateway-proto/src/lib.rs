//! Sans-IO OpenVPN 2.6 protocol core: codecs, control-channel wrapping, key-method 2,
//! key derivation and the data channel. No sockets, clocks or threads: callers pass
//! bytes and `now` in and take bytes out. The reliability layer, TLS and the session
//! state machine build on these layers.

#![forbid(unsafe_code)]
// Nothing a peer sends may panic the gateway: no unwrap, expect, panic or unchecked
// indexing outside tests (the few fixed-size key splits say why they are safe).
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod cookie;
pub mod data;
pub mod framing;
pub mod key_method;
pub mod keys;
pub mod packet;
pub mod push;
pub mod reliable;
pub mod replay;
pub mod session;
pub mod static_key;
pub mod wrap;
