//! The sans-IO OpenVPN session (quinn-proto style): one [`Session`] per peer runs the
//! control channel (wrap, reliability, TLS, key-method 2, push, renegotiation) and the
//! data channel for both roles. Bytes and `now` go in; transmits, timers and events out.
//!
//! Driving a session: after [`Session::handle_datagram`], [`Session::handle_timeout`] or
//! any call that sends, take [`Session::poll_transmit`] until `None` and
//! [`Session::poll_event`] until `None`, then wake up at [`Session::poll_timeout`].
//!
//! Server sessions are created after the stateless cookie check
//! ([`Session::server_from_cookie`], the UDP path) or from a client's first reset
//! ([`Session::server_from_reset`], for TCP or when the cookie handshake is off). Every
//! client is then authenticated by the application: the session emits
//! [`Event::AuthRequest`] once the client's certificate verified and its key-method 2
//! message arrived, and the application answers with [`Session::accept`] (giving the
//! client's [`PushPolicy`](crate::push::PushPolicy)) or [`Session::reject`], possibly
//! after [`Session::accept_pending`] while an out-of-band check runs. A server ends a
//! session with [`Session::close`] (silently), [`Session::restart`] or [`Session::halt`].
//!
//! Transport: one OpenVPN packet per datagram. Over TCP the caller frames and deframes
//! with [`crate::framing`].

mod client;
mod common_name;
mod config;
mod core;
mod data_channel;
mod identity_rules;
mod key_state;
mod rekey;
mod server;
mod server_control;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use common_name::subject_common_name;
pub use config::{
    AUTH_FAILED_LINGER, ClientConfig, ClientSettings, Common, ConfigError,
    DEFAULT_CLIENT_PROTO_FLAGS, DEFAULT_HAND_WINDOW, DEFAULT_TRANSITION_WINDOW,
    PUSH_REQUEST_INTERVAL, Renegotiation, ServerConfig, ServerSettings, TlsVersions,
};
pub use core::{Session, Transmit};
pub use identity_rules::{IdentityError, check_client_identity};
pub use server::StartError;
pub use server_control::PENDING_TIMEOUT_REASON;

use crate::data::{Cipher, DataError};
use crate::key_method::PeerInfo;
use crate::keys::DataChannelKeys;
use crate::packet::{KeyId, PacketError, PeerId};
use crate::push::{ControlError, InfoPayload, PushConfig};
use crate::reliable::ReceiveError;
use crate::replay::ReplayError;
use crate::wrap::WrapError;

/// Who the peer is, as far as this session knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Subject CN of the peer's verified certificate.
    pub common_name: Option<String>,
    /// The peer's verified certificate (DER), for attributes beyond the CN (server
    /// role), such as the OUs some deployments put groups in.
    pub certificate: Option<Vec<u8>>,
    /// Username from key-method 2 (server role; empty without `auth-user-pass`).
    pub username: String,
    /// The client's peer-info (server role).
    pub peer_info: PeerInfo,
    /// The peer's options string.
    pub options: String,
}

/// Key material of one key_id for the data plane. Whoever builds a sealing key from it
/// must be the only sender on that key_id (packet-ids must never repeat): once the data
/// plane takes over, stop calling [`Session::send_data`].
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial {
    /// The key_id the keys belong to.
    pub key_id: KeyId,
    /// The data cipher.
    pub cipher: Cipher,
    /// Both directions, already split for our role.
    pub keys: DataChannelKeys,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("key_id", &self.key_id)
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

/// A client waiting to be authenticated (server role). `Debug` does not print the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthRequest {
    /// Certificate CN, username, peer-info and options.
    pub identity: Identity,
    /// The password (or auth-token, `SCRV1:`/`CRV1:` response, SAML assertion).
    pub password: String,
}

impl std::fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthRequest")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Data-plane parameters once a session is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Established {
    /// The peer-id on P_DATA_V2 (`PeerId::UNDEFINED` when P_DATA_V1 is used).
    pub peer_id: PeerId,
    /// Keys of the first key_id.
    pub keys: KeyMaterial,
    /// The peer.
    pub identity: Identity,
    /// Client role: the configuration the server pushed.
    pub push: Option<PushConfig>,
}

/// Something the application should know or act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Server role: decide with [`Session::accept`] or [`Session::reject`] (or first
    /// [`Session::accept_pending`]).
    AuthRequest(Box<AuthRequest>),
    /// Client role: the server announced AUTH_PENDING (authentication continues out of
    /// band, e.g. in a browser); the session keeps waiting for PUSH_REPLY or AUTH_FAILED.
    /// An INFO_PRE that follows fills in `info` of the event not yet polled, else it is
    /// reported as another `AuthPending` with the last known timeout.
    AuthPending {
        /// How long the server will wait (only if it sent `timeout N`).
        timeout: Option<Duration>,
        /// The INFO_PRE detail (web-auth URL, challenge text), if any.
        info: Option<InfoPayload>,
    },
    /// The data channel is up.
    Established(Box<Established>),
    /// A renegotiated key now carries our sends; the previous one still decrypts for the
    /// transition window.
    Rekeyed(Box<KeyMaterial>),
    /// A tunnelled packet arrived (pings and OCC messages are handled inside).
    Packet(Vec<u8>),
    /// The session ended; nothing more will be sent or accepted.
    Closed {
        /// Why.
        reason: CloseReason,
    },
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Server role: the client announced its exit (EXIT message or OCC_EXIT).
    ClientExit,
    /// We called [`Session::close`].
    LocalExit,
    /// No authenticated packet within the keepalive timeout (`ping-restart`).
    Timeout,
    /// A key was not negotiated within `hand-window`.
    HandshakeTimeout,
    /// TLS failed: a certificate was refused (by us or, as an alert, by the peer).
    Tls(String),
    /// Server role: the application rejected the client, or NCP found no cipher.
    /// Client role: the server sent AUTH_FAILED.
    AuthFailed(String),
    /// The server told the client to reconnect (RESTART), with the message it gave.
    /// Client role: it arrived; server role: we sent it with [`Session::restart`].
    ServerRestart(String),
    /// The server told the client to stop for good (HALT), with the message it gave.
    /// Client role: it arrived; server role: we sent it with [`Session::halt`].
    ServerHalt(String),
    /// The peer broke the protocol (bad key-method 2, bad push, changed identity …).
    Protocol(String),
    /// Our own failure (configuration or resource), not the peer's.
    Internal(String),
}

impl std::fmt::Display for CloseReason {
    /// What happened, for logs and connection lists.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::ClientExit => f.write_str("the client exited"),
            CloseReason::LocalExit => f.write_str("closed locally"),
            CloseReason::Timeout => f.write_str("keepalive timeout: no packet within ping-restart"),
            CloseReason::HandshakeTimeout => {
                f.write_str("handshake timeout: no key within hand-window")
            }
            CloseReason::Tls(e) => write!(f, "TLS failed: {e}"),
            CloseReason::AuthFailed(e) => write!(f, "authentication failed: {e}"),
            CloseReason::ServerRestart(m) => write!(f, "server restart: {m}"),
            CloseReason::ServerHalt(m) => write!(f, "server halt: {m}"),
            CloseReason::Protocol(e) => write!(f, "protocol violation: {e}"),
            CloseReason::Internal(e) => write!(f, "internal error: {e}"),
        }
    }
}

/// What a datagram taken by [`Session::handle_datagram`] was. Only
/// [`Accepted::AuthenticatedData`] may move a server session to the datagram's source
/// address (float, protocol doc §11): control packets and P_DATA_V1 never do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A P_DATA_V2 packet with this session's peer-id whose AEAD tag verified on a
    /// current or lame-duck key and that passed the replay check.
    AuthenticatedData,
    /// A P_DATA_V1 packet that opened on one of our keys: authenticated, but it carries
    /// no peer-id.
    DataV1,
    /// A control packet (checked by tls-auth/tls-crypt when configured).
    Control,
}

impl Accepted {
    /// True for a P_DATA_V2 packet that authenticated: the only ground for a float.
    pub fn allows_float(self) -> bool {
        self == Accepted::AuthenticatedData
    }
}

/// Why a received packet was dropped; all are the peer's (or the path's) doing, the
/// session is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// Malformed packet.
    #[error("malformed packet: {0}")]
    Packet(#[from] PacketError),
    /// tls-auth/tls-crypt check failed.
    #[error("control packet authentication: {0}")]
    Wrap(#[from] WrapError),
    /// Replayed or too old.
    #[error("replay: {0}")]
    Replay(#[from] ReplayError),
    /// Refused by the reliability layer.
    #[error("reliability layer: {0}")]
    Reliable(#[from] ReceiveError),
    /// Data packet failed to open.
    #[error("data packet: {0}")]
    Data(#[from] DataError),
    /// The sender's or echoed session id is not this session's.
    #[error("session id mismatch")]
    SessionId,
    /// No key with this key_id (or a soft reset we cannot accept now).
    #[error("no usable key with key_id {0}")]
    KeyId(KeyId),
    /// A data packet for another peer-id.
    #[error("data packet for peer-id {found}, expected {expected}")]
    PeerId {
        /// Peer-id on the packet.
        found: PeerId,
        /// Ours.
        expected: PeerId,
    },
    /// Data before the session is established.
    #[error("data packet before the session is established")]
    NotEstablished,
    /// The session is closed.
    #[error("session closed")]
    Closed,
}

/// Misuse of the session API (our fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// No data keys to send with yet.
    #[error("session not established")]
    NotEstablished,
    /// accept/accept_pending/reject without a pending AuthRequest, or on a client session.
    #[error("no authentication pending")]
    NoPendingAuth,
    /// A server-only call (restart, halt, accept_pending) on a client session.
    #[error("only a server session can do this")]
    NotServer,
    /// The text message cannot be sent as given (a NUL, too long, …).
    #[error("control message: {0}")]
    Message(#[from] ControlError),
    /// The session is closed.
    #[error("session closed")]
    Closed,
    /// Sealing failed (e.g. packet-id space exhausted).
    #[error("data packet: {0}")]
    Data(#[from] DataError),
}
