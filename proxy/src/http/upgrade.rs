//! Upgrades (WebSocket) and CONNECT tunnels: when the upstream accepts (101, or 2xx to CONNECT),
//! both sides' connections are handed over and joined byte for byte.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Method, Request, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::debug;

use crate::drain::{Drain, Watch};
use crate::http::hop_by_hop::{is_upgrade_request, is_upgrade_response};

#[derive(Clone, Debug)]
pub struct UpgradeLayer {
    drain: Drain,
}

impl UpgradeLayer {
    /// Tunnels hold a drain watch so shutdown waits for them like for any connection.
    pub fn new(drain: Drain) -> Self {
        UpgradeLayer { drain }
    }
}

impl<S> Layer<S> for UpgradeLayer {
    type Service = Upgrade<S>;

    fn layer(&self, inner: S) -> Upgrade<S> {
        Upgrade {
            inner,
            drain: self.drain.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Upgrade<S> {
    inner: S,
    drain: Drain,
}

impl<S, B, RB> Service<Request<B>> for Upgrade<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = UpgradeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let downstream = if is_upgrade_request(&req) {
            let connect = req.method() == Method::CONNECT;
            Some((hyper::upgrade::on(&mut req), connect, self.drain.watch()))
        } else {
            None
        };
        UpgradeFuture {
            inner: self.inner.call(req),
            downstream,
        }
    }
}

pin_project! {
    pub struct UpgradeFuture<F> {
        #[pin]
        inner: F,
        downstream: Option<(OnUpgrade, bool, Watch)>,
    }
}

impl<F, RB, E> Future for UpgradeFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = ready!(this.inner.poll(cx))?;
        if let Some((downstream, connect, watch)) = this.downstream.take()
            && is_upgrade_response(resp.status(), connect)
        {
            let upstream = hyper::upgrade::on(&mut resp);
            tokio::spawn(tunnel(downstream, upstream, watch));
        }
        Poll::Ready(Ok(resp))
    }
}

async fn tunnel(downstream: OnUpgrade, upstream: OnUpgrade, _watch: Watch) {
    let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(err) => {
            debug!(error = %err, "upgrade did not complete");
            return;
        }
    };
    let mut downstream = TokioIo::new(downstream);
    let mut upstream = TokioIo::new(upstream);
    match tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
        Ok((up, down)) => debug!(to_upstream = up, to_client = down, "tunnel closed"),
        Err(err) => debug!(error = %err, "tunnel ended with an error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::ServiceExt;

    #[tokio::test]
    async fn ordinary_requests_pass_and_take_no_watch() {
        let drain = Drain::new();
        let inner =
            tower::service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
        let resp = UpgradeLayer::new(drain.clone())
            .layer(inner)
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(resp.status(), http::StatusCode::OK);
        // No tunnel was started, so nothing holds the drain open.
        assert_eq!(
            drain.finish(std::time::Duration::from_millis(1)).await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn refused_upgrade_starts_no_tunnel() {
        let drain = Drain::new();
        let inner = tower::service_fn(|_req: Request<()>| async {
            let mut resp = Response::new(());
            *resp.status_mut() = http::StatusCode::BAD_REQUEST;
            Ok::<_, Infallible>(resp)
        });
        let req = Request::get("/")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        let resp = UpgradeLayer::new(drain.clone())
            .layer(inner)
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(resp.status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(
            drain.finish(std::time::Duration::from_millis(1)).await,
            Ok(())
        );
    }
}
