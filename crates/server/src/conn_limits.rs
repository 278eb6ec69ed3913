//! Connection-level defences of the HTTP(S) listener against slow and greedy clients:
//! - at most `max_connections` open connections, and `max_connections_per_ip` from one client
//!   address; a connection over either limit is closed at once, before any TLS handshake;
//! - a request head must arrive within `header_read_timeout` of the server starting to wait
//!   for it (hyper's header-read timer, which also runs while a kept-alive HTTP/1 connection
//!   waits for its next request), so a silent connection or half a head is closed;
//! - a kept-alive HTTP/1 connection idle for `keep_alive_idle` after a response is closed;
//! - the TLS handshake has its own 10 s limit (axum-server's).
//!
//! Request bodies have their own read timeout in the API middleware (408, never a 5xx).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// The limits, from `[server]` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub header_read_timeout: Duration,
    pub keep_alive_idle: Duration,
}

impl ConnLimits {
    pub fn from_config(server: &crate::config::ServerConfig) -> Self {
        ConnLimits {
            max_connections: server.max_connections,
            max_connections_per_ip: server.max_connections_per_ip,
            header_read_timeout: Duration::from_secs(server.header_read_timeout_secs),
            keep_alive_idle: Duration::from_secs(server.keep_alive_idle_secs),
        }
    }

    /// Sets the HTTP-level timers on the server's connection builder.
    pub fn tune(
        &self,
        builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    ) {
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.header_read_timeout);
        builder
            .http2()
            .timer(hyper_util::rt::TokioTimer::new())
            .max_concurrent_streams(Some(100));
    }
}

/// Open connections, in total and per client address.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Total,
    PerIp,
}

/// The connection caps the admin API can change while the server runs
/// (`PATCH /admin/settings/server`); new connections are admitted against them.
#[derive(Debug)]
pub struct ConnCaps {
    max_connections: AtomicUsize,
    max_connections_per_ip: AtomicUsize,
}

impl ConnCaps {
    pub fn new(limits: &ConnLimits) -> Self {
        ConnCaps {
            max_connections: AtomicUsize::new(limits.max_connections),
            max_connections_per_ip: AtomicUsize::new(limits.max_connections_per_ip),
        }
    }

    /// New caps for the connections accepted from now on (open ones stay open).
    pub fn set(&self, max_connections: usize, max_connections_per_ip: usize) {
        self.max_connections
            .store(max_connections, Ordering::Relaxed);
        self.max_connections_per_ip
            .store(max_connections_per_ip, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Shared {
    limits: ConnLimits,
    caps: Arc<ConnCaps>,
    counts: Mutex<Counts>,
}

impl Shared {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnGuard, Refusal> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= self.caps.max_connections.load(Ordering::Relaxed) {
            return Err(Refusal::Total);
        }
        let from_ip = counts.per_ip.entry(ip).or_insert(0);
        if *from_ip >= self.caps.max_connections_per_ip.load(Ordering::Relaxed) {
            return Err(Refusal::PerIp);
        }
        *from_ip += 1;
        counts.total += 1;
        metrics::gauge!("idbridge_http_connections_open").set(counts.total as f64);
        Ok(ConnGuard {
            shared: self.clone(),
            ip,
        })
    }
}

/// One admitted connection; dropping it gives the slot back.
#[derive(Debug)]
pub struct ConnGuard {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut counts = self.shared.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
        metrics::gauge!("idbridge_http_connections_open").set(counts.total as f64);
    }
}

/// Wraps the server's acceptor (plain or TLS): counts connections before the inner acceptor
/// (so slow TLS handshakes count too) and wraps the accepted stream in a [`GuardedStream`].
#[derive(Debug, Clone)]
pub struct LimitedAcceptor<A> {
    inner: A,
    shared: Arc<Shared>,
}

impl<A> LimitedAcceptor<A> {
    pub fn new(inner: A, limits: ConnLimits) -> Self {
        let caps = Arc::new(ConnCaps::new(&limits));
        Self::with_caps(inner, limits, caps)
    }

    /// With caps the caller keeps, to change them while the server runs.
    pub fn with_caps(inner: A, limits: ConnLimits, caps: Arc<ConnCaps>) -> Self {
        LimitedAcceptor {
            inner,
            shared: Arc::new(Shared {
                limits,
                caps,
                counts: Mutex::default(),
            }),
        }
    }
}

type AcceptFuture<S, Svc> = Pin<Box<dyn Future<Output = io::Result<(S, Svc)>> + Send>>;

impl<A, Svc> Accept<TcpStream, Svc> for LimitedAcceptor<A>
where
    A: Accept<TcpStream, Svc>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = GuardedStream<A::Stream>;
    type Service = A::Service;
    type Future = AcceptFuture<Self::Stream, Self::Service>;

    fn accept(&self, stream: TcpStream, service: Svc) -> Self::Future {
        let admitted = match stream.peer_addr() {
            Ok(peer) => self.shared.admit(peer.ip()).map_err(|refusal| {
                let reason = match refusal {
                    Refusal::Total => "max_connections",
                    Refusal::PerIp => "max_connections_per_ip",
                };
                metrics::counter!("idbridge_http_connections_refused_total", "reason" => reason)
                    .increment(1);
                tracing::debug!(peer = %peer, reason, "connection refused");
                io::Error::other(format!("connection refused: {reason}"))
            }),
            Err(e) => Err(e),
        };
        let guard = match admitted {
            Ok(guard) => guard,
            // Dropping the stream closes the connection.
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let header_timeout = self.shared.limits.header_read_timeout;
        let idle = self.shared.limits.keep_alive_idle;
        let accepting = self.inner.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = accepting.await?;
            Ok((
                GuardedStream::new(stream, guard, header_timeout, idle),
                service,
            ))
        })
    }
}

/// The HTTP/2 client preface; an HTTP/2 connection has no HTTP/1 keep-alive idle state.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";
/// The end of a request head (the HTTP/2 preface contains it too).
const HEAD_END: &[u8] = b"\r\n\r\n";

/// An accepted connection: holds its slot, and enforces two timers that hyper cannot:
/// - the first request head must arrive whole within `header_read_timeout` of the accept
///   (hyper's own header timer starts only after hyper-util has read enough bytes to tell
///   HTTP/1 from HTTP/2, so a silent connection would otherwise wait forever); later heads
///   are timed by hyper;
/// - a kept-alive HTTP/1 connection idle for `idle` after a response is closed. Idleness is
///   read from the bytes: the timer is armed when response bytes are written and disarmed
///   when request bytes arrive, or when a write must wait (a client that does not read is
///   slow, not idle; the request deadline bounds that).
pub struct GuardedStream<S> {
    inner: S,
    _guard: ConnGuard,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    /// How many bytes of [`HEAD_END`] the first head has matched; `None` once it is complete.
    first_head: Option<usize>,
    idle_armed: bool,
    /// None until the first bytes tell HTTP/1 from HTTP/2.
    http2: Option<bool>,
}

impl<S> GuardedStream<S> {
    fn new(inner: S, guard: ConnGuard, header_timeout: Duration, idle: Duration) -> Self {
        GuardedStream {
            inner,
            _guard: guard,
            idle,
            timer: Box::pin(tokio::time::sleep(header_timeout)),
            first_head: Some(0),
            idle_armed: false,
            http2: None,
        }
    }

    /// Request bytes arrived.
    fn received(&mut self, bytes: &[u8]) {
        self.idle_armed = false;
        if self.http2.is_none() {
            let n = bytes.len().min(H2_PREFACE.len());
            self.http2 = Some(bytes[..n] == H2_PREFACE[..n]);
        }
        if let Some(mut matched) = self.first_head {
            for &b in bytes {
                matched = if b == HEAD_END[matched] {
                    matched + 1
                } else {
                    usize::from(b == HEAD_END[0])
                };
                if matched == HEAD_END.len() {
                    self.first_head = None;
                    return;
                }
            }
            self.first_head = Some(matched);
        }
    }

    /// Response bytes went out: the idle clock starts.
    fn wrote(&mut self, result: &Poll<io::Result<usize>>) {
        match result {
            Poll::Ready(Ok(n)) if *n > 0 && self.first_head.is_none() => {
                self.idle_armed = true;
                let deadline = Instant::now() + self.idle;
                self.timer.as_mut().reset(deadline);
            }
            Poll::Pending => self.idle_armed = false,
            _ => {}
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    this.received(read);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let waiting_for_head = this.first_head.is_some();
                let idle = this.idle_armed && this.http2 != Some(true);
                if (waiting_for_head || idle) && this.timer.as_mut().poll(cx).is_ready() {
                    this.idle_armed = false;
                    let why = if waiting_for_head {
                        "request head not received within server.header_read_timeout_secs"
                    } else {
                        "keep-alive connection idle past server.keep_alive_idle_secs"
                    };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
                }
                Poll::Pending
            }
            ready => ready,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        self.wrote(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
