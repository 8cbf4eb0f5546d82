//! Sans-IO OpenVPN 2.6 protocol core: codecs, control-channel wrapping, key-method 2,
//! key derivation and the data channel. No sockets, clocks or threads: callers pass
//! bytes and `now` in and take bytes out. The reliability layer, TLS and the session
//! state machine build on these layers.

#![forbid(unsafe_code)]

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
