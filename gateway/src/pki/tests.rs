use std::{os::unix::fs::PermissionsExt, process::Command};

use x509_parser::prelude::{FromDer, X509Certificate, parse_x509_pem};

use super::*;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gw-pki-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

/// `openssl verify` of `cert` against the CA (and the CRL when given): an independent
/// implementation checks what rcgen produced.
fn openssl_verify(pki: &Pki, cert: &Path, with_crl: bool, purpose: &str) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.args(["verify", "-purpose", purpose, "-CAfile"])
        .arg(pki.ca_cert());
    if with_crl {
        cmd.arg("-CRLfile").arg(pki.crl()).arg("-crl_check");
    }
    let out = cmd
        .arg(cert)
        .output()
        .expect("openssl is installed by cargo xtask setup");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn parse_cert(path: &Path) -> (String, Vec<String>) {
    let pem_text = fs::read(path).unwrap();
    let (_, pem) = parse_x509_pem(&pem_text).unwrap();
    let (_, cert) = X509Certificate::from_der(&pem.contents).unwrap();
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let ous = cert
        .subject()
        .iter_organizational_unit()
        .map(|ou| ou.as_str().unwrap().to_string())
        .collect();
    (cn, ous)
}

#[test]
fn init_creates_a_ca_server_certificate_crl_and_tls_crypt_key() {
    let dir = temp_dir("init");
    let pki = Pki::init(&dir, "Test CA", "vpn.example.test").unwrap();
    for f in [
        pki.ca_cert(),
        pki.ca_key(),
        pki.server_cert(),
        pki.server_key(),
        pki.crl(),
        pki.tls_crypt_key(),
    ] {
        assert!(f.exists(), "{} missing", f.display());
    }
    for secret in [pki.ca_key(), pki.server_key(), pki.tls_crypt_key()] {
        let mode = fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", secret.display());
    }
    let (ok, out) = openssl_verify(&pki, &pki.server_cert(), true, "sslserver");
    assert!(ok, "{out}");
    assert_eq!(parse_cert(&pki.server_cert()).0, "vpn.example.test");
    let pem = fs::read_to_string(pki.server_cert()).unwrap();
    assert_eq!(common_name(&pem).unwrap(), "vpn.example.test");
    assert!(common_name("garbage").is_err());
    // One rule with the session's: several common names are refused, not picked from.
    pki.issue_flawed_client("first", Flaw::SecondCommonName("second"))
        .unwrap();
    let two = fs::read_to_string(pki.client_cert("first")).unwrap();
    assert!(matches!(
        common_name(&two),
        Err(CommonNameError::Several(2))
    ));
    let der = x509_parser::pem::parse_x509_pem(two.as_bytes())
        .unwrap()
        .1
        .contents;
    assert_eq!(
        gateway_proto::session::check_client_identity(&der, true),
        Err(gateway_proto::session::IdentityError::SeveralCommonNames(2))
    );
    let key = fs::read_to_string(pki.tls_crypt_key()).unwrap();
    assert!(gateway_proto::static_key::StaticKey::parse(&key).is_ok());
    assert!(matches!(
        Pki::init(&dir, "again", "x"),
        Err(PkiError::Exists(_))
    ));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn clients_carry_their_groups_and_revocation_reaches_the_crl() {
    let dir = temp_dir("clients");
    let pki = Pki::init(&dir, "Test CA", "server").unwrap();
    let alice = pki.issue_client("alice", Some("engineering")).unwrap();
    pki.issue_client("bob", None).unwrap();
    assert_eq!(
        parse_cert(&pki.client_cert("alice")),
        ("alice".into(), vec!["engineering".into()])
    );
    let (ok, out) = openssl_verify(&pki, &pki.client_cert("alice"), true, "sslclient");
    assert!(ok, "{out}");
    // A client certificate is not a server certificate.
    let (ok, _) = openssl_verify(&pki, &pki.client_cert("alice"), false, "sslserver");
    assert!(!ok);

    pki.revoke("alice").unwrap();
    let (ok, out) = openssl_verify(&pki, &pki.client_cert("alice"), true, "sslclient");
    assert!(!ok && out.contains("revoked"), "{out}");
    let (ok, out) = openssl_verify(&pki, &pki.client_cert("bob"), true, "sslclient");
    assert!(ok, "{out}");
    let crl_pem = fs::read(pki.crl()).unwrap();
    let (_, pem) = parse_x509_pem(&crl_pem).unwrap();
    let (_, crl) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&pem.contents).unwrap();
    let serials: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|r| hex(r.raw_serial()))
        .collect();
    assert_eq!(serials, std::slice::from_ref(&alice.serial));

    let listed = pki.list().unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|c| (c.name.as_str(), c.revoked))
            .collect::<Vec<_>>(),
        [("server", false), ("alice", true), ("bob", false)]
    );
    assert!(matches!(
        pki.revoke("alice"),
        Err(PkiError::AlreadyRevoked(_))
    ));
    assert!(matches!(pki.revoke("carol"), Err(PkiError::Unknown(_))));
    assert!(matches!(
        pki.issue_client("bob", None),
        Err(PkiError::Duplicate(_))
    ));
    for bad in ["", "../x", "a/b", ".hidden", "sp ace", &"x".repeat(65)] {
        assert!(
            matches!(pki.issue_client(bad, None), Err(PkiError::BadName(_))),
            "{bad:?}"
        );
    }
    assert!(matches!(
        Pki::open(&dir.join("clients")),
        Err(PkiError::Missing(_))
    ));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hex_round_trips() {
    let bytes = [0x7f, 0x00, 0xab, 0x01];
    assert_eq!(unhex(&hex(&bytes)).unwrap(), bytes);
    assert!(unhex("abc").is_none());
    assert!(unhex("zz").is_none());
}

#[test]
fn a_secret_is_never_readable_through_a_temporary_file_left_behind() {
    let dir = temp_dir("stale-tmp");
    fs::create_dir_all(&dir).unwrap();
    let key = dir.join("alice.key");
    // A stale (or planted) world-readable temporary file where the key will pass.
    let tmp = key.with_extension("tmp");
    fs::write(&tmp, "planted").unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
    write_secret(&key, b"-----BEGIN PRIVATE KEY-----").unwrap();
    let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(fs::read(&key).unwrap(), b"-----BEGIN PRIVATE KEY-----");
    assert!(!tmp.exists());
    // A link planted as the temporary file is replaced, not written through.
    let elsewhere = dir.join("elsewhere");
    std::os::unix::fs::symlink(&elsewhere, &tmp).unwrap();
    write_secret(&key, b"second").unwrap();
    assert!(!elsewhere.exists(), "written through the link");
    assert_eq!(fs::read(&key).unwrap(), b"second");
    let _ = fs::remove_dir_all(&dir);
}
