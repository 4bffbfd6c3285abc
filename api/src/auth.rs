//! Who is asking: executives log in for a JWT; `ADMIN_TOKEN` acts as an admin.

use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chatledger_adapters::whatsapp::signature::secret_matches;
use chatledger_core::executive::Role;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::Secret;

/// How long a login lasts unless `JWT_TTL_SECONDS` says otherwise: 12 hours, one shift.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

/// The person (or admin token) a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub role: Role,
    /// `None` for the admin token.
    pub executive_id: Option<String>,
    pub name: String,
    pub stakeholders: Vec<String>,
}

impl Viewer {
    /// Whether this viewer may see chats of `stakeholder`.
    pub fn sees_stakeholder(&self, stakeholder: &str) -> bool {
        self.role.sees_everything() || self.stakeholders.iter().any(|s| s == stakeholder)
    }
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required: send Authorization: Bearer <token>")]
    Missing,
    #[error("the token has expired; log in again")]
    Expired,
    #[error("the token is not valid")]
    Invalid,
    /// The token was ended: logged out, or its executive deactivated, given another role or
    /// a new password.
    #[error("the token was ended ({0}); log in again")]
    Ended(&'static str),
    #[error("logins are not configured: set JWT_SECRET_KEY")]
    NotConfigured,
    #[error("wrong email or password")]
    BadCredentials,
    /// The password was right, but an admin deactivated the account.
    #[error("this account is deactivated; an admin can reactivate it")]
    Deactivated,
    /// Too many failed logins in a row locked the account (no password is checked until then).
    #[error(
        "this account is locked after too many failed logins, until {0}; an admin can unlock it"
    )]
    Locked(DateTime<Utc>),
    /// A login whose input cannot be an account's (a NUL character, thousands of characters).
    #[error("{0}")]
    RefusedInput(String),
    /// Too many failed logins of this account or from this address: wait this many seconds.
    #[error("too many failed logins; try again in {0} s")]
    TooManyAttempts(u64),
    /// The executives cannot be read right now (the read-model database is unreachable).
    #[error("logins are unavailable right now: {0}")]
    Unavailable(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    name: String,
    role: Role,
    stakeholders: Vec<String>,
    iat: i64,
    exp: i64,
    /// The token's own id, which a logout names.
    #[serde(default)]
    jti: String,
    /// The executive's session generation at issue: the token stands while it is current
    /// (see [`crate::sessions`]).
    #[serde(default)]
    gen: u64,
}

/// What a login token says beyond whom it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFacts {
    pub token_id: String,
    pub generation: u64,
    pub expires_at: DateTime<Utc>,
}

/// Token settings, from the environment.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    jwt_secret: Option<Secret>,
    admin_token: Option<Secret>,
    /// Lets a scraper read `/metrics` and nothing else (`METRICS_TOKEN`).
    metrics_token: Option<Secret>,
    pub token_ttl: Duration,
}

impl AuthSettings {
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let secret = |name: &str| env(name).filter(|v| !v.is_empty()).map(Secret::new);
        let token_ttl =
            match env("JWT_TTL_SECONDS") {
                Some(v) => Duration::from_secs(v.trim().parse().map_err(|_| {
                    format!("JWT_TTL_SECONDS must be a number of seconds, not {v:?}")
                })?),
                None => DEFAULT_TOKEN_TTL,
            };
        Ok(AuthSettings {
            jwt_secret: secret("JWT_SECRET_KEY"),
            admin_token: secret("ADMIN_TOKEN"),
            metrics_token: secret("METRICS_TOKEN"),
            token_ttl,
        })
    }

    /// The `Authorization` header's token (`Err(Missing)` without one): whom it names, and
    /// (for a login token, not the admin token) its facts. Whether the token still stands
    /// (not logged out, not ended by a deactivation, a new role or a new password) is the
    /// sessions' to say: requests go through [`crate::state::AppState::viewer`], which asks
    /// both.
    pub fn read_header(
        &self,
        authorization: Option<&str>,
    ) -> Result<(Viewer, Option<TokenFacts>), AuthError> {
        let token = authorization
            .and_then(|h| {
                h.trim()
                    .strip_prefix("Bearer ")
                    .or_else(|| h.trim().strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        self.read_token(token)
    }

    /// Whether the `Authorization` header carries `METRICS_TOKEN`.
    pub fn is_metrics_scraper(&self, authorization: Option<&str>) -> bool {
        let token = authorization
            .map(str::trim)
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim);
        match (&self.metrics_token, token) {
            (Some(secret), Some(token)) => secret_matches(secret.expose(), token),
            _ => false,
        }
    }

    /// A bare token: whom it names, and (for a login token) its facts.
    pub fn read_token(&self, token: &str) -> Result<(Viewer, Option<TokenFacts>), AuthError> {
        if let Some(admin) = &self.admin_token {
            if secret_matches(admin.expose(), token) {
                let admin = Viewer {
                    role: Role::Admin,
                    executive_id: None,
                    name: "admin token".into(),
                    stakeholders: vec![],
                };
                return Ok((admin, None));
            }
        }
        let secret = self.jwt_secret.as_ref().ok_or(AuthError::Invalid)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        let decoded = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(secret.expose().as_bytes()),
            &validation,
        )
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid,
        })?;
        let claims = decoded.claims;
        let facts = TokenFacts {
            token_id: claims.jti,
            generation: claims.gen,
            expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or(DateTime::<Utc>::MAX_UTC),
        };
        let viewer = Viewer {
            role: claims.role,
            executive_id: Some(claims.sub),
            name: claims.name,
            stakeholders: claims.stakeholders,
        };
        Ok((viewer, Some(facts)))
    }

    /// A signed token for `viewer`, valid from `now` for the configured time, in session
    /// generation 0.
    pub fn issue(
        &self,
        viewer: &Viewer,
        now: DateTime<Utc>,
    ) -> Result<(String, DateTime<Utc>), AuthError> {
        self.issue_in(viewer, 0, now)
    }

    /// A signed token for `viewer` in the executive's session `generation`, valid from `now`
    /// for the configured time.
    pub fn issue_in(
        &self,
        viewer: &Viewer,
        generation: u64,
        now: DateTime<Utc>,
    ) -> Result<(String, DateTime<Utc>), AuthError> {
        let secret = self.jwt_secret.as_ref().ok_or(AuthError::NotConfigured)?;
        let expires = chatledger_core::time::later(
            now,
            chrono::Duration::from_std(self.token_ttl).unwrap_or(chrono::Duration::MAX),
        );
        let claims = Claims {
            sub: viewer.executive_id.clone().unwrap_or_default(),
            name: viewer.name.clone(),
            role: viewer.role,
            stakeholders: viewer.stakeholders.clone(),
            iat: now.timestamp(),
            exp: expires.timestamp(),
            jti: uuid::Uuid::new_v4().to_string(),
            gen: generation,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.expose().as_bytes()),
        )
        .map_err(|_| AuthError::NotConfigured)?;
        Ok((token, expires))
    }
}

/// An argon2id hash of `password` (PHC string), with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing the password failed: {e}"))
}

/// Whether `password` matches `hash`.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ttl: &'static str) -> AuthSettings {
        let vars = [
            ("JWT_SECRET_KEY", "k".repeat(32)),
            ("ADMIN_TOKEN", "admin-token".into()),
            ("JWT_TTL_SECONDS", ttl.into()),
        ];
        AuthSettings::from_env(&move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        })
        .unwrap()
    }

    fn asha() -> Viewer {
        Viewer {
            role: Role::Executive,
            executive_id: Some("e1".into()),
            name: "Asha".into(),
            stakeholders: vec!["partner".into()],
        }
    }

    /// Whom a header names, by the signature and expiry alone.
    fn viewer(auth: &AuthSettings, header: Option<&str>) -> Result<Viewer, AuthError> {
        auth.read_header(header).map(|(viewer, _)| viewer)
    }

    #[test]
    fn tokens_round_trip_and_expire() {
        let auth = settings("3600");
        let (token, expires) = auth.issue(&asha(), Utc::now()).unwrap();
        assert!(expires > Utc::now());
        assert_eq!(
            viewer(&auth, Some(&format!("Bearer {token}"))).unwrap(),
            asha()
        );
        let (old, _) = auth
            .issue(&asha(), Utc::now() - chrono::Duration::hours(2))
            .unwrap();
        assert_eq!(
            viewer(&auth, Some(&format!("Bearer {old}"))),
            Err(AuthError::Expired)
        );
    }

    #[test]
    fn forged_and_missing_tokens_are_refused() {
        let auth = settings("3600");
        let (token, _) = auth.issue(&asha(), Utc::now()).unwrap();
        let other =
            AuthSettings::from_env(&|n| (n == "JWT_SECRET_KEY").then(|| "another key".to_owned()))
                .unwrap();
        let (forged, _) = other
            .issue(
                &Viewer {
                    role: Role::Admin,
                    ..asha()
                },
                Utc::now(),
            )
            .unwrap();
        assert_eq!(
            viewer(&auth, Some(&format!("Bearer {forged}"))),
            Err(AuthError::Invalid)
        );
        let mut tampered = token.clone();
        tampered.push('x');
        assert_eq!(
            viewer(&auth, Some(&format!("Bearer {tampered}"))),
            Err(AuthError::Invalid)
        );
        assert_eq!(viewer(&auth, None), Err(AuthError::Missing));
        assert_eq!(viewer(&auth, Some("Basic abc")), Err(AuthError::Missing));
        assert_eq!(
            viewer(&auth, Some("Bearer admin-token")).unwrap().role,
            Role::Admin
        );
    }

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "wrong horse"));
        assert!(!verify_password("not a hash", "x"));
    }
}
