//! Everything carried as text after key-method 2: cipher negotiation, the PUSH_REPLY
//! (typed, built per client, split and reassembled), the other control messages, and the
//! keepalive timers the push sets up (protocol doc §10–§13).

mod auth;
mod config;
mod dns;
mod keepalive;
mod message;
mod ncp;
mod policy;
mod route;
mod split;
#[cfg(test)]
mod testing;

pub use auth::{Advance, AuthFailure, DynamicChallenge, InfoPayload};
pub use config::{MAX_PEER_ID, ProtocolFlags, PushConfig, PushError};
pub use dns::{DhcpOption, DnsAddress, DnsServer};
pub use keepalive::{Keepalive, KeepaliveAction};
pub use message::{
    ControlError, ControlMessage, MAX_CONTROL_MESSAGE_LEN, MAX_INFO_PRE_LEN, RestartFlags,
    take_message,
};
pub use ncp::{
    IV_NCP_CIPHERS, NcpError, NegotiatedCipher, OfferSource, client_offer, negotiate_cipher,
};
pub use policy::{AuthToken, KeepaliveSettings, PushPolicy, ServerFeatures, TunnelMode};
pub use route::{
    Ifconfig, IfconfigIpv6, RedirectGateway, Route, RouteGateway, RouteIpv6, Topology,
};
pub use split::{
    MAX_PUSH_OPTION_LEN, MAX_PUSH_OPTIONS, PUSH_BUNDLE_SIZE, PushReplyAssembler, split_push_reply,
};
