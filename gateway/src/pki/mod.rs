//! A small PKI for people without their own, kept in one directory: a CA, the server
//! certificate, client certificates (a group as the OU attribute), the CRL and the
//! tls-crypt key — all in the forms stock OpenVPN clients and servers read.

use std::{
    fs,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use gateway_proto::{
    data::Cipher,
    keys::Role,
    session::{ClientConfig, ClientSettings, Common, DEFAULT_CLIENT_PROTO_FLAGS, TlsVersions},
    static_key::StaticKey,
    wrap::{TlsCrypt, Wrap},
};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    RevocationReason, RevokedCertParams, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

/// How long the CA, server and client certificates are valid by default.
pub const DEFAULT_CA_DAYS: u32 = 3650;
pub const DEFAULT_CERT_DAYS: u32 = 825;
/// How long a CRL is valid. AWS Client VPN refuses every client once its CRL expired;
/// so does OpenVPN: re-issue before then (`gateway pki crl`).
pub const CRL_DAYS: i64 = 180;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} already holds a PKI (index.toml); choose another directory")]
    Exists(PathBuf),
    #[error("{0} holds no PKI (no index.toml); create one with `gateway pki init`")]
    Missing(PathBuf),
    #[error("index {path}: {message}")]
    Index { path: PathBuf, message: String },
    #[error("name {0:?}: use 1 to 64 letters, digits, '.', '_' or '-'")]
    BadName(String),
    #[error("a certificate for {0:?} already exists")]
    Duplicate(String),
    #[error("no certificate named {0:?}")]
    Unknown(String),
    #[error("{0:?} is already revoked")]
    AlreadyRevoked(String),
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("random number generator failed")]
    Random,
}

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Server,
    Client,
}

/// One issued certificate as the index records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    pub name: String,
    pub kind: Kind,
    /// Serial number, hex.
    pub serial: String,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub revoked: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    crl_number: u64,
    #[serde(default)]
    cert: Vec<Issued>,
}

/// A PKI directory.
pub struct Pki {
    root: PathBuf,
}

impl Pki {
    /// Creates a CA named `ca_name`, a server certificate for `server_name`, a
    /// tls-crypt key and an empty CRL in `root` (created if needed; refused if it
    /// already holds a PKI).
    pub fn init(root: &Path, ca_name: &str, server_name: &str) -> Result<Self, PkiError> {
        check_name(server_name)?;
        if root.join("index.toml").exists() {
            return Err(PkiError::Exists(root.to_path_buf()));
        }
        fs::create_dir_all(root.join("clients")).map_err(io(root))?;
        let pki = Self {
            root: root.to_path_buf(),
        };
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name.push(DnType::CommonName, ca_name);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.serial_number = Some(random_serial()?);
        validity(&mut ca, DEFAULT_CA_DAYS);
        let ca_cert = ca.self_signed(&ca_key)?;
        write(&pki.ca_cert(), ca_cert.pem().as_bytes(), false)?;
        write(&pki.ca_key(), ca_key.serialize_pem().as_bytes(), true)?;

        let mut tls_crypt_error = None;
        let rng = SystemRandom::new();
        let key = gateway_proto::static_key::StaticKey::generate(&mut |buf| {
            if rng.fill(buf).is_err() {
                tls_crypt_error = Some(PkiError::Random);
            }
        });
        if let Some(e) = tls_crypt_error {
            return Err(e);
        }
        write(&pki.tls_crypt_key(), key.to_file_text().as_bytes(), true)?;

        let mut index = Index::default();
        let server = pki.issue(server_name, Kind::Server, None)?;
        index.cert.push(server);
        pki.write_crl(&mut index)?;
        pki.save(&index)?;
        Ok(pki)
    }

    /// Opens an existing PKI directory.
    pub fn open(root: &Path) -> Result<Self, PkiError> {
        if !root.join("index.toml").exists() {
            return Err(PkiError::Missing(root.to_path_buf()));
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Issues a client certificate with common name `name` and, when given, `group` as
    /// its OU attribute; writes `clients/NAME.pem` and `clients/NAME.key`. (One OU per
    /// certificate is what rcgen writes; further memberships belong in `[groups]`.)
    pub fn issue_client(&self, name: &str, group: Option<&str>) -> Result<Issued, PkiError> {
        check_name(name)?;
        let mut index = self.load()?;
        if index.cert.iter().any(|c| c.name == name) {
            return Err(PkiError::Duplicate(name.to_string()));
        }
        let issued = self.issue(name, Kind::Client, group)?;
        index.cert.push(issued.clone());
        self.save(&index)?;
        Ok(issued)
    }

    /// Revokes `name` and writes a new CRL.
    pub fn revoke(&self, name: &str) -> Result<(), PkiError> {
        let mut index = self.load()?;
        let cert = index
            .cert
            .iter_mut()
            .find(|c| c.name == name)
            .ok_or_else(|| PkiError::Unknown(name.to_string()))?;
        if cert.revoked {
            return Err(PkiError::AlreadyRevoked(name.to_string()));
        }
        cert.revoked = true;
        self.write_crl(&mut index)?;
        self.save(&index)
    }

    /// Writes a fresh CRL (new number, valid for [`CRL_DAYS`]).
    pub fn refresh_crl(&self) -> Result<(), PkiError> {
        let mut index = self.load()?;
        self.write_crl(&mut index)?;
        self.save(&index)
    }

    /// Every certificate issued, in order.
    pub fn list(&self) -> Result<Vec<Issued>, PkiError> {
        Ok(self.load()?.cert)
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.root.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.root.join("server.key")
    }
    pub fn crl(&self) -> PathBuf {
        self.root.join("crl.pem")
    }
    pub fn tls_crypt_key(&self) -> PathBuf {
        self.root.join("tc.key")
    }
    pub fn client_cert(&self, name: &str) -> PathBuf {
        self.root.join("clients").join(format!("{name}.pem"))
    }
    pub fn client_key(&self, name: &str) -> PathBuf {
        self.root.join("clients").join(format!("{name}.key"))
    }

    /// Our client role as client `name` of this PKI: its certificate and key, this
    /// PKI's tls-crypt key, offering `ciphers` (the in-memory harness, the load
    /// generator and the interop tests).
    pub fn client_role_config(
        &self,
        name: &str,
        ciphers: &[Cipher],
    ) -> anyhow::Result<ClientConfig> {
        ClientConfig::new(self.client_role_settings(name, ciphers)?)
            .map_err(|e| anyhow::anyhow!("client config: {e}"))
    }

    /// The settings [`Pki::client_role_config`] builds on, for a caller that changes
    /// some (an `auth-user-pass` username, say).
    pub fn client_role_settings(
        &self,
        name: &str,
        ciphers: &[Cipher],
    ) -> anyhow::Result<ClientSettings> {
        let key = StaticKey::parse(&fs::read_to_string(self.tls_crypt_key())?)
            .map_err(|e| anyhow::anyhow!("tls-crypt key: {e}"))?;
        let certs = |path: &Path| -> anyhow::Result<Vec<CertificateDer<'static>>> {
            Ok(CertificateDer::pem_file_iter(path)?.collect::<Result<_, _>>()?)
        };
        Ok(ClientSettings {
            ca: certs(&self.ca_cert())?,
            cert_chain: certs(&self.client_cert(name))?,
            key: PrivateKeyDer::from_pem_file(self.client_key(name))?,
            tls_versions: TlsVersions::default(),
            ciphers: ciphers.to_vec(),
            username: String::new(),
            password: String::new(),
            peer_info_extra: Vec::new(),
            proto_flags: DEFAULT_CLIENT_PROTO_FLAGS,
            common: Common::new(Wrap::TlsCrypt(TlsCrypt::new(&key, Role::Client)))
                .map_err(|e| anyhow::anyhow!("client settings: {e}"))?,
        })
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key = KeyPair::from_pem(&read(&self.ca_key())?)?;
        Ok(Issuer::from_ca_cert_pem(&read(&self.ca_cert())?, key)?)
    }

    /// Issues a client certificate that breaks one of the gateway's identity rules
    /// (tests of the rules; the gateway's own `issue_client` never makes one).
    #[cfg(any(test, feature = "testing"))]
    pub fn issue_flawed_client(&self, name: &str, flaw: Flaw) -> Result<Issued, PkiError> {
        self.issue_with(name, Kind::Client, None, |params| match flaw {
            Flaw::NoClientAuthUsage => params.extended_key_usages.clear(),
            Flaw::ServerUsageOnly => {
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]
            }
            Flaw::SecondCommonName(second) => params
                .distinguished_name
                .push(DnType::CustomDnType(vec![2, 5, 4, 3]), second),
        })
    }

    fn issue(&self, name: &str, kind: Kind, group: Option<&str>) -> Result<Issued, PkiError> {
        self.issue_with(name, kind, group, |_| {})
    }

    fn issue_with(
        &self,
        name: &str,
        kind: Kind,
        group: Option<&str>,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> Result<Issued, PkiError> {
        let issuer = self.issuer()?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let sans = match kind {
            Kind::Server => vec![name.to_string()],
            Kind::Client => Vec::new(),
        };
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, name);
        if let Some(g) = group {
            params
                .distinguished_name
                .push(DnType::OrganizationalUnitName, g);
        }
        // OpenVPN's `remote-cert-tls server|client` wants a key usage and the EKU.
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![match kind {
            Kind::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Kind::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        tweak(&mut params);
        let serial = random_serial()?;
        params.serial_number = Some(serial.clone());
        validity(&mut params, DEFAULT_CERT_DAYS);
        let cert = params.signed_by(&key, &issuer)?;
        let (cert_path, key_path) = match kind {
            Kind::Server => (self.server_cert(), self.server_key()),
            Kind::Client => (self.client_cert(name), self.client_key(name)),
        };
        write(&cert_path, cert.pem().as_bytes(), false)?;
        write(&key_path, key.serialize_pem().as_bytes(), true)?;
        Ok(Issued {
            name: name.to_string(),
            kind,
            serial: hex(serial.as_ref()),
            group: group.map(str::to_string),
            revoked: false,
        })
    }

    fn write_crl(&self, index: &mut Index) -> Result<(), PkiError> {
        let now = OffsetDateTime::now_utc();
        self.write_crl_dated(index, now, now + Duration::days(CRL_DAYS))
    }

    /// Writes a CRL that expired yesterday (tests of the expiry policy).
    #[cfg(test)]
    pub(crate) fn write_expired_crl(&self) -> Result<(), PkiError> {
        let mut index = self.load()?;
        let now = OffsetDateTime::now_utc();
        self.write_crl_dated(&mut index, now - Duration::days(2), now - Duration::days(1))?;
        self.save(&index)
    }

    fn write_crl_dated(
        &self,
        index: &mut Index,
        now: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<(), PkiError> {
        index.crl_number += 1;
        let revoked = index
            .cert
            .iter()
            .filter(|c| c.revoked)
            .map(|c| {
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from(unhex(&c.serial).ok_or_else(|| {
                        PkiError::Index {
                            path: self.root.join("index.toml"),
                            message: format!("serial {:?} of {:?} is not hex", c.serial, c.name),
                        }
                    })?),
                    revocation_time: now,
                    reason_code: Some(RevocationReason::Unspecified),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, PkiError>>()?;
        let crl = CertificateRevocationListParams {
            this_update: now,
            next_update,
            crl_number: SerialNumber::from(index.crl_number),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer()?)?;
        write(&self.crl(), crl.pem()?.as_bytes(), false)
    }

    fn load(&self) -> Result<Index, PkiError> {
        let path = self.root.join("index.toml");
        toml::from_str(&read(&path)?).map_err(|e| PkiError::Index {
            path,
            message: e.to_string(),
        })
    }

    fn save(&self, index: &Index) -> Result<(), PkiError> {
        let path = self.root.join("index.toml");
        let text = toml::to_string(index).map_err(|e| PkiError::Index {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write(&path, text.as_bytes(), false)
    }
}

/// How [`Pki::issue_flawed_client`] breaks the identity rules.
#[cfg(any(test, feature = "testing"))]
#[derive(Clone, Copy, Debug)]
pub enum Flaw {
    /// No extended key usage at all.
    NoClientAuthUsage,
    /// serverAuth only.
    ServerUsageOnly,
    /// A second subject common name, after the requested one.
    SecondCommonName(&'static str),
}

/// The subject's organizational units (OU) of a DER certificate, in order; empty when
/// it has none or does not parse.
pub fn organizational_units(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    cert.subject()
        .iter_organizational_unit()
        .filter_map(|ou| ou.as_str().ok().map(str::to_string))
        .collect()
}

/// Why a PEM text gave no common name (the file's fault).
#[derive(Debug, thiserror::Error)]
pub enum CommonNameError {
    #[error("not PEM: {0}")]
    NotPem(String),
    #[error("not a certificate: {0}")]
    NotCertificate(String),
    #[error("the certificate has no common name")]
    Missing,
    #[error("the common name is not text: {0}")]
    NotText(String),
    #[error("the certificate has {0} common names; exactly one is allowed")]
    Several(usize),
}

/// The subject common name of the first certificate in a PEM text: exactly one, as the
/// gateway requires of client certificates (`gateway_proto::session::check_client_identity`;
/// OpenVPN would take the last of several).
pub fn common_name(pem_text: &str) -> Result<String, CommonNameError> {
    use x509_parser::prelude::{FromDer, X509Certificate, parse_x509_pem};
    let (_, pem) =
        parse_x509_pem(pem_text.as_bytes()).map_err(|e| CommonNameError::NotPem(e.to_string()))?;
    let (_, cert) = X509Certificate::from_der(&pem.contents)
        .map_err(|e| CommonNameError::NotCertificate(e.to_string()))?;
    let names: Vec<_> = cert.subject().iter_common_name().collect();
    let cn = match names.as_slice() {
        [] => return Err(CommonNameError::Missing),
        [one] => one,
        several => return Err(CommonNameError::Several(several.len())),
    };
    cn.as_str()
        .map(str::to_string)
        .map_err(|e| CommonNameError::NotText(e.to_string()))
}

fn check_name(name: &str) -> Result<(), PkiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(PkiError::BadName(name.to_string()))
    }
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(days));
}

/// A random positive 16-byte serial number.
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from(bytes.to_vec()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(io(path))
}

/// Writes through a temporary file and a rename, so a crash never leaves half a file;
/// secrets are created readable by the owner only. The temporary file is always a new
/// one (`O_EXCL`, after removing a stale one), so it cannot be a file or link someone
/// else made readable, and a secret is never readable on its way in.
fn write(path: &Path, contents: &[u8], secret: bool) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&tmp)(e)),
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(contents).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// Writes a file that holds secrets (a client profile with its keys) as the PKI writes
/// its keys: readable by the owner only, through a fresh temporary file and a rename.
pub fn write_secret(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    write(path, contents, true)
}

#[cfg(test)]
mod tests;
