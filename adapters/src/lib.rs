//! chatledger-adapters: the outside world behind chatledger-core's ports.
//!
//! # Layout
//!
//! - [`sqlite`]: the embedded event store (the default), one writer thread with group commit;
//!   the key store beside it writes through the same thread.
//! - [`postgres`]: the shared production event store, safe with many writing processes, and
//!   its key store.
//! - `append`: the backend-neutral half of an append (duplicates, expected version, hash
//!   chain), so both stores decide exactly alike and differ only in SQL.
//! - `follow`: following the log live, woken on commit, for both stores.
//! - `rows`: stored rows back into events; database errors into store errors.
//! - `keys`: how both stores keep the keys that seal personal data (`subject_keys`).
//! - [`genesys`]: Genesys Cloud Open Messaging over HTTP: tokens per tenant, customers'
//!   messages to agents, the webhook signature.
//! - [`media`]: the object store media is kept in (filesystem or S3), download links, and
//!   fetching inbound attachments from providers.
//! - [`personal`]: customers' personal data sealed in the log per conversation key, and
//!   forgotten by destroying the key; [`secrets`]: tokens and PINs sealed under
//!   `CHATLEDGER_SECRETS_KEY`, with key ids for rotation.
//! - [`whatsapp`]: provider payloads into normalised messages and receipts, signatures,
//!   phone numbers.
//! - [`StoreLocation`]: which store a `DATABASE_URL` names.

mod append;
mod follow;
pub mod genesys;
mod keys;
pub mod media;
pub mod personal;
pub mod postgres;
mod rows;
pub mod secrets;
pub mod sqlite;
pub mod whatsapp;

use std::path::PathBuf;

pub use postgres::PostgresStore;

/// What a store's writer has done since it was opened, shared with its writer task.
#[derive(Debug, Default)]
struct Counts {
    commits: std::sync::atomic::AtomicU64,
    requests: std::sync::atomic::AtomicU64,
}

impl Counts {
    /// One transaction that wrote `requests` requests.
    fn add(&self, requests: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.commits.fetch_add(1, Relaxed);
        self.requests.fetch_add(requests as u64, Relaxed);
    }

    fn get(&self) -> WriterCounts {
        use std::sync::atomic::Ordering::Relaxed;
        WriterCounts {
            commits: self.commits.load(Relaxed),
            requests: self.requests.load(Relaxed),
        }
    }
}

/// How much group commit is grouping: requests (appends, and keys on SQLite) written, and the
/// transactions that wrote them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterCounts {
    pub commits: u64,
    pub requests: u64,
}
pub use sqlite::SqliteStore;

/// The database file used when no `DATABASE_URL` is given, in the working directory.
pub const DEFAULT_SQLITE_FILE: &str = "chatledger.db";

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The configuration itself is wrong (an unknown URL scheme, an unparsable URL).
    #[error("{0}")]
    Invalid(String),
    /// The file exists but is not a usable SQLite database.
    #[error("{path} is not a usable SQLite database: {reason}")]
    NotADatabase { path: String, reason: String },
    /// The database holds another application's tables; chatledger will not touch it.
    #[error("{location} already holds tables that are not chatledger's ({}); refusing to use it", tables.join(", "))]
    Foreign {
        location: String,
        tables: Vec<String>,
    },
    /// The server could not be reached (it may come up later).
    #[error("cannot reach {location}: {reason}")]
    Unreachable { location: String, reason: String },
    /// The migrations could not be applied.
    #[error("applying the database migrations failed: {0}")]
    Migrate(String),
}

/// Which event store a `DATABASE_URL` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite file (`sqlite://PATH`, `sqlite:PATH`; the default when no URL is set).
    Sqlite(PathBuf),
    /// A PostgreSQL server (`postgres://…`, `postgresql://…`).
    Postgres(String),
}

impl StoreLocation {
    /// Reads a `DATABASE_URL`; `None` or an empty string mean the default SQLite file.
    pub fn from_database_url(url: Option<&str>) -> Result<Self, OpenError> {
        let url = match url.map(str::trim) {
            None | Some("") => {
                return Ok(StoreLocation::Sqlite(PathBuf::from(DEFAULT_SQLITE_FILE)))
            }
            Some(url) => url,
        };
        let Some((scheme, rest)) = url.split_once(':') else {
            return Err(OpenError::Invalid(format!(
                "DATABASE_URL {:?} has no scheme; use sqlite://PATH or postgres://USER@HOST:PORT/DATABASE",
                redact_url(url)
            )));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => {
                let path = rest.strip_prefix("//").unwrap_or(rest);
                let path = path.split('?').next().unwrap_or_default();
                if path.is_empty() {
                    return Err(OpenError::Invalid("DATABASE_URL sqlite:// names no file".into()));
                }
                Ok(StoreLocation::Sqlite(PathBuf::from(path)))
            }
            "postgres" | "postgresql" => Ok(StoreLocation::Postgres(url.to_owned())),
            other => Err(OpenError::Invalid(format!(
                "DATABASE_URL has an unknown scheme {other:?}; chatledger stores its log in sqlite://PATH or postgres://USER@HOST:PORT/DATABASE"
            ))),
        }
    }

    /// A description safe to log: the file, or the server URL without its password.
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::Sqlite(path) => format!("SQLite file {}", path.display()),
            StoreLocation::Postgres(url) => format!("PostgreSQL {}", redact_url(url)),
        }
    }
}

/// `url` with any password replaced by `***`, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            StoreLocation::from_database_url(None).unwrap(),
            StoreLocation::Sqlite("chatledger.db".into())
        );
        assert_eq!(
            StoreLocation::from_database_url(Some("")).unwrap(),
            StoreLocation::Sqlite("chatledger.db".into())
        );
        assert_eq!(
            StoreLocation::from_database_url(Some("sqlite://data/x.db")).unwrap(),
            StoreLocation::Sqlite("data/x.db".into())
        );
        assert_eq!(
            StoreLocation::from_database_url(Some("sqlite:///var/lib/x.db?mode=rwc")).unwrap(),
            StoreLocation::Sqlite("/var/lib/x.db".into())
        );
        assert!(matches!(
            StoreLocation::from_database_url(Some("postgresql://u@h/db")).unwrap(),
            StoreLocation::Postgres(_)
        ));
        let err = StoreLocation::from_database_url(Some("mysql://root:pw@h/db"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown scheme \"mysql\""), "{err}");
        assert!(!err.contains("pw"), "{err}");
    }

    #[test]
    fn passwords_never_survive_redaction() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/chat"),
            "postgres://app:***@db:5432/chat"
        );
        assert_eq!(
            redact_url("postgres://app@db/chat?password=s3cret&sslmode=require"),
            "postgres://app@db/chat?password=***&sslmode=require"
        );
        assert_eq!(redact_url("postgres://db/chat"), "postgres://db/chat");
    }
}
