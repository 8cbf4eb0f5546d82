//! Validated session settings for both roles: the TLS configurations built from CA roots,
//! CRLs and our certificate, the control-channel wrap, data ciphers, timers and features.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::data::Cipher;
use crate::key_method::ProtoFlags;
use crate::push::ServerFeatures;
use crate::reliable::{self, ReliableConfig};
use crate::replay::ReplayConfig;
use crate::wrap::Wrap;

/// Default `hand-window`: a key must become active this long after its reset.
pub const DEFAULT_HAND_WINDOW: Duration = Duration::from_secs(60);
/// Default lame-duck window: the previous key still decrypts this long after a new key
/// took over sending.
pub const DEFAULT_TRANSITION_WINDOW: Duration = Duration::from_secs(60);
/// Delay between a rejection (AUTH_FAILED) and the end of the session.
pub const AUTH_FAILED_LINGER: Duration = Duration::from_secs(2);
/// Interval of the client's PUSH_REQUEST retries.
pub const PUSH_REQUEST_INTERVAL: Duration = Duration::from_secs(5);
/// IV_PROTO of our client: DATA_V2, REQUEST_PUSH, TLS_KEY_EXPORT, CC_EXIT_NOTIFY.
pub const DEFAULT_CLIENT_PROTO_FLAGS: u32 = ProtoFlags::DATA_V2
    | ProtoFlags::REQUEST_PUSH
    | ProtoFlags::TLS_KEY_EXPORT
    | ProtoFlags::CC_EXIT_NOTIFY;

/// A configuration we cannot run with (our fault, never the peer's).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A CA certificate could not be added to the root store.
    #[error("CA certificate rejected: {0}")]
    CaCertificate(rustls::Error),
    /// No CA certificate was given.
    #[error("no CA certificate configured: expected at least one")]
    NoCaCertificates,
    /// The client-certificate verifier could not be built (e.g. a malformed CRL).
    #[error("client certificate verifier: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    /// rustls refused our certificate, key or protocol versions.
    #[error("TLS configuration: {0}")]
    Tls(rustls::Error),
    /// No data cipher configured.
    #[error("data-ciphers is empty: expected at least one cipher")]
    NoCiphers,
    /// The reliability layer settings are invalid.
    #[error("control channel: {0}")]
    Reliable(#[from] reliable::ReliableConfigError),
    /// A zero hand-window.
    #[error("hand-window is 0: expected at least 1 s")]
    ZeroHandWindow,
}

/// TLS protocol versions to offer or accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersions {
    /// TLS 1.2 and 1.3 (OpenVPN 2.6 default: `tls-version-min 1.2`).
    #[default]
    Tls12And13,
    /// TLS 1.2 only.
    Tls12Only,
    /// TLS 1.3 only.
    Tls13Only,
}

impl TlsVersions {
    fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static BOTH: [&rustls::SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static V12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
        static V13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            TlsVersions::Tls12And13 => &BOTH,
            TlsVersions::Tls12Only => &V12,
            TlsVersions::Tls13Only => &V13,
        }
    }
}

/// Renegotiation triggers (`reneg-sec`, `reneg-bytes`, `reneg-pkts`); 0 switches one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Renegotiation {
    /// Seconds after a key became active.
    pub seconds: u64,
    /// Data bytes sent plus received on a key.
    pub bytes: u64,
    /// Data packets sent plus received on a key.
    pub packets: u64,
}

/// Timers and control-channel settings common to both roles.
#[derive(Debug, Clone)]
pub struct Common {
    /// Control-channel protection (the client's and server's must match).
    pub wrap: Wrap,
    /// Reliability layer settings; compute the payload budget with
    /// [`reliable::payload_budget`] for the wrap in use.
    pub reliable: ReliableConfig,
    /// Replay window for wrapped control packets and data packets.
    pub replay: ReplayConfig,
    /// `hand-window`.
    pub hand_window: Duration,
    /// How long a replaced key still decrypts.
    pub transition_window: Duration,
    /// Renegotiation triggers.
    pub renegotiation: Renegotiation,
}

impl Common {
    /// Defaults for `wrap`: payload budget for `tls-mtu` 1250 over IPv6.
    pub fn new(wrap: Wrap) -> Result<Self, ConfigError> {
        let budget = reliable::payload_budget(
            reliable::DEFAULT_TLS_MTU,
            reliable::IPV6_UDP_OVERHEAD,
            wrap.overhead(),
        )?;
        Ok(Self {
            wrap,
            reliable: ReliableConfig {
                payload_budget: budget,
                ..ReliableConfig::default()
            },
            replay: ReplayConfig::default(),
            hand_window: DEFAULT_HAND_WINDOW,
            transition_window: DEFAULT_TRANSITION_WINDOW,
            renegotiation: Renegotiation::default(),
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.hand_window.is_zero() {
            return Err(ConfigError::ZeroHandWindow);
        }
        reliable::Reliable::new(self.reliable)?;
        Ok(())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn root_store(ca: &[CertificateDer<'static>]) -> Result<RootCertStore, ConfigError> {
    if ca.is_empty() {
        return Err(ConfigError::NoCaCertificates);
    }
    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots
            .add(cert.clone())
            .map_err(ConfigError::CaCertificate)?;
    }
    Ok(roots)
}

/// What a server needs to build sessions. Build once, share with `Arc`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub(crate) tls: Arc<rustls::ServerConfig>,
    /// Shared by every session (about 550 bytes with the wrap's keys).
    pub(crate) common: Arc<Common>,
    pub(crate) ciphers: Vec<Cipher>,
    pub(crate) features: ServerFeatures,
}

/// Inputs of [`ServerConfig::new`].
#[derive(Debug)]
pub struct ServerSettings {
    /// CA certificates client certificates must chain to.
    pub ca: Vec<CertificateDer<'static>>,
    /// Certificate revocation lists of those CAs.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// Refuse every client while a CRL is past its `nextUpdate` (OpenVPN's and AWS
    /// Client VPN's behaviour); false: an expired CRL still counts.
    pub enforce_crl_expiry: bool,
    /// Refuse client certificates without the extended key usage clientAuth (the
    /// common-name rules always hold; see [`super::identity_rules`]).
    pub require_client_eku: bool,
    /// Our certificate chain, leaf first.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// Our private key.
    pub key: PrivateKeyDer<'static>,
    /// TLS versions accepted.
    pub tls_versions: TlsVersions,
    /// `data-ciphers`, in preference order.
    pub ciphers: Vec<Cipher>,
    /// Features implemented and switched on.
    pub features: ServerFeatures,
    /// Wrap, timers and renegotiation.
    pub common: Common,
}

impl ServerConfig {
    /// Validates the settings and builds the TLS server configuration: a client
    /// certificate is required, verified against `ca` and `crls`, and held to the
    /// identity rules (one common name; clientAuth when `require_client_eku`); no
    /// session tickets or session cache (§6).
    pub fn new(settings: ServerSettings) -> Result<Self, ConfigError> {
        settings.common.validate()?;
        if settings.ciphers.is_empty() {
            return Err(ConfigError::NoCiphers);
        }
        let provider = provider();
        let roots = Arc::new(root_store(&settings.ca)?);
        let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .with_crls(settings.crls);
        if settings.enforce_crl_expiry {
            verifier = verifier.enforce_revocation_expiration();
        }
        let verifier = Arc::new(super::identity_rules::IdentityRules {
            inner: verifier.build()?,
            require_eku: settings.require_client_eku,
        });
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(settings.tls_versions.versions())
            .map_err(ConfigError::Tls)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(settings.cert_chain, settings.key)
            .map_err(ConfigError::Tls)?;
        tls.send_tls13_tickets = 0;
        tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(Self {
            tls: Arc::new(tls),
            common: Arc::new(settings.common),
            ciphers: settings.ciphers,
            features: settings.features,
        })
    }
}

/// What a client needs to connect.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) common: Arc<Common>,
    pub(crate) ciphers: Vec<Cipher>,
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) peer_info_extra: Vec<(String, String)>,
    pub(crate) proto_flags: u32,
}

/// Inputs of [`ClientConfig::new`].
#[derive(Debug)]
pub struct ClientSettings {
    /// CA certificates the server certificate must chain to (`<ca>`).
    pub ca: Vec<CertificateDer<'static>>,
    /// Our certificate chain, leaf first.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// Our private key.
    pub key: PrivateKeyDer<'static>,
    /// TLS versions offered.
    pub tls_versions: TlsVersions,
    /// `data-ciphers` offered in IV_CIPHERS.
    pub ciphers: Vec<Cipher>,
    /// `auth-user-pass` username (empty: none).
    pub username: String,
    /// `auth-user-pass` password (empty: none).
    pub password: String,
    /// Extra peer-info entries (e.g. `UV_*`).
    pub peer_info_extra: Vec<(String, String)>,
    /// IV_PROTO bits announced; [`DEFAULT_CLIENT_PROTO_FLAGS`] lists those implemented.
    pub proto_flags: u32,
    /// Wrap, timers and renegotiation.
    pub common: Common,
}

impl ClientConfig {
    /// Validates the settings and builds the TLS client configuration. The server
    /// certificate is checked as `remote-cert-tls server` without `verify-x509-name`:
    /// chain to `ca` and EKU serverAuth, no host name check (§6).
    pub fn new(settings: ClientSettings) -> Result<Self, ConfigError> {
        settings.common.validate()?;
        if settings.ciphers.is_empty() {
            return Err(ConfigError::NoCiphers);
        }
        let provider = provider();
        let verifier = RemoteCertTlsServer {
            roots: root_store(&settings.ca)?,
            algorithms: provider.signature_verification_algorithms,
        };
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(settings.tls_versions.versions())
            .map_err(ConfigError::Tls)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(settings.cert_chain, settings.key)
            .map_err(ConfigError::Tls)?;
        tls.resumption = rustls::client::Resumption::disabled();
        tls.enable_sni = false;
        Ok(Self {
            tls: Arc::new(tls),
            common: Arc::new(settings.common),
            ciphers: settings.ciphers,
            username: settings.username,
            password: settings.password,
            peer_info_extra: settings.peer_info_extra,
            proto_flags: settings.proto_flags,
        })
    }
}

/// `remote-cert-tls server` without a name check: the chain must verify against the
/// configured CA for the serverAuth usage; the host name is not compared (OpenVPN does
/// not, unless `verify-x509-name` is set).
#[derive(Debug)]
struct RemoteCertTlsServer {
    roots: RootCertStore,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for RemoteCertTlsServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
