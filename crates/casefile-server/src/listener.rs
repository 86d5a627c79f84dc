//! The accept loop: TLS (or plain HTTP) connections, each bounded in time, and a cap on
//! how many are served at once (issue 9 item 14: slow or silent clients must not hold
//! the server's file descriptors).
//!
//! Per connection: a TLS handshake timeout; then an [`TimedIo`] below TLS that closes a
//! connection silent between requests (idle timeout), one whose request header does
//! not complete in time from its first byte (header-read timeout), and one whose client
//! stops reading a response (write stall). A request body that stalls is cut off per
//! read by [`tower_http::timeout::TimeoutBody`], so a slow but moving upload is never
//! cut by a total.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

use crate::config::ConnectionConfig;
use crate::proxy::TrustedProxies;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub handshake: Duration,
    pub header_read: Duration,
    pub idle: Duration,
    pub body: Duration,
}

impl From<&ConnectionConfig> for Limits {
    fn from(c: &ConnectionConfig) -> Self {
        let secs = |s: u64| Duration::from_secs(s.max(1));
        Self {
            max_connections: c.max_connections.max(1),
            handshake: secs(c.tls_handshake_timeout_seconds),
            header_read: secs(c.header_read_timeout_seconds),
            idle: secs(c.idle_timeout_seconds),
            body: secs(c.body_timeout_seconds),
        }
    }
}

/// What the loop serves.
pub struct Serving<S> {
    pub app: S,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub limits: Limits,
    pub proxies: Arc<TrustedProxies>,
}

/// How the loop stops once `shutdown` resolves.
pub struct Drain {
    /// Called once the listener is closed, before open connections are drained (the
    /// server answers parked agent polls there).
    pub on_stop: Box<dyn FnOnce() + Send>,
    /// How long requests in flight may still run; connections still busy then are cut.
    pub grace: Duration,
}

/// Accepts until `shutdown`, then stops accepting, lets open connections finish their
/// requests for up to `drain.grace` and cuts the rest. Returns how many were cut.
pub async fn run<S>(
    listener: TcpListener,
    serving: Serving<S>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Drain,
) -> io::Result<usize>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let serving = Arc::new(serving);
    let slots = Arc::new(Semaphore::new(serving.limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let refused = Arc::new(RefusalLog::default());
    // Every connection's task, so that those still busy after the grace period can be cut
    // (their handlers dropped: staged uploads removed) before `run` returns.
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Finished connections leave the set as they end, so it holds only live ones.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            refused.note(serving.limits.max_connections);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let serving = serving.clone();
        let watcher = graceful.watcher();
        connections.spawn(async move {
            let _slot = slot;
            let activity = Arc::new(Activity::default());
            let io = TimedIo::new(stream, activity.clone(), serving.limits);
            match &serving.tls {
                Some(acceptor) => match tokio::time::timeout(serving.limits.handshake, acceptor.accept(io)).await {
                    Ok(Ok(tls)) => serve_connection(tls, peer, "https", activity, &serving, watcher).await,
                    Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
                None => serve_connection(io, peer, "http", activity, &serving, watcher).await,
            }
        });
    }
    drop(listener);
    (drain.on_stop)();
    while connections.try_join_next().is_some() {}
    let open = connections.len();
    tracing::info!(open_connections = open, grace_seconds = drain.grace.as_secs(), "stopping: draining connections");
    // Idle keep-alive connections close at once; busy ones after their current request.
    if tokio::time::timeout(drain.grace, graceful.shutdown()).await.is_ok() {
        // Handshakes still running hold no watcher yet: they end with their timeout.
        connections.shutdown().await;
        return Ok(0);
    }
    let cut = connections.len();
    tracing::warn!(cut, "grace period over: cutting the connections still busy");
    connections.shutdown().await;
    Ok(cut)
}

async fn serve_connection<I, S>(
    io: I,
    peer: SocketAddr,
    scheme: &'static str,
    activity: Arc<Activity>,
    serving: &Serving<S>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let app = serving.app.clone();
    let proxies = serving.proxies.clone();
    let body_timeout = serving.limits.body;
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let busy = activity.begin();
        let (mut parts, body) = request.into_parts();
        let (client, origin) = proxies.resolve(peer, scheme, &mut parts.headers);
        detach_head(&mut parts);
        parts.extensions.insert(ConnectInfo(client));
        parts.extensions.insert(origin);
        let body = Body::new(tower_http::timeout::TimeoutBody::new(body_timeout, body));
        let call = call_ready(app.clone(), Request::from_parts(parts, body));
        async move {
            let response = call.await;
            drop(busy);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The header and idle timeouts live in `TimedIo`, which tells them apart.
    builder.timer(TokioTimer::new()).header_read_timeout(None).keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

/// The call of a ready service, or (boxed, as it is rare) its `oneshot`.
type Called<S> = futures::future::Either<
    <S as tower::Service<Request<Body>>>::Future,
    Pin<Box<tower::util::Oneshot<S, Request<Body>>>>,
>;

/// `service`'s answer to `request`. A parked agent poll holds this future for minutes:
/// `oneshot` keeps room for the service and the whole request beside the call's own
/// future, so a service that is ready (the router always is) is called at once.
fn call_ready<S>(mut service: S, request: Request<Body>) -> Called<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    match service.poll_ready(&mut Context::from_waker(std::task::Waker::noop())) {
        Poll::Ready(Ok(())) => futures::future::Either::Left(service.call(request)),
        Poll::Pending => futures::future::Either::Right(Box::pin(service.oneshot(request))),
    }
}

/// Moves the request's URI and header values out of hyper's read buffer, of which they
/// are slices. A long poll holds its request for minutes, and while any slice of that
/// buffer lives hyper cannot reuse it: to watch the connection for EOF it allocates a
/// second one (8 KiB per parked agent, measured by `bench/agents`). The copy costs the
/// few hundred bytes of the head.
fn detach_head(parts: &mut axum::http::request::Parts) {
    if let Ok(uri) = axum::http::Uri::try_from(parts.uri.to_string()) {
        parts.uri = uri;
    }
    for value in parts.headers.values_mut() {
        if let Ok(mut copy) = axum::http::HeaderValue::from_bytes(value.as_bytes()) {
            copy.set_sensitive(value.is_sensitive());
            *value = copy;
        }
    }
}

/// At most one log line per interval about refused connections, with how many.
#[derive(Default)]
struct RefusalLog {
    refused: AtomicU64,
    last: std::sync::Mutex<Option<Instant>>,
}

impl RefusalLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn note(&self, cap: usize) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| now.duration_since(at) < Self::EVERY) {
            return;
        }
        *last = Some(now);
        let count = self.refused.swap(0, Ordering::Relaxed);
        tracing::warn!(
            max_connections = cap,
            refused = count,
            "connection cap reached: closing new connections (connections.max_connections)"
        );
    }
}

/// Whether a request is being handled on a connection, shared by the service (which
/// knows) and [`TimedIo`] (which enforces the timeouts).
#[derive(Default)]
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    started: AtomicU64,
    /// The read that saw the connection busy: woken when the request ends, so that the
    /// idle timer starts then rather than at the next byte.
    parked_read: std::sync::Mutex<Option<std::task::Waker>>,
}

pub(crate) struct Busy(Arc<Activity>);

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.started.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            let parked = self.0.parked_read.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(waker) = parked {
                waker.wake();
            }
        }
    }
}

/// A socket that fails a read when the connection is idle too long or a request header
/// takes too long, and a write when the client stops reading.
pub(crate) struct TimedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
    limits: Limits,
    /// Last read or write that moved bytes (or the end of a request's handling).
    last_progress: Instant,
    /// First byte of a request header not yet complete.
    head_started: Option<Instant>,
    seen_requests: u64,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_stalled_since: Option<Instant>,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl TimedIo {
    fn new(inner: TcpStream, activity: Arc<Activity>, limits: Limits) -> Self {
        Self {
            inner,
            activity,
            limits,
            last_progress: Instant::now(),
            head_started: None,
            seen_requests: 0,
            read_timer: None,
            write_stalled_since: None,
            write_timer: None,
        }
    }

    fn busy(&mut self) -> bool {
        let started = self.activity.started.load(Ordering::Acquire);
        if started != self.seen_requests {
            // A request was handled since: the next header starts from scratch.
            self.seen_requests = started;
            self.head_started = None;
            self.last_progress = Instant::now();
        }
        self.activity.in_flight.load(Ordering::Acquire) > 0
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

/// Arms `timer` for `deadline` and polls it: `Ready` once the deadline has passed.
fn poll_deadline(timer: &mut Option<Pin<Box<Sleep>>>, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
    match timer {
        Some(sleep) if sleep.deadline() == deadline => {}
        Some(sleep) => sleep.as_mut().reset(deadline),
        None => *timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
    }
    timer.as_mut().map_or(Poll::Pending, |sleep| sleep.as_mut().poll(cx))
}

impl AsyncRead for TimedIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.read_timer = None;
                if result.is_ok() && buf.filled().len() > before {
                    this.last_progress = Instant::now();
                    if !this.busy() && this.head_started.is_none() {
                        this.head_started = Some(this.last_progress);
                    }
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                if this.busy() {
                    // A handler runs (a long poll, an upload): its body has its own timeout.
                    this.read_timer = None;
                    *this.activity.parked_read.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
                    // The request may have ended between the check and the parking.
                    if this.activity.in_flight.load(Ordering::Acquire) > 0 {
                        return Poll::Pending;
                    }
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                let idle = this.last_progress + this.limits.idle;
                let deadline = match this.head_started {
                    Some(start) => idle.min(start + this.limits.header_read),
                    None => idle,
                };
                ready!(poll_deadline(&mut this.read_timer, deadline, cx));
                this.read_timer = None;
                Poll::Ready(Err(timed_out(if this.head_started.is_some() {
                    "request header not received in time"
                } else {
                    "connection idle"
                })))
            }
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(result) => {
                this.write_timer = None;
                this.write_stalled_since = None;
                if matches!(result, Ok(n) if n > 0) {
                    this.last_progress = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let since = *this.write_stalled_since.get_or_insert_with(Instant::now);
                ready!(poll_deadline(&mut this.write_timer, since + this.limits.body, cx));
                this.write_timer = None;
                Poll::Ready(Err(timed_out("the client stopped reading")))
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The copy changes where the head lives, not what it says: path, query, every header
    /// (repeated ones in order) and the sensitive flag survive, and no part of it shares
    /// the buffer it was parsed from.
    #[test]
    fn a_detached_head_says_what_the_parsed_one_said_from_its_own_memory() {
        let buffer = bytes::Bytes::from_static(b"/agent/v1/actions/next?wait=25&confirm=1 Bearer cfa_secret");
        let mut request = Request::builder()
            .uri(axum::http::Uri::from_maybe_shared(buffer.slice(0..40)).unwrap())
            .header("x-forwarded-for", "192.0.2.1")
            .header("x-forwarded-for", "192.0.2.2")
            .body(())
            .unwrap();
        let mut secret = axum::http::HeaderValue::from_maybe_shared(buffer.slice(41..)).unwrap();
        secret.set_sensitive(true);
        request.headers_mut().insert("authorization", secret);
        let (mut parts, ()) = request.into_parts();
        let (uri, headers) = (parts.uri.clone(), parts.headers.clone());
        detach_head(&mut parts);
        assert_eq!(parts.uri, uri);
        assert_eq!(parts.uri.query(), Some("wait=25&confirm=1"));
        assert_eq!(parts.headers, headers);
        let forwarded: Vec<_> = parts.headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(forwarded, ["192.0.2.1", "192.0.2.2"]);
        assert!(parts.headers["authorization"].is_sensitive());
        // Nothing points into the parsed buffer any more.
        let range = buffer.as_ptr_range();
        let inside = |p: *const u8| range.contains(&p);
        assert!(!inside(parts.uri.path().as_ptr()), "the path still shares the buffer");
        assert!(parts.headers.values().all(|v| !inside(v.as_bytes().as_ptr())), "a header still shares the buffer");
    }
}
