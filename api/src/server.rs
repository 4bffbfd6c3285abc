//! The whole server as one function, so that the binary and the tests start the same thing.

use std::future::Future;

use tokio::net::TcpListener;

pub use crate::settings::{rating_template, seal_policy, Settings};
pub use crate::state::AppState;

/// Serves HTTP on `listener` until `shutdown` completes, then finishes the requests in flight.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.limits.clone();
    let router = crate::http::router(state);
    crate::http::listen::serve(listener, router, &limits, shutdown).await
}
