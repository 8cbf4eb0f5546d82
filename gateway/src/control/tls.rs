//! Reads the PKI files the configuration names into what the TLS layer takes, checking
//! each (PEM parses, the key matches the certificate, the tls-crypt key is valid); every
//! error names the `tls.*` key.

use std::path::Path;

use gateway_proto::static_key::StaticKey;
use rustls::{crypto::ring::sign::any_supported_type, sign::CertifiedKey};
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, pem::PemObject,
};

use crate::config::{ConfigError, Tls};

/// The TLS material of the gateway, parsed and checked.
#[derive(Debug)]
pub struct TlsMaterial {
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub client_ca: Vec<CertificateDer<'static>>,
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    pub tls_crypt_key: Option<StaticKey>,
    /// tls-auth key and digest, when configured instead of tls-crypt.
    pub tls_auth: Option<(StaticKey, crate::config::AuthDigest)>,
}

fn problem(key: &str, path: &Path, message: impl std::fmt::Display) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        message: format!("{}: {message}", path.display()),
    }
}

fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| problem(key, path, e))?;
    if certs.is_empty() {
        return Err(problem(key, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The CRLs in the PEM file `path` (at least one), for `tls.crl`.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, ConfigError> {
    let crls = CertificateRevocationListDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| problem("tls.crl", path, e))?;
    if crls.is_empty() {
        return Err(problem("tls.crl", path, "holds no PEM CRL"));
    }
    Ok(crls)
}

impl TlsMaterial {
    /// The same material with other CRLs (a reload re-reads `tls.crl` only).
    pub fn with_crls(&self, crls: Vec<CertificateRevocationListDer<'static>>) -> Self {
        Self {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
            client_ca: self.client_ca.clone(),
            crls,
            tls_crypt_key: self.tls_crypt_key.clone(),
            tls_auth: self.tls_auth.clone(),
        }
    }
}

/// Loads everything `tls` names; all problems are returned together.
pub fn load(tls: &Tls) -> Result<TlsMaterial, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let cert_chain = certificates("tls.server_cert", &tls.server_cert)
        .map_err(|e| errors.push(e))
        .ok();
    let key = PrivateKeyDer::from_pem_file(&tls.server_key)
        .map_err(|e| errors.push(problem("tls.server_key", &tls.server_key, e)))
        .ok();
    if let (Some(chain), Some(key)) = (&cert_chain, &key) {
        match any_supported_type(key) {
            Ok(signing) => {
                if let Err(e) = CertifiedKey::new(chain.clone(), signing).keys_match() {
                    errors.push(problem(
                        "tls.server_key",
                        &tls.server_key,
                        format!("does not belong to tls.server_cert ({e})"),
                    ));
                }
            }
            Err(e) => errors.push(problem(
                "tls.server_key",
                &tls.server_key,
                format!("unusable key: {e}"),
            )),
        }
    }
    let client_ca = certificates("tls.client_ca", &tls.client_ca)
        .map_err(|e| errors.push(e))
        .ok();
    let crls = match &tls.crl {
        Some(path) => load_crls(path).map_err(|e| errors.push(e)).ok(),
        None => Some(Vec::new()),
    };
    let tls_crypt_key = match &tls.tls_crypt_key {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| errors.push(problem("tls.tls_crypt_key", path, e)))
            .ok()
            .and_then(|text| {
                StaticKey::parse(&text)
                    .map_err(|e| errors.push(problem("tls.tls_crypt_key", path, e)))
                    .ok()
            })
            .map(Some),
        None => Some(None),
    };
    let tls_auth = match &tls.tls_auth {
        Some((path, digest)) => std::fs::read_to_string(path)
            .map_err(|e| errors.push(problem("tls.tls_auth_key", path, e)))
            .ok()
            .and_then(|text| {
                StaticKey::parse(&text)
                    .map_err(|e| errors.push(problem("tls.tls_auth_key", path, e)))
                    .ok()
            })
            .map(|key| Some((key, *digest))),
        None => Some(None),
    };
    match (cert_chain, key, client_ca, crls, tls_crypt_key, tls_auth) {
        (
            Some(cert_chain),
            Some(key),
            Some(client_ca),
            Some(crls),
            Some(tls_crypt_key),
            Some(tls_auth),
        ) if errors.is_empty() => Ok(TlsMaterial {
            cert_chain,
            key,
            client_ca,
            crls,
            tls_crypt_key,
            tls_auth,
        }),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Pki;

    fn tls(pki: &Pki) -> Tls {
        Tls {
            server_cert: pki.server_cert(),
            server_key: pki.server_key(),
            client_ca: pki.ca_cert(),
            crl: Some(pki.crl()),
            tls_crypt_key: Some(pki.tls_crypt_key()),
            tls_auth: None,
            groups_from_certificate_ou: false,
            expired_crl: crate::config::ExpiredCrl::Refuse,
            require_client_eku: true,
        }
    }

    #[test]
    fn a_pki_from_gateway_pki_loads_and_mismatches_are_named() {
        let dir = std::env::temp_dir().join(format!("gw-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pki = Pki::init(&dir, "CA", "server").unwrap();
        pki.issue_client("alice", None).unwrap();
        let loaded = load(&tls(&pki)).unwrap();
        assert_eq!(loaded.cert_chain.len(), 1);
        assert_eq!(loaded.client_ca.len(), 1);
        assert_eq!(loaded.crls.len(), 1);
        assert!(loaded.tls_crypt_key.is_some());

        // Alice's key does not belong to the server certificate.
        let mut wrong = tls(&pki);
        wrong.server_key = pki.client_key("alice");
        let errs = load(&wrong).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].key, "tls.server_key");
        assert!(
            errs[0]
                .message
                .contains("does not belong to tls.server_cert"),
            "{errs:?}"
        );

        // Every broken file is reported, each by its key.
        let mut broken = tls(&pki);
        broken.client_ca = pki.tls_crypt_key();
        broken.crl = Some(dir.join("missing.pem"));
        broken.tls_crypt_key = Some(pki.ca_cert());
        let keys: Vec<String> = load(&broken)
            .unwrap_err()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, ["tls.client_ca", "tls.crl", "tls.tls_crypt_key"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
