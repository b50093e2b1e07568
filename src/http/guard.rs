//! What every request holds while it runs, and the bounds on it: its body must arrive at a minimum rate after
//! a grace period (a client that announces a large body and sends it slowly, or not at all, is answered `408`
//! and disconnected); the bytes of all bodies being held at once fit a budget (past it, `503 server_busy`);
//! and a signed-in user has at most so many requests in flight (`MAX_REQUESTS_IN_FLIGHT_PER_USER`:
//! [`Held::user`], taken by [`super::extract::AuthenticatedUser`] once it knows the user).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use crate::domain::error_code::{Code, Coded};
use crate::domain::user::UserId;
use crate::services::in_flight::{InFlight, Permit};
use crate::sync;

/// The body bounds, from `BODY_READ_GRACE_SECS`, `BODY_MIN_BYTES_PER_SEC` and `MAX_BODY_BYTES_IN_FLIGHT`.
#[derive(Clone)]
pub struct Guard {
    pub grace: Duration,
    pub min_bytes_per_sec: u64,
    /// Bytes of request bodies held at once, in permits of one byte.
    pub body_budget: Arc<Semaphore>,
}

/// Why a body could not be read; found again in the body extractors' rejections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyRefused {
    #[error("the request body arrived too slowly")]
    TooSlow,
    #[error("too many request bytes are held at once")]
    Busy,
}

impl Coded for BodyRefused {
    fn code(&self) -> Code {
        match self {
            BodyRefused::TooSlow => Code::BodyTimeout,
            BodyRefused::Busy => Code::ServerBusy,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        (*self == BodyRefused::Busy).then_some(Duration::from_secs(1))
    }
}

/// A request's permits: the body bytes it holds, and its place among its user's requests in flight.
#[derive(Default)]
pub struct Held {
    body: Mutex<Option<OwnedSemaphorePermit>>,
    user: Mutex<Option<Permit<UserId>>>,
}

impl Held {
    /// Counts this request among `user`'s in `requests`, unless they have as many in flight as they may.
    pub fn user(&self, requests: &Arc<InFlight<UserId>>, user: UserId) -> Result<(), u32> {
        let permit = requests.try_acquire(&user).ok_or(requests.cap())?;
        *sync::lock(&self.user) = Some(permit);
        Ok(())
    }

    fn body_bytes(&self, permit: OwnedSemaphorePermit) {
        let mut held = sync::lock(&self.body);
        match held.as_mut() {
            Some(bytes) => bytes.merge(permit),
            None => *held = Some(permit),
        }
    }
}

impl<S> Layer<S> for Guard {
    type Service = Guarding<S>;

    fn layer(&self, inner: S) -> Guarding<S> {
        Guarding { inner, guard: self.clone() }
    }
}

/// Wraps each request's body, and holds the request's permits until its response is made. A layer of its own
/// rather than `middleware::from_fn`, which boxes a future and clones the inner service on every request.
#[derive(Clone)]
pub struct Guarding<S> {
    inner: S,
    guard: Guard,
}

impl<S> Service<Request> for Guarding<S>
where
    S: Service<Request>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Holding<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let held = Arc::new(Held::default());
        request.extensions_mut().insert(Arc::clone(&held));
        let guard = self.guard.clone();
        let request = request.map(|body| {
            Body::new(Guarded {
                inner: body,
                started: None,
                received: 0,
                deadline: None,
                guard,
                held: Arc::clone(&held),
            })
        });
        Holding { inner: self.inner.call(request), held: Some(held) }
    }
}

pin_project! {
    /// The response on its way, and the request's permits until it is made.
    pub struct Holding<F> {
        #[pin]
        inner: F,
        held: Option<Arc<Held>>,
    }
}

impl<F: Future> Future for Holding<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx));
        this.held.take();
        Poll::Ready(response)
    }
}

struct Guarded {
    inner: Body,
    /// When the body was first read (a handler may check the caller first).
    started: Option<Instant>,
    received: u64,
    /// Armed only once the body keeps a reader waiting: most bodies arrive with their headers.
    deadline: Option<Pin<Box<Sleep>>>,
    guard: Guard,
    held: Arc<Held>,
}

impl Guarded {
    /// The grace period, plus as long as the bytes so far may take at the minimum rate.
    fn due(&self, started: Instant) -> Instant {
        let allowance = self.received as f64 / self.guard.min_bytes_per_sec.max(1) as f64;
        started + self.guard.grace + Duration::from_secs_f64(allowance)
    }
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let started = *this.started.get_or_insert_with(Instant::now);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref().filter(|d| !d.is_empty()) {
                    let Ok(permit) = Arc::clone(&this.guard.body_budget)
                        .try_acquire_many_owned(u32::try_from(data.len()).unwrap_or(u32::MAX))
                    else {
                        return Poll::Ready(Some(Err(axum::Error::new(BodyRefused::Busy))));
                    };
                    this.held.body_bytes(permit);
                    this.received += data.len() as u64;
                    let due = this.due(started);
                    if let Some(deadline) = this.deadline.as_mut() {
                        deadline.as_mut().reset(due);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                let due = this.due(started);
                let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyRefused::TooSlow)))),
                    Poll::Pending => Poll::Pending,
                }
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The guard's refusal behind a body error, if it was one.
pub fn refusal(error: &(dyn std::error::Error + 'static)) -> Option<BodyRefused> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(refused) = error.downcast_ref::<BodyRefused>() {
            return Some(*refused);
        }
        cause = error.source();
    }
    None
}
