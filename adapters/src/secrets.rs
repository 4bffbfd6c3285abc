//! Sealing credentials (tokens, PINs) before they enter an event.
//!
//! The key comes from `CHATLEDGER_SECRETS_KEY` (32 bytes, base64). Each sealed value names
//! the key it was sealed under (its id: a digest of the key, so the id itself reveals
//! nothing), which is what makes rotation possible: `chatledger secrets rotate` reads with the
//! old keys (`CHATLEDGER_SECRETS_OLD_KEYS`) and seals the live values again under the new one.
//! A sealed value is bound to its stream and purpose (the AEAD's associated data), so a
//! ciphertext copied into another business's stream does not open.

use std::collections::HashMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chatledger_core::credential::SealedSecret;

/// A secret in memory (from the environment, or opened from a [`SealedSecret`]). Its `Debug`
/// never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Why a secret could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    #[error("{0} must be 32 bytes in base64 (e.g. the output of `openssl rand -base64 32`)")]
    BadKey(&'static str),
    #[error("the secret was sealed under key {0}, which is not configured (CHATLEDGER_SECRETS_KEY or CHATLEDGER_SECRETS_OLD_KEYS)")]
    UnknownKey(String),
    #[error("the sealed secret does not open: it was altered or belongs elsewhere")]
    Tampered,
}

/// The configured keys: the current one seals, every one opens.
#[derive(Clone)]
pub struct Keyring {
    current: String,
    keys: HashMap<String, [u8; 32]>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Keyring {{ current: {}, keys: {} }}",
            self.current,
            self.keys.len()
        )
    }
}

/// A key's public id: the first 8 bytes of SHA-256 over a label and the key, in hex.
pub fn key_id(key: &[u8; 32]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"chatledger secrets key id\0")
        .chain_update(key)
        .finalize();
    format!("k-{}", hex::encode(&digest[..8]))
}

fn decode_key(text: &str, name: &'static str) -> Result<[u8; 32], SecretsError> {
    BASE64
        .decode(text.trim())
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
        .ok_or(SecretsError::BadKey(name))
}

impl Keyring {
    /// From `CHATLEDGER_SECRETS_KEY` and `CHATLEDGER_SECRETS_OLD_KEYS` (comma-separated);
    /// `Ok(None)` when no key is set.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Self>, SecretsError> {
        let Some(current) = env("CHATLEDGER_SECRETS_KEY").filter(|v| !v.trim().is_empty()) else {
            return Ok(None);
        };
        let mut keyring = Keyring::new(decode_key(&current, "CHATLEDGER_SECRETS_KEY")?);
        for old in env("CHATLEDGER_SECRETS_OLD_KEYS")
            .unwrap_or_default()
            .split(',')
            .filter(|k| !k.trim().is_empty())
        {
            keyring.add_old(decode_key(old, "CHATLEDGER_SECRETS_OLD_KEYS")?);
        }
        Ok(Some(keyring))
    }

    /// A keyring sealing under `key`.
    pub fn new(key: [u8; 32]) -> Self {
        let current = key_id(&key);
        Keyring {
            keys: HashMap::from([(current.clone(), key)]),
            current,
        }
    }

    /// Adds a key that only opens.
    pub fn add_old(&mut self, key: [u8; 32]) {
        self.keys.entry(key_id(&key)).or_insert(key);
    }

    /// The id of the key that seals.
    pub fn current_key_id(&self) -> &str {
        &self.current
    }

    /// Seals `secret` for `context` (e.g. `credential-acme/access_token`).
    pub fn seal(&self, secret: &Secret, context: &str) -> SealedSecret {
        let key = &self.keys[&self.current];
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = XChaCha20Poly1305::new(key.into())
            .encrypt(
                &nonce,
                Payload {
                    msg: secret.expose().as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .unwrap_or_default();
        SealedSecret {
            key_id: self.current.clone(),
            nonce: BASE64.encode(nonce),
            ciphertext: BASE64.encode(ciphertext),
        }
    }

    /// Opens what [`Keyring::seal`] sealed for the same `context`.
    pub fn open(&self, sealed: &SealedSecret, context: &str) -> Result<Secret, SecretsError> {
        let key = self
            .keys
            .get(&sealed.key_id)
            .ok_or_else(|| SecretsError::UnknownKey(sealed.key_id.clone()))?;
        let nonce = BASE64
            .decode(&sealed.nonce)
            .ok()
            .filter(|n| n.len() == 24)
            .ok_or(SecretsError::Tampered)?;
        let ciphertext = BASE64
            .decode(&sealed.ciphertext)
            .map_err(|_| SecretsError::Tampered)?;
        let plaintext = XChaCha20Poly1305::new(key.into())
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretsError::Tampered)?;
        String::from_utf8(plaintext)
            .map(Secret)
            .map_err(|_| SecretsError::Tampered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_context() {
        let keyring = Keyring::new([7; 32]);
        let sealed = keyring.seal(&Secret::new("EAAG-token"), "credential-acme/access_token");
        assert_eq!(sealed.key_id, keyring.current_key_id());
        assert!(!sealed.ciphertext.contains("EAAG"));
        assert_eq!(
            keyring
                .open(&sealed, "credential-acme/access_token")
                .unwrap()
                .expose(),
            "EAAG-token"
        );
        assert_eq!(
            keyring.open(&sealed, "credential-other/access_token"),
            Err(SecretsError::Tampered)
        );
        let other = Keyring::new([8; 32]);
        assert!(matches!(
            other.open(&sealed, "credential-acme/access_token"),
            Err(SecretsError::UnknownKey(_))
        ));
        let mut rotated = Keyring::new([8; 32]);
        rotated.add_old([7; 32]);
        assert!(rotated
            .open(&sealed, "credential-acme/access_token")
            .is_ok());
        assert_ne!(rotated.current_key_id(), keyring.current_key_id());
    }

    #[test]
    fn keys_come_from_the_environment_in_base64() {
        let key = BASE64.encode([1u8; 32]);
        let old = BASE64.encode([2u8; 32]);
        let env = |name: &str| match name {
            "CHATLEDGER_SECRETS_KEY" => Some(key.clone()),
            "CHATLEDGER_SECRETS_OLD_KEYS" => Some(format!("{old}, ")),
            _ => None,
        };
        let keyring = Keyring::from_env(&env).unwrap().unwrap();
        assert_eq!(keyring.keys.len(), 2);
        assert_eq!(Keyring::from_env(&|_| None).unwrap().map(|_| ()), None);
        let short = |name: &str| (name == "CHATLEDGER_SECRETS_KEY").then(|| "c2hvcnQ=".to_owned());
        assert_eq!(
            Keyring::from_env(&short).map(|_| ()),
            Err(SecretsError::BadKey("CHATLEDGER_SECRETS_KEY"))
        );
        assert!(!format!("{keyring:?}").contains(&key));
    }
}
