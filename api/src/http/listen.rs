//! Accepting connections, within bounds.
//!
//! axum's own `serve` keeps every connection as long as the client likes: a client that sends
//! its headers a byte a minute, or opens a connection and says nothing, holds a socket for
//! good, and a thousand of them exhaust the process's file descriptors. Here:
//!
//! - at most `HTTP_MAX_CONNECTIONS` connections are served at once; the next waits in the
//!   kernel's accept queue until one closes;
//! - a request's headers must arrive within `HTTP_HEADER_TIMEOUT_SECONDS`, and a kept-alive
//!   connection idle that long is closed (hyper's header timer runs while it waits for the
//!   next request);
//! - a request's body must arrive, whole, within `HTTP_BODY_TIMEOUT_SECONDS` of its headers
//!   ([`SlowBody`], a 408 from `read_body`);
//! - an accept that fails (out of file descriptors, say) is retried after a pause that grows
//!   to a second, never in a tight loop;
//! - a response sent before its request's body was read to the end (refused as too large,
//!   too slow, or unread) says `Connection: close`, so that a client does not send its next
//!   request on a connection the server is about to drop;
//! - each request carries the client's address ([`axum::extract::ConnectInfo`]).
//!
//! Shutdown stops accepting, lets connections finish the requests they are serving, and
//! returns when all have closed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue};
use axum::Router;
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use crate::limits::Limits;

/// Serves `router` on `listener` until `shutdown` completes, then waits for open connections
/// to finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Dropped at shutdown: every connection then finishes gracefully.
    let (stop, stopping) = watch::channel(());
    let (closed, mut all_closed) = watch::channel(());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut pause = Duration::from_millis(10);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    pause = Duration::from_millis(10);
                    accepted
                }
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, retry_in_ms = pause.as_millis() as u64,
                        "accepting a connection failed; pausing before the next");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let body_timeout = limits.body_timeout;
        let router = router.clone();
        let service = tower::service_fn(move |mut request: axum::http::Request<Incoming>| {
            let router = router.clone();
            async move {
                request.extensions_mut().insert(ConnectInfo(remote));
                let read = Arc::new(AtomicBool::new(request.body().is_end_stream()));
                // A file an executive uploads may take longer than a webhook.
                let timeout = if request.uri().path() == "/api/media" {
                    body_timeout.max(super::media::UPLOAD_BODY_TIMEOUT)
                } else {
                    body_timeout
                };
                let request = request
                    .map(|body| axum::body::Body::new(Deadline::new(body, timeout, read.clone())));
                let mut response = router.oneshot(request).await?;
                if !read.load(Ordering::Acquire) {
                    // Answered before the body was read (too large, too slow, refused
                    // unread): the rest of it must not be taken for the next request.
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let connection = http
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        let mut stopping = stopping.clone();
        let closed = closed.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.as_mut().await;
                }
            }
            drop(slot);
            drop(closed);
        });
    }
    drop(listener);
    drop(stop);
    drop(closed);
    // Returns once every connection task has dropped its handle.
    let _ = all_closed.changed().await;
    Ok(())
}

/// A request body that must arrive whole before its deadline; past it, reading fails with
/// [`SlowBody`]. (A timeout per frame would let a client send a byte every few seconds for
/// ever.) `read` turns true once the body has been read to its end.
struct Deadline<B> {
    body: B,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    read: Arc<AtomicBool>,
}

impl<B> Deadline<B> {
    fn new(body: B, timeout: Duration, read: Arc<AtomicBool>) -> Self {
        Deadline {
            body,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            read,
        }
    }
}

/// The body did not arrive within `HTTP_BODY_TIMEOUT_SECONDS`.
#[derive(Debug)]
pub struct SlowBody;

impl std::fmt::Display for SlowBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for SlowBody {}

impl<B> hyper::body::Body for Deadline<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut self.body).poll_frame(cx) {
            if frame.is_none() || self.body.is_end_stream() {
                self.read.store(true, Ordering::Release);
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(SlowBody)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The client's address of a request served by [`serve`].
pub fn client_address(extensions: &axum::http::Extensions) -> Option<std::net::IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
