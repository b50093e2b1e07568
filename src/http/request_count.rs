//! Counts every answer by route template (never the raw path), status and error code.
//!
//! A layer of its own rather than `middleware::from_fn`, which boxes a future and clones the inner service on
//! every request: on the gateway's path those were a few percent of its CPU.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::error::ErrorCode;
use crate::metrics;

/// Wraps every route (it reads the route template axum matched, so it sits inside the router).
#[derive(Debug, Clone, Copy, Default)]
pub struct CountRequestsLayer;

impl<S> Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;

    fn layer(&self, inner: S) -> CountRequests<S> {
        CountRequests { inner }
    }
}

#[derive(Debug, Clone)]
pub struct CountRequests<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for CountRequests<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        Counted { inner: self.inner.call(request), route, started: Instant::now() }
    }
}

pin_project! {
    /// The route's answer, counted when it is ready.
    pub struct Counted<F> {
        #[pin]
        inner: F,
        route: Option<MatchedPath>,
        started: Instant,
    }
}

impl<F, R, E> Future for Counted<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let answer = ready!(this.inner.poll(cx));
        if let Ok(response) = &answer {
            let code = match response.extensions().get::<ErrorCode>() {
                Some(ErrorCode(code)) => code,
                None if response.status().is_success() => "ok",
                None => "other",
            };
            let route = this.route.as_ref().map_or("<unmatched>", MatchedPath::as_str);
            metrics::http_request(route, response.status().as_u16(), code, this.started.elapsed());
        }
        Poll::Ready(answer)
    }
}
