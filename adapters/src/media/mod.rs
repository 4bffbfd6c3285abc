//! Media: the object store, download links, and fetching inbound attachments from providers.
//!
//! - [`store`]: [`MediaStore`], the local filesystem or any S3-compatible service
//!   (`MEDIA_STORE_URL`), streamed in and out, content-addressed.
//! - [`link`]: signed, expiring download tokens for the filesystem store's route.
//! - [`fetch`]: [`HttpMediaFetcher`], the core's `MediaFetcher` port over each provider's
//!   media API.

pub mod fetch;
pub mod link;
pub mod store;

pub use fetch::{HttpMediaFetcher, MediaApi, MediaApis};
pub use link::{LinkError, LinkSigner};
pub use store::{KeepError, Kept, Link, MediaStore, StoreUrl};
