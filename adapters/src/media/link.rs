//! Download links for the filesystem store: `GET /api/media/{token}`, where the token is the
//! object's key and an expiry, with an HMAC-SHA256 over both. Altered or expired tokens are
//! refused; the key never leaves without its MAC.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("this download link is not valid (altered, or not one of ours)")]
    Invalid,
    #[error("this download link has expired; ask for a new one")]
    Expired,
}

/// Signs and opens download tokens.
#[derive(Clone)]
pub struct LinkSigner {
    key: Vec<u8>,
}

impl LinkSigner {
    /// Tokens signed with a key derived from `secret` for `purpose` (the derivation keeps
    /// this key apart from every other use of the same secret).
    pub fn new(secret: &[u8], purpose: &str) -> Self {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(b"chatledger media v1: ");
        mac.update(purpose.as_bytes());
        LinkSigner {
            key: mac.finalize().into_bytes().to_vec(),
        }
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(payload);
        mac
    }

    /// A token for `key` that works for `ttl` from now; the file is served as `mime`.
    pub fn sign(&self, key: &str, mime: &str, ttl: Duration) -> String {
        // Milliseconds: a link meant to last a second lasts a second, not what is left of it.
        let expires = chrono::Utc::now().timestamp_millis() + ttl.as_millis() as i64;
        self.sign_until(key, mime, expires)
    }

    fn sign_until(&self, key: &str, mime: &str, expires: i64) -> String {
        let mime: String = mime.chars().filter(|c| *c != ':').collect();
        let payload = format!("{expires}:{mime}:{key}");
        let tag = self.mac(payload.as_bytes()).finalize().into_bytes();
        format!("{}.{}", B64.encode(payload), B64.encode(tag))
    }

    /// The key `token` names and the type to serve it as, if it is unaltered and has not
    /// expired.
    pub fn open(&self, token: &str) -> Result<(String, String), LinkError> {
        let (payload, tag) = token.split_once('.').ok_or(LinkError::Invalid)?;
        let payload = B64.decode(payload).map_err(|_| LinkError::Invalid)?;
        let tag = B64.decode(tag).map_err(|_| LinkError::Invalid)?;
        self.mac(&payload)
            .verify_slice(&tag)
            .map_err(|_| LinkError::Invalid)?;
        let payload = String::from_utf8(payload).map_err(|_| LinkError::Invalid)?;
        let mut parts = payload.splitn(3, ':');
        let (Some(expires), Some(mime), Some(key)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(LinkError::Invalid);
        };
        let expires: i64 = expires.parse().map_err(|_| LinkError::Invalid)?;
        if chrono::Utc::now().timestamp_millis() >= expires {
            return Err(LinkError::Expired);
        }
        Ok((key.to_owned(), mime.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_open_only_unaltered_and_in_time() {
        let signer = LinkSigner::new(b"a secret", "downloads");
        let token = signer.sign("conversation-x/abc", "image/jpeg", Duration::from_secs(60));
        assert_eq!(
            signer.open(&token).unwrap(),
            ("conversation-x/abc".to_owned(), "image/jpeg".to_owned())
        );
        // Another key's token, a token for another object, an expired one.
        assert_eq!(
            LinkSigner::new(b"another", "downloads").open(&token),
            Err(LinkError::Invalid)
        );
        assert_eq!(
            LinkSigner::new(b"a secret", "uploads").open(&token),
            Err(LinkError::Invalid),
            "a token for one purpose opens nothing of another"
        );
        let (payload, tag) = token.split_once('.').unwrap();
        let mut altered = B64.decode(payload).unwrap();
        *altered.last_mut().unwrap() = b'd';
        assert_eq!(
            signer.open(&format!("{}.{tag}", B64.encode(altered))),
            Err(LinkError::Invalid)
        );
        let old = signer.sign_until(
            "conversation-x/abc",
            "image/jpeg",
            chrono::Utc::now().timestamp_millis() - 1,
        );
        assert_eq!(signer.open(&old), Err(LinkError::Expired));
        assert_eq!(signer.open("not a token"), Err(LinkError::Invalid));
    }
}
