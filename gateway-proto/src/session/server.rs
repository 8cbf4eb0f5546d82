//! Server role: session creation (after the cookie check, or from a first reset), the
//! client's key-method 2 message, NCP, the application's accept/reject decision, and
//! the PUSH_REQUEST / EXIT messages.

use std::sync::Arc;
use std::time::Instant;

use super::common_name::subject_common_name;
use super::config::ServerConfig;
use super::core::{Life, RoleState, Session, random_fill, random_session_id};
use super::key_state::{KeyState, Phase};
use super::{AuthRequest, CloseReason, DropReason, Established, Event, Identity, UsageError};
use crate::cookie::CookieSession;
use crate::key_method::{
    ClientKeyMethod2, Framing, PeerInfo, ProtoFlags, ServerKeyMethod2, ServerKeySource,
    parse_option_list,
};
use crate::packet::{ControlPacket, ControlRepr, KeyId, Opcode, PeerId};
use crate::push::{
    AuthFailure, ControlMessage, Keepalive, NegotiatedCipher, PUSH_BUNDLE_SIZE, PushPolicy,
    negotiate_cipher, take_message,
};
use crate::reliable::Reliable;

/// Our key-method 2 options string (§7.1: the client's shape, ending in `tls-server`).
const SERVER_OPTIONS: &str = "V4,dev-type tun,link-mtu 1549,tun-mtu 1500,proto UDPv4,\
cipher AES-256-GCM,auth [null-digest],keysize 256,key-method 2,tls-server";

/// Why a server session could not be created from a client's packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The packet is not an acceptable session start (peer's fault): drop it.
    #[error("session start refused: {0}")]
    Dropped(#[from] DropReason),
    /// A client reset with the wrong opcode, key_id or msg-id.
    #[error("expected HARD_RESET_CLIENT_V2 with key_id 0 and msg-id 0, found {0}")]
    NotAReset(Opcode),
    /// Our failure (random source, configuration).
    #[error("session start failed: {0}")]
    Internal(CloseReason),
}

/// Where the application's authentication decision stands.
#[derive(Debug)]
pub(super) enum Auth {
    /// Waiting for the client's key-method 2 message.
    AwaitingClient,
    /// [`Event::AuthRequest`] emitted, no answer yet; PUSH_REQUESTs wait. `until` is the
    /// deadline of an announced AUTH_PENDING ([`Session::accept_pending`]).
    Pending {
        push_requested: bool,
        until: Option<Instant>,
    },
    /// Accepted with this policy.
    Accepted(Box<PushPolicy>),
    /// Rejected: answer PUSH_REQUEST with this.
    Rejected(AuthFailure),
}

/// Server-role state.
#[derive(Debug)]
pub(crate) struct ServerState {
    config: Arc<ServerConfig>,
    pub(super) auth: Auth,
    negotiated: Option<NegotiatedCipher>,
}

impl Session {
    /// A server session for a client whose third packet passed
    /// [`CookieKey::verify`](crate::cookie::CookieKey::verify) (UDP path): both resets
    /// count as exchanged, so reliability starts at msg-id 1 both ways and our replay-ids
    /// continue at `cookie.next_tx_replay_id`. `unix_time` must be the replay-time our
    /// reset was stamped with; `first_packet` is that third packet, still wrapped.
    pub fn server_from_cookie(
        config: Arc<ServerConfig>,
        now: Instant,
        unix_time: u32,
        cookie: &CookieSession,
        peer_id: PeerId,
        first_packet: &[u8],
    ) -> Result<Self, StartError> {
        let reliable = Reliable::with_next_ids(
            config.common.reliable,
            cookie.next_tx_message_id,
            cookie.next_rx_message_id,
        )
        .map_err(|e| StartError::Internal(CloseReason::Internal(e.to_string())))?;
        let mut session = Self::new_server(
            config,
            now,
            unix_time,
            cookie.session_id,
            cookie.peer_session_id,
            reliable,
            cookie.next_tx_replay_id,
            peer_id,
        )?;
        session.handle_datagram(now, first_packet)?;
        Ok(session)
    }

    /// A server session from a client's first HARD_RESET_CLIENT_V2 (still wrapped), for
    /// TCP, where the cookie handshake does not apply (the connection already proves the
    /// address), or for UDP without the cookie handshake. `unix_time` is our replay-time.
    pub fn server_from_reset(
        config: Arc<ServerConfig>,
        now: Instant,
        unix_time: u32,
        peer_id: PeerId,
        reset: &[u8],
    ) -> Result<Self, StartError> {
        let mut buf = vec![0u8; reset.len()];
        let unwrapped = config
            .common
            .wrap
            .unwrap(reset, &mut buf)
            .map_err(DropReason::from)?;
        buf.truncate(unwrapped.len);
        let packet = ControlPacket::new_checked(&buf[..]).map_err(DropReason::from)?;
        let repr = ControlRepr::parse(&packet);
        if repr.opcode != Opcode::ControlHardResetClientV2
            || repr.key_id != KeyId::ZERO
            || repr.message_id != Some(0)
        {
            return Err(StartError::NotAReset(repr.opcode));
        }
        let internal = |e: String| StartError::Internal(CloseReason::Internal(e));
        let mut reliable =
            Reliable::new(config.common.reliable).map_err(|e| internal(e.to_string()))?;
        reliable
            .queue_reset(Opcode::ControlHardResetServerV2, &[])
            .map_err(|e| internal(e.to_string()))?;
        let session_id = random_session_id().map_err(StartError::Internal)?;
        let mut session = Self::new_server(
            config,
            now,
            unix_time,
            session_id,
            repr.session_id,
            reliable,
            1,
            peer_id,
        )?;
        session.handle_datagram(now, reset)?;
        Ok(session)
    }

    #[allow(clippy::too_many_arguments)]
    fn new_server(
        config: Arc<ServerConfig>,
        now: Instant,
        unix_time: u32,
        session_id: crate::packet::SessionId,
        peer_session_id: crate::packet::SessionId,
        reliable: Reliable,
        next_tx_replay_id: u32,
        peer_id: PeerId,
    ) -> Result<Self, StartError> {
        let tls = new_server_tls(&config).map_err(StartError::Internal)?;
        let first_key = KeyState::new(KeyId::ZERO, reliable, tls, now);
        let common = config.common.clone();
        let role = RoleState::Server(Box::new(ServerState {
            config,
            auth: Auth::AwaitingClient,
            negotiated: None,
        }));
        Ok(Self::with_parts(
            role,
            common,
            session_id,
            Some(peer_session_id),
            first_key,
            now,
            unix_time,
            next_tx_replay_id,
            peer_id,
        ))
    }

    /// Server role: lets the client in with `policy` (what to push). The session becomes
    /// established ([`Event::Established`]) and answers PUSH_REQUEST from now on.
    pub fn accept(&mut self, now: Instant, mut policy: PushPolicy) -> Result<(), UsageError> {
        if self.life != Life::Open {
            return Err(UsageError::Closed);
        }
        let RoleState::Server(server) = &mut self.role else {
            return Err(UsageError::NoPendingAuth);
        };
        let Auth::Pending { push_requested, .. } = server.auth else {
            return Err(UsageError::NoPendingAuth);
        };
        policy.features = server.config.features;
        let keepalive = policy.keepalive.map(Keepalive::server).unwrap_or_default();
        server.auth = Auth::Accepted(Box::new(policy));
        let push_now =
            push_requested || has_flag(&self.identity.peer_info, ProtoFlags::REQUEST_PUSH);
        self.keepalive = keepalive;
        self.established = true;
        self.mark_alive(now);
        let first = self
            .keys
            .iter()
            .find(|k| k.active.is_some())
            .map(|k| k.key_id);
        self.send_key = first;
        let Some(keys) = first.and_then(|id| self.key_material(id)) else {
            self.finish(CloseReason::Internal("accepted without data keys".into()));
            return Ok(());
        };
        self.events
            .push_back(Event::Established(Box::new(Established {
                peer_id: if self.data_v2 {
                    self.peer_id
                } else {
                    PeerId::UNDEFINED
                },
                keys,
                identity: self.identity.clone(),
                push: None,
            })));
        if push_now && let Err(reason) = self.send_push_reply() {
            self.finish(reason);
        }
        Ok(())
    }

    /// Server role: refuses the client. AUTH_FAILED (`failure`) is sent now and the
    /// session closes a little later ([`super::AUTH_FAILED_LINGER`]).
    pub fn reject(&mut self, now: Instant, failure: AuthFailure) -> Result<(), UsageError> {
        if self.life != Life::Open {
            return Err(UsageError::Closed);
        }
        let RoleState::Server(server) = &mut self.role else {
            return Err(UsageError::NoPendingAuth);
        };
        if !matches!(server.auth, Auth::Pending { .. }) {
            return Err(UsageError::NoPendingAuth);
        }
        self.refuse(now, failure);
        Ok(())
    }

    pub(super) fn refuse(&mut self, now: Instant, failure: AuthFailure) {
        let reason = match &failure {
            AuthFailure::Plain { reason } => reason.clone().unwrap_or_default(),
            other => format!("{other:?}"),
        };
        if let RoleState::Server(server) = &mut self.role {
            server.auth = Auth::Rejected(failure.clone());
        }
        if let Err(reason) = self.send_message(&ControlMessage::AuthFailed(failure)) {
            self.finish(reason);
            return;
        }
        self.linger(now, CloseReason::AuthFailed(reason), false);
    }

    /// Index of the key that carries control messages: the sending key, else the newest
    /// one whose key-method 2 exchange is done.
    pub(crate) fn control_key_index(&self) -> Option<usize> {
        self.send_key
            .and_then(|id| self.key_index(id))
            .or_else(|| self.keys.iter().rposition(|k| k.phase == Phase::Exchanged))
    }

    /// Sends one text message as its own TLS record on the control key.
    pub(crate) fn send_message(&mut self, message: &ControlMessage) -> Result<(), CloseReason> {
        let mut out = Vec::new();
        message
            .emit(&mut out)
            .map_err(|e| CloseReason::Internal(e.to_string()))?;
        self.send_encoded(&out)
    }

    /// Sends one already emitted text message (NUL included) on the control key.
    pub(crate) fn send_encoded(&mut self, message: &[u8]) -> Result<(), CloseReason> {
        let index = self
            .control_key_index()
            .ok_or_else(|| CloseReason::Internal("no key to send a control message on".into()))?;
        self.key_at(index)?.write_plaintext(message)
    }

    fn send_push_reply(&mut self) -> Result<(), CloseReason> {
        let RoleState::Server(server) = &self.role else {
            return Ok(());
        };
        let (Auth::Accepted(policy), Some(negotiated)) = (&server.auth, server.negotiated) else {
            return Ok(());
        };
        let config = policy.reply_for(&self.identity.peer_info, negotiated, self.peer_id.get());
        let messages = config
            .to_messages(PUSH_BUNDLE_SIZE)
            .map_err(|e| CloseReason::Internal(format!("push reply: {e}")))?;
        for message in &messages {
            self.send_message(message)?;
        }
        Ok(())
    }

    pub(crate) fn server_on_plaintext(
        &mut self,
        index: usize,
        now: Instant,
    ) -> Result<(), CloseReason> {
        if self.key_at(index)?.phase == Phase::Negotiating {
            let key = self.key_at(index)?;
            let parsed = ClientKeyMethod2::parse(&key.plaintext)
                .map_err(|e| CloseReason::Protocol(format!("client key-method 2: {e}")))?;
            let Some(parsed) = parsed else {
                return Ok(());
            };
            key.plaintext.drain(..parsed.consumed);
            self.on_client_key_method(index, now, parsed.message)?;
        }
        loop {
            let key = self.key_at(index)?;
            let taken = take_message(&key.plaintext)
                .map_err(|e| CloseReason::Protocol(format!("control message: {e}")))?;
            let Some((text, consumed)) = taken else {
                return Ok(());
            };
            let message = ControlMessage::parse(text);
            key.plaintext.drain(..consumed);
            match message {
                Ok(ControlMessage::PushRequest) => self.on_push_request()?,
                Ok(ControlMessage::Exit) => {
                    self.finish(CloseReason::ClientExit);
                    return Ok(());
                }
                Ok(_) | Err(_) => {}
            }
        }
    }

    fn on_push_request(&mut self) -> Result<(), CloseReason> {
        let RoleState::Server(server) = &mut self.role else {
            return Ok(());
        };
        match &mut server.auth {
            Auth::AwaitingClient => Ok(()),
            Auth::Pending { push_requested, .. } => {
                *push_requested = true;
                Ok(())
            }
            Auth::Accepted(_) => self.send_push_reply(),
            Auth::Rejected(failure) => {
                let message = ControlMessage::AuthFailed(failure.clone());
                self.send_message(&message)
            }
        }
    }

    fn on_client_key_method(
        &mut self,
        index: usize,
        now: Instant,
        message: ClientKeyMethod2,
    ) -> Result<(), CloseReason> {
        let certificate = self
            .key_at(index)?
            .tls
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|cert| cert.to_vec());
        let common_name = certificate.as_deref().and_then(subject_common_name);
        let mut failed = false;
        let server_source = ServerKeySource::generate(&mut |buf| {
            failed |= random_fill(buf).is_err();
        });
        if failed {
            return Err(CloseReason::Internal("system random source failed".into()));
        }
        let reply = ServerKeyMethod2 {
            key_source: server_source.clone(),
            options: SERVER_OPTIONS.to_owned(),
            username: String::new(),
            password: String::new(),
            peer_info: String::new(),
        };
        let mut out = Vec::new();
        reply
            .emit(Framing::Stock, &mut out)
            .map_err(|e| CloseReason::Internal(e.to_string()))?;
        let key = self.key_at(index)?;
        key.client_source = Some(Box::new(message.key_source.clone()));
        key.server_source = Some(Box::new(server_source));
        key.phase = Phase::Exchanged;
        key.write_plaintext(&out)?;
        let RoleState::Server(server) = &mut self.role else {
            return Ok(());
        };
        if !matches!(server.auth, Auth::AwaitingClient) {
            if common_name != self.identity.common_name {
                return Err(CloseReason::Protocol(
                    "certificate common name changed in a renegotiation".into(),
                ));
            }
            return self.activate_key(index, now);
        }
        let peer_info = PeerInfo::parse(&message.peer_info)
            .map_err(|e| CloseReason::Protocol(format!("peer-info: {e}")))?;
        // The options string only matters for the `cipher` fallback; a malformed one is
        // treated as empty, as OpenVPN only warns about mismatches.
        let options = parse_option_list(&message.options).unwrap_or_default();
        let negotiated = negotiate_cipher(&server.config.ciphers, &peer_info, &options);
        self.exporter = server.config.features.uses_tls_ekm(&peer_info);
        self.data_v2 = has_flag(&peer_info, ProtoFlags::DATA_V2);
        self.identity = Identity {
            common_name,
            certificate,
            username: message.username,
            peer_info,
            options: message.options,
        };
        let negotiated = match negotiated {
            Ok(negotiated) => negotiated,
            Err(error) => {
                server.auth = Auth::Pending {
                    push_requested: false,
                    until: None,
                };
                let failure = AuthFailure::Plain {
                    reason: Some(format!("no common data cipher: {error}")),
                };
                self.refuse(now, failure);
                return Ok(());
            }
        };
        server.negotiated = Some(negotiated);
        server.auth = Auth::Pending {
            push_requested: false,
            until: None,
        };
        self.cipher = Some(negotiated.cipher);
        self.activate_key(index, now)?;
        self.events
            .push_back(Event::AuthRequest(Box::new(AuthRequest {
                identity: self.identity.clone(),
                password: message.password,
            })));
        Ok(())
    }
}

pub(crate) fn new_server_tls(config: &ServerConfig) -> Result<rustls::Connection, CloseReason> {
    rustls::ServerConnection::new(config.tls.clone())
        .map(rustls::Connection::Server)
        .map_err(|e| CloseReason::Internal(format!("TLS server: {e}")))
}

fn has_flag(peer: &PeerInfo, flag: u32) -> bool {
    peer.proto.is_some_and(|p| p.contains(flag))
}

impl ServerState {
    pub(crate) fn new_tls(&self) -> Result<rustls::Connection, CloseReason> {
        new_server_tls(&self.config)
    }
}
