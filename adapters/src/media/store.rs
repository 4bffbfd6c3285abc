//! The object store media is kept in: a folder on the local filesystem (the embedded default)
//! or any S3-compatible service, through the `object_store` crate. Bytes are streamed in and
//! out, hashed on the way in, and never held whole in memory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};

use super::link::LinkSigner;

/// Objects smaller than this are written in one request; larger ones in parts of this size.
const PART: usize = 5 * 1024 * 1024;
/// How many bytes of the start of an object are kept to tell its type.
pub const HEAD: usize = 512;

/// Where media is kept, as `MEDIA_STORE_URL` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `file://PATH`: a folder on this machine.
    Local(PathBuf),
    /// `s3://BUCKET[/PREFIX]`: endpoint, region and credentials from the `AWS_*` variables.
    S3 { bucket: String, prefix: String },
}

impl StoreUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err("MEDIA_STORE_URL file:// needs a folder, e.g. file://./chatledger-media or file:///var/lib/chatledger/media".into());
            }
            return Ok(StoreUrl::Local(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(
                    "MEDIA_STORE_URL s3:// needs a bucket, e.g. s3://chatledger-media".into(),
                );
            }
            return Ok(StoreUrl::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        Err(format!(
            "MEDIA_STORE_URL must start with file:// or s3://, not {:?}",
            url.split(':').next().unwrap_or_default()
        ))
    }
}

/// Why bytes could not be kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeepError {
    /// More bytes than the limit allows (the limit in words).
    #[error("the file is larger than WhatsApp allows ({0})")]
    TooLarge(String),
    /// The first bytes were refused by the caller's check (why).
    #[error("{0}")]
    Refused(String),
    /// The bytes stopped coming (the source failed).
    #[error("reading the file failed: {0}")]
    Source(String),
    /// The store refused or could not be reached.
    #[error("the object store failed: {0}")]
    Store(String),
}

/// What was kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub key: String,
    /// Hex.
    pub sha256: String,
    pub size: u64,
    /// The first bytes, to tell the type by.
    pub head: Vec<u8>,
}

/// A short-lived link to an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// A presigned URL of the S3 service: complete.
    Presigned(String),
    /// A token for chatledger's own download route, `GET /api/media/{token}`.
    Route(String),
}

/// The object store.
#[derive(Clone)]
pub struct MediaStore {
    objects: Arc<dyn ObjectStore>,
    /// The S3 client again, for presigned links (`None` on the filesystem).
    s3: Option<Arc<AmazonS3>>,
    /// Prefix of every key (S3: the URL's path).
    prefix: String,
    links: LinkSigner,
    /// Signs the references uploads are sent by.
    refs: LinkSigner,
    describe: String,
}

impl std::fmt::Debug for MediaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MediaStore({})", self.describe)
    }
}

impl MediaStore {
    /// Opens the store `url` names. S3 reads `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT`),
    /// `AWS_REGION` (or `AWS_DEFAULT_REGION`), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
    /// and `AWS_SESSION_TOKEN` through `env`. `link_secret` signs the filesystem's download
    /// links.
    pub fn open(
        url: &StoreUrl,
        env: &dyn Fn(&str) -> Option<String>,
        link_secret: &[u8],
    ) -> Result<Self, String> {
        let links = LinkSigner::new(link_secret, "download links");
        let refs = LinkSigner::new(link_secret, "upload references");
        match url {
            StoreUrl::Local(path) => {
                std::fs::create_dir_all(path).map_err(|e| {
                    format!("cannot create the media folder {}: {e}", path.display())
                })?;
                let local = LocalFileSystem::new_with_prefix(path)
                    .map_err(|e| format!("cannot use the media folder {}: {e}", path.display()))?
                    .with_automatic_cleanup(true);
                Ok(MediaStore {
                    objects: Arc::new(local),
                    s3: None,
                    prefix: String::new(),
                    links,
                    refs,
                    describe: format!("file://{}", path.display()),
                })
            }
            StoreUrl::S3 { bucket, prefix } => {
                let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
                let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
                let endpoint = set("AWS_ENDPOINT_URL_S3")
                    .or_else(|| set("AWS_ENDPOINT_URL"))
                    .or_else(|| set("AWS_ENDPOINT"));
                if let Some(endpoint) = &endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                builder = builder.with_region(
                    set("AWS_REGION")
                        .or_else(|| set("AWS_DEFAULT_REGION"))
                        .unwrap_or_else(|| "us-east-1".into()),
                );
                if let Some(id) = set("AWS_ACCESS_KEY_ID") {
                    builder = builder.with_access_key_id(id);
                }
                if let Some(secret) = set("AWS_SECRET_ACCESS_KEY") {
                    builder = builder.with_secret_access_key(secret);
                }
                if let Some(token) = set("AWS_SESSION_TOKEN") {
                    builder = builder.with_token(token);
                }
                if set("AWS_VIRTUAL_HOSTED_STYLE_REQUEST").as_deref() == Some("true") {
                    builder = builder.with_virtual_hosted_style_request(true);
                }
                let s3 = Arc::new(
                    builder
                        .build()
                        .map_err(|e| format!("cannot use S3 bucket {bucket}: {e}"))?,
                );
                Ok(MediaStore {
                    objects: s3.clone(),
                    s3: Some(s3),
                    prefix: prefix.clone(),
                    links,
                    refs,
                    describe: format!(
                        "s3://{bucket}/{prefix}{}",
                        endpoint.map(|e| format!(" at {e}")).unwrap_or_default()
                    ),
                })
            }
        }
    }

    /// Where it is, for logs (never credentials).
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Whether links are presigned by the store (S3) rather than served by chatledger.
    pub fn presigns(&self) -> bool {
        self.s3.is_some()
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    /// Streams `body` into the store under `folder`, content-addressed
    /// (`{folder}/{sha256}`), refusing more than `limit` bytes (`limit_words` says the limit)
    /// and whatever `check_head` refuses once the first bytes are in. A refused or failed
    /// write leaves nothing behind.
    pub async fn keep<S, E>(
        &self,
        folder: &str,
        body: S,
        limit: (u64, &str),
        check_head: impl FnOnce(&[u8]) -> Result<(), String>,
    ) -> Result<Kept, KeepError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let mut body = std::pin::pin!(body);
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut head: Vec<u8> = Vec::with_capacity(HEAD);
        let mut check = Some(check_head);
        let mut buffered: Vec<Bytes> = Vec::new();
        let mut buffered_len = 0usize;
        // Once more than one part has come, the bytes go to a staging object in parts.
        let mut staging: Option<(ObjectPath, WriteMultipart)> = None;
        let result: Result<(), KeepError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| KeepError::Source(e.to_string()))?;
                size += chunk.len() as u64;
                if size > limit.0 {
                    return Err(KeepError::TooLarge(limit.1.to_owned()));
                }
                hasher.update(&chunk);
                if head.len() < HEAD {
                    let take = (HEAD - head.len()).min(chunk.len());
                    head.extend_from_slice(&chunk[..take]);
                    if head.len() == HEAD {
                        if let Some(check) = check.take() {
                            check(&head).map_err(KeepError::Refused)?;
                        }
                    }
                }
                match staging.as_mut() {
                    Some((_, upload)) => {
                        upload
                            .wait_for_capacity(2)
                            .await
                            .map_err(|e| KeepError::Store(e.to_string()))?;
                        upload.put(chunk);
                    }
                    None => {
                        buffered_len += chunk.len();
                        buffered.push(chunk);
                        if buffered_len > PART {
                            let path = self.path(&format!(
                                "{folder}/incoming-{}",
                                uuid::Uuid::new_v4().simple()
                            ));
                            let upload = self
                                .objects
                                .put_multipart(&path)
                                .await
                                .map_err(|e| KeepError::Store(e.to_string()))?;
                            let mut upload = WriteMultipart::new_with_chunk_size(upload, PART);
                            for chunk in buffered.drain(..) {
                                upload.put(chunk);
                            }
                            staging = Some((path, upload));
                        }
                    }
                }
            }
            if let Some(check) = check.take() {
                check(&head).map_err(KeepError::Refused)?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            if let Some((_, upload)) = staging {
                let _ = upload.abort().await;
            }
            return Err(e);
        }
        let sha256 = hex::encode(hasher.finalize());
        let key = format!("{folder}/{sha256}");
        let target = self.path(&key);
        match staging {
            None => {
                let payload: PutPayload = buffered.into_iter().collect();
                self.objects
                    .put(&target, payload)
                    .await
                    .map_err(|e| KeepError::Store(e.to_string()))?;
            }
            Some((path, upload)) => {
                upload
                    .finish()
                    .await
                    .map_err(|e| KeepError::Store(e.to_string()))?;
                if let Err(e) = self.objects.rename(&path, &target).await {
                    let _ = self.objects.delete(&path).await;
                    return Err(KeepError::Store(e.to_string()));
                }
            }
        }
        Ok(Kept {
            key,
            sha256,
            size,
            head,
        })
    }

    /// Puts `bytes` under `folder`, content-addressed (an archived webhook body: a
    /// redelivery is the same object); the key.
    pub async fn put_addressed(&self, folder: &str, bytes: Vec<u8>) -> Result<String, String> {
        let key = format!("{folder}/{}", hex::encode(Sha256::digest(&bytes)));
        self.objects
            .put(&self.path(&key), PutPayload::from(bytes))
            .await
            .map_err(|e| e.to_string())?;
        Ok(key)
    }

    /// The object at `key`, streamed, with its size; `None` when there is none.
    pub async fn get(
        &self,
        key: &str,
    ) -> Result<
        Option<(
            u64,
            futures_util::stream::BoxStream<'static, Result<Bytes, String>>,
        )>,
        String,
    > {
        match self.objects.get(&self.path(key)).await {
            Ok(found) => {
                let size = found.meta.size;
                let stream = found.into_stream().map(|r| r.map_err(|e| e.to_string()));
                Ok(Some((size, stream.boxed())))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Copies the object at `from` to `to` (an upload into the conversation it is sent in).
    pub async fn copy(&self, from: &str, to: &str) -> Result<(), String> {
        self.objects
            .copy(&self.path(from), &self.path(to))
            .await
            .map_err(|e| e.to_string())
    }

    /// Whether an object is at `key`.
    pub async fn exists(&self, key: &str) -> Result<bool, String> {
        match self.objects.head(&self.path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The keys under `folder`.
    pub async fn list(&self, folder: &str) -> Result<Vec<String>, String> {
        let prefix = self.path(folder);
        let mut keys = Vec::new();
        let mut listing = self.objects.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| e.to_string())?;
            let full = meta.location.to_string();
            let key = if self.prefix.is_empty() {
                full
            } else {
                full.strip_prefix(&format!("{}/", self.prefix))
                    .unwrap_or(&full)
                    .to_owned()
            };
            keys.push(key);
        }
        Ok(keys)
    }

    /// The folders at the top of the store whose names end with `suffix` (the conversations
    /// of one customer: `conversation-{channel}-{customer}`).
    pub async fn folders_ending(&self, suffix: &str) -> Result<Vec<String>, String> {
        let root = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let listing = self
            .objects
            .list_with_delimiter(root.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .filter(|name| name.ends_with(suffix))
            .collect())
    }

    /// Deletes every object under `folder`; how many there were.
    pub async fn delete_folder(&self, folder: &str) -> Result<usize, String> {
        let keys = self.list(folder).await?;
        for key in &keys {
            match self.objects.delete(&self.path(key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(keys.len())
    }

    /// A link to the object at `key` that works for `ttl`: presigned by S3, or a signed token
    /// for chatledger's own route, which serves it as `mime`.
    pub async fn link(&self, key: &str, ttl: Duration, mime: Option<&str>) -> Result<Link, String> {
        match &self.s3 {
            Some(s3) => s3
                .signed_url(reqwest::Method::GET, &self.path(key), ttl)
                .await
                .map(|url| Link::Presigned(url.to_string()))
                .map_err(|e| e.to_string()),
            None => Ok(Link::Route(self.links.sign(
                key,
                mime.unwrap_or("application/octet-stream"),
                ttl,
            ))),
        }
    }

    /// The key a download token names and the type to serve it as, if the token is ours,
    /// unaltered and not expired.
    pub fn open_token(&self, token: &str) -> Result<(String, String), super::link::LinkError> {
        self.links.open(token)
    }

    /// A reference to an upload, to send it by (`sendMedia`): what was kept, signed, for a
    /// day.
    pub fn upload_ref(&self, media: &chatledger_core::media::StoredMedia) -> String {
        let described = serde_json::to_string(media).unwrap_or_default();
        self.refs
            .sign(&described, "upload", Duration::from_secs(24 * 3600))
    }

    /// What an upload reference names, if it is ours, unaltered and not expired.
    pub fn open_upload_ref(
        &self,
        reference: &str,
    ) -> Result<chatledger_core::media::StoredMedia, super::link::LinkError> {
        let (described, _) = self.refs.open(reference)?;
        serde_json::from_str(&described).map_err(|_| super::link::LinkError::Invalid)
    }
}
