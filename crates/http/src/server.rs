//! The HTTP server's accept loop (hyper-util), with the limits `axum::serve` lacks:
//!
//! * a connection limit ([`HttpLimits::max_connections`]): when every slot is taken, a new
//!   connection takes the slot of the connection idle the longest (no request in flight),
//!   and if none is idle the server stops accepting until one closes (the kernel's backlog
//!   holds the rest: backpressure, not file descriptors);
//! * a header timeout: a request's headers must arrive within
//!   [`HttpLimits::header_timeout`] (slow-loris);
//! * an idle timeout: a connection with no request in flight and no bytes moving for
//!   [`HttpLimits::idle_timeout`] is closed. A streaming response (SSE) is a request in
//!   flight, so it is never idle, however quiet;
//! * accept errors (`EMFILE`, ...) back off (up to a second) instead of spinning.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1::Builder;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;

use vouch_node::metrics::Metrics;

/// Limits of the HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections held open at once.
    pub max_connections: usize,
    /// Time for a request's headers to arrive.
    pub header_timeout: Duration,
    /// Time a connection may sit with no request in flight and no bytes moving.
    pub idle_timeout: Duration,
}

/// Default connection limit: well under the usual 1024 soft limit on file descriptors,
/// leaving room for the database, model files and p2p links.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// How long connections get to finish their requests at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the accept loop knows about one connection.
struct Conn {
    /// Requests whose response has not been fully sent.
    in_flight: AtomicUsize,
    /// Milliseconds since the server started, at the last byte read or written.
    last_activity: AtomicU64,
    /// Asks the connection to close (it was picked to make room).
    close: Notify,
    /// Already asked to close.
    evicted: AtomicBool,
}

struct Shared {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    epoch: Instant,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Asks the connection idle the longest to close; false if none is idle.
    fn evict_idle(&self) -> bool {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = conns
            .values()
            .filter(|c| {
                c.in_flight.load(Ordering::Acquire) == 0 && !c.evicted.load(Ordering::Relaxed)
            })
            .min_by_key(|c| c.last_activity.load(Ordering::Relaxed));
        match oldest {
            Some(c) => {
                c.evicted.store(true, Ordering::Relaxed);
                c.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let shared = Arc::new(Shared {
        conns: Mutex::new(HashMap::new()),
        epoch: Instant::now(),
    });
    let mut builder = Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let (stop_conns, _) = watch::channel(false);
    let mut next_id = 0u64;
    let mut backoff = Duration::from_millis(10);
    loop {
        if *shutdown.borrow() {
            break;
        }
        let accepted = tokio::select! {
            r = listener.accept() => r,
            r = shutdown.changed() => if r.is_err() { break } else { continue },
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff = Duration::from_millis(10);
                x
            }
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted:
                // wait (the descriptors of closing connections come back) instead of
                // spinning on the error.
                tracing::warn!(error = %e, retry_ms = backoff.as_millis() as u64, "accept error");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Full: make room by closing the connection idle the longest; if every
                // connection is busy, wait for one to finish (no more accepts meanwhile).
                let mut got = None;
                let mut stopped = false;
                while got.is_none() && !stopped && !*shutdown.borrow() {
                    if shared.evict_idle() {
                        metrics.http_connection_evicted();
                    }
                    tokio::select! {
                        p = slots.clone().acquire_owned() => got = p.ok(),
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        r = shutdown.changed() => stopped = r.is_err(),
                    }
                }
                match got {
                    Some(p) => p,
                    None => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let id = next_id;
        let conn = Arc::new(Conn {
            in_flight: AtomicUsize::new(0),
            last_activity: AtomicU64::new(shared.now_ms()),
            close: Notify::new(),
            evicted: AtomicBool::new(false),
        });
        shared
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, conn.clone());
        metrics.http_connections(1);
        let (builder, router, shared, metrics) = (
            builder.clone(),
            router.clone(),
            shared.clone(),
            metrics.clone(),
        );
        let mut stop = stop_conns.subscribe();
        tokio::spawn(async move {
            serve_conn(builder, stream, router, &conn, &shared, limits, &mut stop).await;
            tracing::trace!(%peer, "connection closed");
            shared
                .conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            metrics.http_connections(-1);
            drop(permit);
        });
    }
    // Stop accepting; let connections finish what they are doing, for a while.
    drop(listener);
    let _ = stop_conns.send(true);
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    let total = limits.max_connections.max(1) as u32;
    let _ = tokio::time::timeout_at(deadline, slots.acquire_many(total)).await;
    Ok(())
}

async fn serve_conn(
    builder: Builder,
    stream: TcpStream,
    router: Router,
    conn: &Arc<Conn>,
    shared: &Arc<Shared>,
    limits: HttpLimits,
    stop: &mut watch::Receiver<bool>,
) {
    let io = TokioIo::new(Tracked {
        inner: stream,
        conn: conn.clone(),
        shared: shared.clone(),
    });
    let c = conn.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let guard = InFlight::new(c.clone());
        let mut router = router.clone();
        async move {
            let resp = tower_service::Service::call(&mut router, req.map(Body::new))
                .await
                .unwrap_or_else(|e: Infallible| match e {});
            Ok::<_, Infallible>(resp.map(|b| {
                Body::new(Guarded {
                    inner: b,
                    _guard: guard,
                })
            }))
        }
    });
    let http = builder.serve_connection(io, svc);
    tokio::pin!(http);
    let idle = limits.idle_timeout.max(Duration::from_millis(1));
    let busy = || conn.in_flight.load(Ordering::Acquire) > 0;
    let mut grace_end: Option<Instant> = None;
    loop {
        // When the connection would have been idle long enough, if nothing happens; while
        // a request is in flight, look again an idle timeout later.
        let last = conn.last_activity.load(Ordering::Relaxed);
        let wake = match grace_end {
            Some(g) => g,
            None if busy() => Instant::now() + idle,
            None => shared.epoch + Duration::from_millis(last) + idle,
        };
        let mut shut_down = false;
        tokio::select! {
            r = http.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "http connection ended with an error");
                }
                return;
            }
            _ = conn.close.notified(), if grace_end.is_none() => {
                // Picked to make room: it was idle (no request in flight), so close it
                // now; if a request started meanwhile, let it finish.
                if !busy() {
                    return;
                }
                shut_down = true;
            }
            _ = stop.changed(), if grace_end.is_none() => shut_down = true,
            _ = tokio::time::sleep_until(wake) => {
                if grace_end.is_some() {
                    // Asked to close and did not in time: drop it.
                    return;
                }
                let quiet = shared
                    .now_ms()
                    .saturating_sub(conn.last_activity.load(Ordering::Relaxed));
                if !busy() && quiet >= idle.as_millis() as u64 {
                    return;
                }
            }
        }
        if shut_down {
            // Closes after the response in flight (no keep-alive).
            http.as_mut().graceful_shutdown();
            grace_end = Some(Instant::now() + SHUTDOWN_GRACE);
        }
    }
}

/// The stream of one connection, noting when bytes last moved.
struct Tracked {
    inner: TcpStream,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
}

impl Tracked {
    fn touch(&self) {
        self.conn
            .last_activity
            .store(self.shared.now_ms(), Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut me.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            me.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            me.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            me.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A request in flight on its connection, until its response body is sent or dropped.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn new(c: Arc<Conn>) -> Self {
        c.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(c)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body holding its request's [`InFlight`].
struct Guarded {
    inner: Body,
    _guard: InFlight,
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::SocketAddr;

    async fn start(limits: HttpLimits) -> (SocketAddr, watch::Sender<bool>, Arc<Metrics>) {
        let router = Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .route(
                "/stream",
                axum::routing::get(|| async {
                    // Quiet for longer than the idle timeout, then an event.
                    let s = futures_util::stream::unfold(0u32, |n| async move {
                        if n >= 2 {
                            return None;
                        }
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                        Some((
                            Ok::<_, Infallible>(
                                axum::response::sse::Event::default().data(format!("tick{n}")),
                            ),
                            n + 1,
                        ))
                    });
                    axum::response::sse::Sse::new(s)
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        let metrics = Arc::new(Metrics::default());
        let m = metrics.clone();
        tokio::spawn(async move { serve(listener, router, limits, m, rx).await });
        (addr, tx, metrics)
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// Whether the peer closed `s` (end of stream or a reset) within `wait`.
    fn closed_within(mut s: &std::net::TcpStream, wait: Duration) -> bool {
        s.set_read_timeout(Some(wait)).unwrap();
        let mut b = Vec::new();
        match s.read_to_end(&mut b) {
            Ok(_) => true,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }

    /// Row 8 (issue 18): idle connections beyond the limit neither stop the server from
    /// answering nor stay open forever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_connections_are_bounded_and_closed() {
        let limits = HttpLimits {
            max_connections: 64,
            header_timeout: Duration::from_millis(800),
            idle_timeout: Duration::from_millis(800),
        };
        let (addr, _stop, metrics) = start(limits).await;
        tokio::task::spawn_blocking(move || {
            // 200 idle connections (three times the limit), some with half a request.
            let idle: Vec<std::net::TcpStream> = (0..200)
                .map(|i| {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    if i % 2 == 0 {
                        let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n");
                    }
                    s
                })
                .collect();
            // A fresh request is answered at once, although the slots were all taken.
            let t = std::time::Instant::now();
            let r = get(addr, "/");
            assert!(r.starts_with("HTTP/1.1 200"), "{r}");
            assert!(
                t.elapsed() < Duration::from_millis(700),
                "{:?}",
                t.elapsed()
            );
            let text = metrics.render(0, 0, 0, 0);
            let open: i64 = text
                .lines()
                .find_map(|l| l.strip_prefix("vouch_http_connections "))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert!(open <= 64, "{open} connections open, limit 64");
            // Every idle connection is closed by the server after the timeouts.
            std::thread::sleep(Duration::from_millis(2500));
            let still_open = idle
                .iter()
                .filter(|s| !closed_within(s, Duration::from_millis(50)))
                .count();
            assert_eq!(still_open, 0, "idle connections left open");
            let r = get(addr, "/");
            assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        })
        .await
        .unwrap();
    }

    /// A streaming response (SSE) quiet for longer than the idle timeout is not idle.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sse_outlives_the_idle_timeout() {
        let limits = HttpLimits {
            max_connections: 8,
            header_timeout: Duration::from_millis(500),
            idle_timeout: Duration::from_millis(500),
        };
        let (addr, _stop, _) = start(limits).await;
        let body = tokio::task::spawn_blocking(move || get(addr, "/stream"))
            .await
            .unwrap();
        assert!(body.contains("data: tick0"), "{body}");
        assert!(body.contains("data: tick1"), "{body}");
    }
}
