//! Data-channel key derivation (protocol doc §8): the 256-byte key block from the TLS
//! exporter or from the legacy TLS 1.0 PRF over the key-method-2 randoms, and its split into
//! encrypt/decrypt keys for the server or the client role.

use std::fmt;

use hmac::digest::{Key, KeyInit};
use hmac::{Hmac, Mac};

use crate::key_method::{ClientKeySource, ServerKeySource};

/// Label for `export_keying_material` (RFC 5705); OpenVPN passes no context.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-OpenVPN-datakeys";
/// Bytes to request from the exporter, and the size of the key block either way.
pub const KEY_BLOCK_LEN: usize = 256;
/// Size of each cipher and HMAC slice of the key block.
pub const KEY_LEN: usize = 64;
/// Size of the AEAD implicit IV taken from the front of an HMAC slice.
pub const IMPLICIT_IV_LEN: usize = 8;
/// Size of the legacy PRF's pre-master and master secrets.
pub const MASTER_SECRET_LEN: usize = 48;

const MASTER_SECRET_LABEL: &[u8] = b"OpenVPN master secret";
const KEY_EXPANSION_LABEL: &[u8] = b"OpenVPN key expansion";
const SESSION_ID_LEN: usize = 8;

/// Which end of the connection we are; decides which key set we send with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The TLS client.
    Client,
    /// The TLS server.
    Server,
}

/// The 256-byte data-channel key block (`struct key2`): bytes 0..128 protect
/// client→server traffic, bytes 128..256 server→client. `Debug` does not print keys.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyBlock {
    bytes: [u8; KEY_BLOCK_LEN],
}

impl fmt::Debug for KeyBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyBlock(<redacted>)")
    }
}

/// Keys for one direction pair, each a full 64-byte slice; ciphers use a prefix (16 or 32
/// bytes), AEAD ciphers take the implicit IV from the first 8 bytes of the HMAC slice.
/// `Debug` does not print keys.
#[derive(Clone, PartialEq, Eq)]
pub struct DataChannelKeys {
    /// Cipher key for packets we send.
    pub encrypt_cipher_key: [u8; KEY_LEN],
    /// HMAC key (CBC) or implicit-IV source (AEAD) for packets we send.
    pub encrypt_hmac_key: [u8; KEY_LEN],
    /// Cipher key for packets we receive.
    pub decrypt_cipher_key: [u8; KEY_LEN],
    /// HMAC key (CBC) or implicit-IV source (AEAD) for packets we receive.
    pub decrypt_hmac_key: [u8; KEY_LEN],
}

impl fmt::Debug for DataChannelKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataChannelKeys(<redacted>)")
    }
}

impl DataChannelKeys {
    /// AEAD implicit IV for packets we send: the first 8 bytes of our HMAC slice.
    pub fn encrypt_implicit_iv(&self) -> [u8; IMPLICIT_IV_LEN] {
        implicit_iv(&self.encrypt_hmac_key)
    }

    /// AEAD implicit IV for packets we receive: the first 8 bytes of the peer's HMAC slice.
    pub fn decrypt_implicit_iv(&self) -> [u8; IMPLICIT_IV_LEN] {
        implicit_iv(&self.decrypt_hmac_key)
    }
}

#[expect(
    clippy::indexing_slicing,
    reason = "an 8-byte chunk of a 64-byte array: the first always exists"
)]
fn implicit_iv(hmac_key: &[u8; KEY_LEN]) -> [u8; IMPLICIT_IV_LEN] {
    let (chunks, _) = hmac_key.as_chunks::<IMPLICIT_IV_LEN>();
    chunks[0]
}

impl KeyBlock {
    /// The key block from the exporter output: call
    /// `export_keying_material(&mut block, EXPORTER_LABEL, None)` with a
    /// `[u8; KEY_BLOCK_LEN]` on the TLS session of this key_id and pass the result here.
    pub fn from_exporter(bytes: [u8; KEY_BLOCK_LEN]) -> Self {
        KeyBlock { bytes }
    }

    /// The key block by the legacy PRF (clients without IV_PROTO bit 3):
    /// `master = PRF(pre_master, "OpenVPN master secret" || c.random1 || s.random1, 48)`,
    /// `block = PRF(master, "OpenVPN key expansion" || c.random2 || s.random2 || c_sid || s_sid, 256)`.
    pub fn from_prf(
        client: &ClientKeySource,
        server: &ServerKeySource,
        client_session_id: &[u8; SESSION_ID_LEN],
        server_session_id: &[u8; SESSION_ID_LEN],
    ) -> Self {
        let master = master_secret(client, server);
        let mut bytes = [0u8; KEY_BLOCK_LEN];
        tls1_prf(
            &master,
            &[
                KEY_EXPANSION_LABEL,
                &client.random2,
                &server.random2,
                client_session_id,
                server_session_id,
            ],
            &mut bytes,
        );
        KeyBlock { bytes }
    }

    /// Splits the block for `role`: the server encrypts with bytes 128..256 and decrypts
    /// with 0..128, the client the reverse.
    #[expect(
        clippy::indexing_slicing,
        reason = "the 256-byte block is exactly four 64-byte chunks"
    )]
    pub fn data_channel_keys(&self, role: Role) -> DataChannelKeys {
        let (slices, _) = self.bytes.as_chunks::<KEY_LEN>();
        let client_to_server = (slices[0], slices[1]);
        let server_to_client = (slices[2], slices[3]);
        let (encrypt, decrypt) = match role {
            Role::Server => (server_to_client, client_to_server),
            Role::Client => (client_to_server, server_to_client),
        };
        DataChannelKeys {
            encrypt_cipher_key: encrypt.0,
            encrypt_hmac_key: encrypt.1,
            decrypt_cipher_key: decrypt.0,
            decrypt_hmac_key: decrypt.1,
        }
    }
}

fn master_secret(client: &ClientKeySource, server: &ServerKeySource) -> [u8; MASTER_SECRET_LEN] {
    let mut master = [0u8; MASTER_SECRET_LEN];
    tls1_prf(
        &client.pre_master,
        &[MASTER_SECRET_LABEL, &client.random1, &server.random1],
        &mut master,
    );
    master
}

/// The TLS 1.0/1.1 PRF (RFC 2246 §5) for a 48-byte secret: `P_MD5(S1, seed) XOR
/// P_SHA1(S2, seed)` with S1, S2 the two 24-byte halves. `seed` is the concatenation of
/// the given parts (OpenVPN puts its label in the seed). Fills all of `out`.
pub fn tls1_prf(secret: &[u8; MASTER_SECRET_LEN], seed: &[&[u8]], out: &mut [u8]) {
    let (s1, s2) = secret.split_at(MASTER_SECRET_LEN / 2);
    out.fill(0);
    p_hash_xor::<Hmac<md5::Md5>>(s1, seed, out);
    p_hash_xor::<Hmac<sha1::Sha1>>(s2, seed, out);
}

/// XORs `P_hash(secret, seed)` into `out`. `secret` must be no longer than the hash's
/// block size (64 for MD5 and SHA-1); HMAC zero-pads shorter keys to the block size, which
/// is what the fixed-size key below does.
fn p_hash_xor<M>(secret: &[u8], seed: &[&[u8]], out: &mut [u8])
where
    M: Mac + KeyInit + Clone,
{
    let mut padded = Key::<M>::default();
    for (dst, src) in padded.iter_mut().zip(secret) {
        *dst = *src;
    }
    let keyed = <M as KeyInit>::new(&padded);
    let mut a = keyed.clone();
    for part in seed {
        Mac::update(&mut a, part);
    }
    let mut a = a.finalize().into_bytes();
    for chunk in out.chunks_mut(a.len()) {
        let mut block = keyed.clone();
        Mac::update(&mut block, &a);
        for part in seed {
            Mac::update(&mut block, part);
        }
        for (o, b) in chunk.iter_mut().zip(block.finalize().into_bytes()) {
            *o ^= b;
        }
        let mut next = keyed.clone();
        Mac::update(&mut next, &a);
        a = next.finalize().into_bytes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Straightforward RFC 2246 P_hash with allocation and `new_from_slice`, independent of
    /// the production code's padded-key, streaming-seed implementation.
    fn reference_p_hash<M: Mac + KeyInit>(secret: &[u8], seed: &[u8], len: usize) -> Vec<u8> {
        let hmac = |data: &[u8]| {
            let mut m = <M as KeyInit>::new_from_slice(secret).unwrap();
            Mac::update(&mut m, data);
            m.finalize().into_bytes().to_vec()
        };
        let mut out = Vec::new();
        let mut a = seed.to_vec();
        while out.len() < len {
            a = hmac(&a);
            out.extend(hmac(&[a.as_slice(), seed].concat()));
        }
        out.truncate(len);
        out
    }

    fn reference_prf(secret: &[u8], seed: &[u8], len: usize) -> Vec<u8> {
        let half = secret.len().div_ceil(2);
        let md5 = reference_p_hash::<Hmac<md5::Md5>>(&secret[..half], seed, len);
        let sha = reference_p_hash::<Hmac<sha1::Sha1>>(&secret[secret.len() - half..], seed, len);
        md5.iter().zip(sha).map(|(a, b)| a ^ b).collect()
    }

    fn doc_vector_sources() -> (ClientKeySource, ServerKeySource) {
        (
            ClientKeySource {
                pre_master: [0x11; 48],
                random1: [0x21; 32],
                random2: [0x22; 32],
            },
            ServerKeySource {
                random1: [0x31; 32],
                random2: [0x32; 32],
            },
        )
    }

    const CLIENT_SID: [u8; 8] = [0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8];
    const SERVER_SID: [u8; 8] = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];

    #[test]
    fn doc_vector_master_secret() {
        let (client, server) = doc_vector_sources();
        assert_eq!(
            master_secret(&client, &server).to_vec(),
            hex(
                "ecc59d35f58ab75c24c8b7c6473b742dedfbb76f2d57258bfe7b1539eab6d6b7b81c3411e7c460b1f1815ed0bab6c85b"
            )
        );
    }

    #[test]
    fn doc_vector_key_block() {
        let (client, server) = doc_vector_sources();
        let block = KeyBlock::from_prf(&client, &server, &CLIENT_SID, &SERVER_SID);
        assert_eq!(
            block.bytes[..16].to_vec(),
            hex("1a2b3bbd378c2201840bf37417ad10ae")
        );
        assert_eq!(
            block.bytes[128..144].to_vec(),
            hex("64bb1529550d625f6a97460c6443cc47")
        );
        let server_keys = block.data_channel_keys(Role::Server);
        assert_eq!(
            server_keys.decrypt_cipher_key[..16].to_vec(),
            hex("1a2b3bbd378c2201840bf37417ad10ae")
        );
        assert_eq!(
            server_keys.encrypt_cipher_key[..16].to_vec(),
            hex("64bb1529550d625f6a97460c6443cc47")
        );
    }

    #[test]
    fn doc_vector_whole_block_matches_openssl() {
        // `openssl kdf -keylen 256 -kdfopt digest:MD5-SHA1 -kdfopt hexsecret:<master>
        // -kdfopt hexseed:<"OpenVPN key expansion" || randoms || sids> TLS1-PRF`.
        const OPENSSL_BLOCK: &str = "\
             1a2b3bbd378c2201840bf37417ad10ae27913ec4a8cafef11e1c8448a830515c\
             2b5f2cf1a939549f48c8acd9238896b3348e963ed92801428cd8c7e7774cf918\
             bb53ab879c36d033b9ef7f39c72a5b0a0191bbb4290a3818b3a247fe9e7b56aa\
             ada1b1200dd1677c5dec6780569ffc55b78ae42a88df8dca4d5f011f73ffd4a2\
             64bb1529550d625f6a97460c6443cc47f029e0eba75262a4aa7891df2affaafb\
             abf64e96bde5bcbaa6ee15b8c09cae1a0d5f966952d48ddb79a8851d5bd4726d\
             0c608e3d7d60bd76cf8e8b73a933863fa7524b57c61bf44ebcdc3ffbec0e705c\
             e6d2ebaa6dbb1fb594a1c31dff85c51ffea98c75b28e7e726d16a8a4e0cecb84";
        let (client, server) = doc_vector_sources();
        let block = KeyBlock::from_prf(&client, &server, &CLIENT_SID, &SERVER_SID);
        assert_eq!(block.bytes.to_vec(), hex(OPENSSL_BLOCK));
    }

    #[test]
    fn key_block_matches_reference_prf_over_whole_block() {
        let (client, server) = doc_vector_sources();
        let master = reference_prf(
            &client.pre_master,
            &[
                MASTER_SECRET_LABEL,
                &client.random1[..],
                &server.random1[..],
            ]
            .concat(),
            48,
        );
        let expected = reference_prf(
            &master,
            &[
                KEY_EXPANSION_LABEL,
                &client.random2[..],
                &server.random2[..],
                &CLIENT_SID[..],
                &SERVER_SID[..],
            ]
            .concat(),
            256,
        );
        let block = KeyBlock::from_prf(&client, &server, &CLIENT_SID, &SERVER_SID);
        assert_eq!(block.bytes.to_vec(), expected);
    }

    #[test]
    fn prf_matches_reference_for_lengths_not_multiple_of_hash_size() {
        let secret: [u8; 48] = std::array::from_fn(|i| (i * 13 + 1) as u8);
        for len in [0, 1, 15, 16, 17, 20, 21, 47, 48, 100, 257] {
            let mut out = vec![0xeeu8; len];
            tls1_prf(&secret, &[b"label", b"", b"seed bytes"], &mut out);
            assert_eq!(
                out,
                reference_prf(&secret, b"labelseed bytes", len),
                "len {len}"
            );
        }
    }

    #[test]
    fn session_ids_and_their_order_change_the_block() {
        let (client, server) = doc_vector_sources();
        let a = KeyBlock::from_prf(&client, &server, &CLIENT_SID, &SERVER_SID);
        let swapped = KeyBlock::from_prf(&client, &server, &SERVER_SID, &CLIENT_SID);
        assert_ne!(a, swapped);
    }

    #[test]
    fn every_random_feeds_the_derivation() {
        let (client, server) = doc_vector_sources();
        let base = KeyBlock::from_prf(&client, &server, &CLIENT_SID, &SERVER_SID);
        let mut c = client.clone();
        c.pre_master[47] ^= 1;
        assert_ne!(
            base,
            KeyBlock::from_prf(&c, &server, &CLIENT_SID, &SERVER_SID)
        );
        let mut c = client.clone();
        c.random1[0] ^= 1;
        assert_ne!(
            base,
            KeyBlock::from_prf(&c, &server, &CLIENT_SID, &SERVER_SID)
        );
        let mut c = client.clone();
        c.random2[0] ^= 1;
        assert_ne!(
            base,
            KeyBlock::from_prf(&c, &server, &CLIENT_SID, &SERVER_SID)
        );
        let mut s = server.clone();
        s.random1[31] ^= 1;
        assert_ne!(
            base,
            KeyBlock::from_prf(&client, &s, &CLIENT_SID, &SERVER_SID)
        );
        let mut s = server.clone();
        s.random2[31] ^= 1;
        assert_ne!(
            base,
            KeyBlock::from_prf(&client, &s, &CLIENT_SID, &SERVER_SID)
        );
    }

    fn counting_block() -> KeyBlock {
        KeyBlock::from_exporter(std::array::from_fn(|i| i as u8))
    }

    #[test]
    fn server_encrypts_with_second_half() {
        let keys = counting_block().data_channel_keys(Role::Server);
        assert_eq!(keys.encrypt_cipher_key[0], 128);
        assert_eq!(keys.encrypt_hmac_key[0], 192);
        assert_eq!(keys.decrypt_cipher_key[0], 0);
        assert_eq!(keys.decrypt_hmac_key[63], 127);
        // §9.4: server→client implicit IV = bytes 192..199, client→server = 64..71.
        assert_eq!(
            keys.encrypt_implicit_iv(),
            [0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7]
        );
        assert_eq!(keys.decrypt_implicit_iv(), [64, 65, 66, 67, 68, 69, 70, 71]);
    }

    #[test]
    fn client_and_server_keys_mirror_each_other() {
        let block = counting_block();
        let server = block.data_channel_keys(Role::Server);
        let client = block.data_channel_keys(Role::Client);
        assert_eq!(client.encrypt_cipher_key, server.decrypt_cipher_key);
        assert_eq!(client.encrypt_hmac_key, server.decrypt_hmac_key);
        assert_eq!(client.decrypt_cipher_key, server.encrypt_cipher_key);
        assert_eq!(client.decrypt_hmac_key, server.encrypt_hmac_key);
        assert_eq!(client.encrypt_cipher_key[0], 0);
    }

    #[test]
    fn exporter_constants() {
        assert_eq!(EXPORTER_LABEL, b"EXPORTER-OpenVPN-datakeys");
        assert_eq!(KEY_BLOCK_LEN, 2 * 2 * KEY_LEN);
    }

    #[test]
    fn debug_hides_keys() {
        let block = KeyBlock::from_exporter([0x5a; KEY_BLOCK_LEN]);
        let keys = block.data_channel_keys(Role::Server);
        let shown = format!("{block:?} {keys:?}");
        assert!(!shown.contains("90") && !shown.contains("5a"), "{shown}");
    }
}
