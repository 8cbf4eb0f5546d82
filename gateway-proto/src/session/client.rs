//! Client role (tests and the load generator): hard reset, key-method 2 with our
//! peer-info, PUSH_REQUEST until the PUSH_REPLY is complete, applying the push (cipher,
//! peer-id, key derivation, keepalive), AUTH_PENDING/INFO_PRE, AUTH_FAILED/RESTART/HALT,
//! and the exit notice.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use super::common_name::subject_common_name;
use super::config::{ClientConfig, PUSH_REQUEST_INTERVAL};
use super::core::{Life, RoleState, Session, key_slot, random_fill, random_session_id};
use super::key_state::{KeyState, Phase};
use super::{CloseReason, Established, Event};
use crate::key_method::{
    ClientKeyMethod2, ClientKeySource, Framing, PeerInfo, ProtoFlags, ServerKeyMethod2,
};
use crate::packet::{KeyId, Opcode, PeerId};
use crate::push::{
    ControlMessage, InfoPayload, Keepalive, PushConfig, PushReplyAssembler, take_message,
};
use crate::reliable::Reliable;

/// IV_VER we announce: a 2.6 client.
const CLIENT_VERSION: &str = "2.6.14";
/// Our key-method 2 options string (§7.1).
const CLIENT_OPTIONS: &str = "V4,dev-type tun,link-mtu 1549,tun-mtu 1500,proto UDPv4,\
cipher AES-256-GCM,auth [null-digest],keysize 256,key-method 2,tls-client";
/// How long past an announced AUTH_PENDING timeout we still wait, so that the server's
/// AUTH_FAILED at the end of it arrives before our hand-window runs out.
const AUTH_PENDING_GRACE: Duration = Duration::from_secs(5);
/// Server name handed to rustls; never sent (SNI off) nor checked (see the verifier).
const SERVER_NAME: &str = "openvpn-server";

/// Client-role state.
#[derive(Debug)]
pub(crate) struct ClientState {
    config: Arc<ClientConfig>,
    assembler: PushReplyAssembler,
    push_request_next: Option<Instant>,
    cc_exit: bool,
    /// The timeout of the last AUTH_PENDING, for a later INFO_PRE's event.
    pending_timeout: Option<Duration>,
}

impl Session {
    /// A client session: queues HARD_RESET_CLIENT_V2; poll transmits to start. `unix_time`
    /// is our replay-time for wrapped control packets.
    pub fn client(
        config: Arc<ClientConfig>,
        now: Instant,
        unix_time: u32,
    ) -> Result<Self, CloseReason> {
        let mut reliable = Reliable::new(config.common.reliable)
            .map_err(|e| CloseReason::Internal(e.to_string()))?;
        reliable
            .queue_reset(Opcode::ControlHardResetClientV2, &[])
            .map_err(|e| CloseReason::Internal(e.to_string()))?;
        let tls = new_client_tls(&config)?;
        let first_key = KeyState::new(KeyId::ZERO, reliable, tls, now);
        let common = config.common.clone();
        let role = RoleState::Client(Box::new(ClientState {
            config,
            assembler: PushReplyAssembler::new(),
            push_request_next: None,
            cc_exit: false,
            pending_timeout: None,
        }));
        let session_id = random_session_id()?;
        let mut session = Self::with_parts(
            role,
            common,
            session_id,
            None,
            first_key,
            now,
            unix_time,
            1,
            PeerId::UNDEFINED,
        );
        session.client_key_created(0)?;
        Ok(session)
    }

    /// Leaves: a client announces its exit (EXIT with cc-exit, else OCC_EXIT data
    /// packets) and closes shortly after with [`CloseReason::LocalExit`]; a server
    /// closes at once.
    pub fn close(&mut self, now: Instant) {
        if self.life != Life::Open {
            return;
        }
        let cc_exit = match &self.role {
            RoleState::Client(client) if self.established => client.cc_exit,
            _ => {
                self.finish(CloseReason::LocalExit);
                return;
            }
        };
        if cc_exit {
            if let Err(reason) = self.send_message(&ControlMessage::Exit) {
                self.finish(reason);
                return;
            }
        } else {
            self.send_occ_exit(now);
        }
        self.linger(now, CloseReason::LocalExit, !cc_exit);
    }

    /// Writes our key-method 2 message into a new key's TLS connection; rustls holds it
    /// until the handshake completes.
    pub(crate) fn client_key_created(&mut self, index: usize) -> Result<(), CloseReason> {
        let RoleState::Client(client) = &self.role else {
            return Ok(());
        };
        let config = &client.config;
        let mut failed = false;
        let source = ClientKeySource::generate(&mut |buf| {
            failed |= random_fill(buf).is_err();
        });
        if failed {
            return Err(CloseReason::Internal("system random source failed".into()));
        }
        let ciphers: Vec<&str> = config.ciphers.iter().map(|c| c.name()).collect();
        let mut peer_info = PeerInfo {
            version: Some(CLIENT_VERSION.to_owned()),
            platform: Some("linux".to_owned()),
            proto: Some(ProtoFlags(config.proto_flags)),
            ciphers: Some(ciphers.iter().map(|c| (*c).to_owned()).collect()),
            ncp: Some(2),
            mtu: Some(1600),
            ..PeerInfo::default()
        };
        peer_info
            .other
            .push(("IV_TCPNL".to_owned(), "1".to_owned()));
        peer_info
            .other
            .extend(config.peer_info_extra.iter().cloned());
        let message = ClientKeyMethod2 {
            key_source: source.clone(),
            options: CLIENT_OPTIONS.to_owned(),
            username: config.username.clone(),
            password: config.password.clone(),
            peer_info: peer_info.to_text(),
        };
        let mut out = Vec::new();
        message
            .emit(Framing::Stock, &mut out)
            .map_err(|e| CloseReason::Internal(format!("key-method 2: {e}")))?;
        let key = self
            .keys
            .get_mut(index)
            .ok_or_else(|| CloseReason::Internal("key state vanished".into()))?;
        key.client_source = Some(Box::new(source));
        key.tls
            .writer()
            .write_all(&out)
            .map_err(|e| CloseReason::Internal(e.to_string()))
    }

    pub(crate) fn client_on_plaintext(
        &mut self,
        index: usize,
        now: Instant,
    ) -> Result<(), CloseReason> {
        if self.key_at(index)?.phase == Phase::Negotiating {
            let key = key_slot(&mut self.keys, index)?;
            let parsed = ServerKeyMethod2::parse(&key.plaintext)
                .map_err(|e| CloseReason::Protocol(format!("server key-method 2: {e}")))?;
            let Some(parsed) = parsed else {
                return Ok(());
            };
            key.plaintext.drain(..parsed.consumed);
            key.server_source = Some(Box::new(parsed.message.key_source));
            key.phase = Phase::Exchanged;
            let common_name = key
                .tls
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|cert| subject_common_name(cert));
            if self.established {
                let key_id = key.key_id;
                self.activate_key(index, now)?;
                self.promote(key_id, now);
            } else {
                self.identity.common_name = common_name;
                self.identity.options = parsed.message.options;
                self.send_message(&ControlMessage::PushRequest)?;
                if let RoleState::Client(client) = &mut self.role {
                    client.push_request_next = Some(now + PUSH_REQUEST_INTERVAL);
                }
            }
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
                Ok(ControlMessage::PushReply { options }) => {
                    let RoleState::Client(client) = &mut self.role else {
                        return Ok(());
                    };
                    let complete = client
                        .assembler
                        .push(options)
                        .map_err(|e| CloseReason::Protocol(format!("PUSH_REPLY: {e}")))?;
                    if let Some(push) = complete {
                        self.apply_push(index, now, push)?;
                    }
                }
                Ok(ControlMessage::AuthFailed(failure)) => {
                    self.finish(CloseReason::AuthFailed(format!("{failure:?}")));
                    return Ok(());
                }
                Ok(ControlMessage::Restart { message, .. }) => {
                    self.finish(CloseReason::ServerRestart(message));
                    return Ok(());
                }
                Ok(ControlMessage::Halt { message }) => {
                    self.finish(CloseReason::ServerHalt(message));
                    return Ok(());
                }
                Ok(ControlMessage::AuthPending { timeout }) => self.on_auth_pending(now, timeout),
                Ok(ControlMessage::InfoPre(info)) => self.on_info_pre(info),
                Ok(_) | Err(_) => {}
            }
        }
    }

    fn apply_push(
        &mut self,
        index: usize,
        now: Instant,
        push: PushConfig,
    ) -> Result<(), CloseReason> {
        if self.established {
            return Ok(());
        }
        let RoleState::Client(client) = &mut self.role else {
            return Ok(());
        };
        let flags = push.protocol_flags.unwrap_or_default();
        client.cc_exit = flags.cc_exit;
        client.push_request_next = None;
        let first_cipher = client.config.ciphers.first().copied();
        self.cipher = push.cipher.or(first_cipher);
        self.exporter = flags.tls_ekm || push.key_derivation_tls_ekm;
        match push.peer_id.map(PeerId::new) {
            Some(Ok(peer_id)) => {
                self.peer_id = peer_id;
                self.data_v2 = true;
            }
            Some(Err(e)) => return Err(CloseReason::Protocol(format!("pushed peer-id: {e}"))),
            None => self.data_v2 = false,
        }
        self.keepalive = Keepalive::client(&push);
        self.activate_key(index, now)?;
        let key_id = self.key_at(index)?.key_id;
        self.send_key = Some(key_id);
        self.established = true;
        self.mark_alive(now);
        let keys = self
            .key_material(key_id)
            .ok_or_else(|| CloseReason::Internal("no data keys after push".into()))?;
        self.events
            .push_back(Event::Established(Box::new(Established {
                peer_id: if self.data_v2 {
                    self.peer_id
                } else {
                    PeerId::UNDEFINED
                },
                keys,
                identity: self.identity.clone(),
                push: Some(push),
            })));
        Ok(())
    }

    /// AUTH_PENDING: report it and, with a timeout, keep waiting for the push that long.
    fn on_auth_pending(&mut self, now: Instant, timeout: Option<u32>) {
        let RoleState::Client(client) = &mut self.role else {
            return;
        };
        if self.established {
            return;
        }
        let timeout = timeout.map(|secs| Duration::from_secs(u64::from(secs)));
        client.pending_timeout = timeout;
        if let Some(timeout) = timeout {
            self.pending_until = now.checked_add(timeout + AUTH_PENDING_GRACE);
        }
        self.events.push_back(Event::AuthPending {
            timeout,
            info: None,
        });
    }

    /// INFO_PRE: the detail of a pending authentication.
    fn on_info_pre(&mut self, info: InfoPayload) {
        let RoleState::Client(client) = &self.role else {
            return;
        };
        if self.established {
            return;
        }
        if let Some(Event::AuthPending { info: slot, .. }) = self.events.back_mut()
            && slot.is_none()
        {
            *slot = Some(info);
            return;
        }
        self.events.push_back(Event::AuthPending {
            timeout: client.pending_timeout,
            info: Some(info),
        });
    }

    pub(crate) fn client_timeout(&self) -> Option<Instant> {
        match &self.role {
            RoleState::Client(client) if !self.established => client.push_request_next,
            _ => None,
        }
    }

    pub(crate) fn client_handle_timeout(&mut self, now: Instant) {
        let RoleState::Client(client) = &mut self.role else {
            return;
        };
        if self.established || client.push_request_next.is_none_or(|at| now < at) {
            return;
        }
        client.push_request_next = Some(now + PUSH_REQUEST_INTERVAL);
        if let Err(reason) = self.send_message(&ControlMessage::PushRequest) {
            self.finish(reason);
        }
    }
}

pub(crate) fn new_client_tls(config: &ClientConfig) -> Result<rustls::Connection, CloseReason> {
    let name = ServerName::try_from(SERVER_NAME)
        .map_err(|e| CloseReason::Internal(format!("server name: {e}")))?;
    rustls::ClientConnection::new(config.tls.clone(), name)
        .map(rustls::Connection::Client)
        .map_err(|e| CloseReason::Internal(format!("TLS client: {e}")))
}

impl ClientState {
    pub(crate) fn new_tls(&self) -> Result<rustls::Connection, CloseReason> {
        new_client_tls(&self.config)
    }
}
