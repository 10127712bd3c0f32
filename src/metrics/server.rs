//! The HTTP endpoint: `GET /metrics` (Prometheus text format) and `GET /health` (200 or 503 with
//! one line saying why), on `[metrics] listen`.
//!
//! The socket is bound at start-up, before anything else starts, so an address in use stops
//! voicebot1 with one line instead of leaving it running unobserved. Requests are parsed by
//! `tiny_http` on its own threads; one `metrics` thread answers them in turn (a scrape is a few
//! microseconds of atomics and one short lock of the call registry). Dropping the
//! [`MetricsServer`] stops that thread.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use log::{debug, info, warn};
use tiny_http::{Header, Request, Response};

use super::exposition::CONTENT_TYPE;
use super::{health, render, Live, Registry, METRICS};

/// The bound, not yet serving, endpoint.
#[derive(Debug)]
pub struct Endpoint {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Endpoint {
    /// Binds `addr` (port 0: any free port; [`Endpoint::addr`] tells which).
    pub fn bind(addr: SocketAddr) -> io::Result<Endpoint> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        Ok(Endpoint { listener, addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts answering on a thread of its own; `live` reads the service's state at each request.
    pub fn serve(self, live: impl Fn() -> Live + Send + 'static) -> io::Result<MetricsServer> {
        let addr = self.addr;
        let server =
            tiny_http::Server::from_listener(self.listener, None).map_err(io::Error::other)?;
        let server = Arc::new(server);
        let stopping = Arc::new(AtomicBool::new(false));
        let (thread_server, thread_stopping) = (Arc::clone(&server), Arc::clone(&stopping));
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                loop {
                    match thread_server.recv() {
                        Ok(request) => answer(request, &METRICS, &live),
                        Err(_) if thread_stopping.load(Ordering::SeqCst) => break,
                        Err(e) => {
                            // tiny_http's accept loop ends on an accept error (e.g. out of file
                            // descriptors): nothing more will come.
                            warn!("metrics: http://{addr} stopped accepting connections: {e}");
                            break;
                        }
                    }
                }
            })?;
        info!("metrics: serving /metrics and /health on http://{addr}");
        Ok(MetricsServer {
            server,
            stopping,
            thread: Some(thread),
        })
    }
}

/// The running endpoint; dropping it stops it.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What one request gets: status, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

const TEXT: &str = "text/plain; charset=utf-8";

/// The answer to `method` on `url` (path and query), without any I/O.
pub fn route(method: &str, url: &str, registry: &Registry, live: &dyn Fn() -> Live) -> Answer {
    let path = url.split('?').next().unwrap_or_default();
    let text = |status, body: String| Answer {
        status,
        content_type: TEXT,
        body,
    };
    if !matches!(path, "/metrics" | "/health" | "/") {
        return text(
            404,
            format!("not found: {path}; voicebot1 serves /metrics and /health\n"),
        );
    }
    if method != "GET" && method != "HEAD" {
        return text(405, format!("{method} not allowed: GET or HEAD\n"));
    }
    match path {
        "/metrics" => Answer {
            status: 200,
            content_type: CONTENT_TYPE,
            body: render(registry, &live()),
        },
        "/health" => {
            let h = health(registry, &live());
            text(if h.ok { 200 } else { 503 }, format!("{}\n", h.reason))
        }
        _ => text(
            200,
            "voicebot1: /metrics (Prometheus), /health\n".to_string(),
        ),
    }
}

fn answer(request: Request, registry: &Registry, live: &dyn Fn() -> Live) {
    let method = request.method().as_str().to_string();
    let a = route(&method, request.url(), registry, live);
    debug!("metrics: {method} {} -> {}", request.url(), a.status);
    let mut response = Response::from_string(a.body).with_status_code(a.status);
    if let Ok(h) = Header::from_bytes("Content-Type", a.content_type) {
        response = response.with_header(h);
    }
    if a.status == 405 {
        if let Ok(h) = Header::from_bytes("Allow", "GET, HEAD") {
            response = response.with_header(h);
        }
    }
    // tiny_http leaves the body out for HEAD. The client may have gone: nothing to do about it.
    let _ = request.respond(response);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> Live {
        Live {
            pool_free: 3,
            pool_total: 4,
            ..Live::default()
        }
    }

    #[test]
    fn metrics_and_health_are_routed_and_everything_else_is_404_or_405() {
        let r = Registry::new();
        r.set_ari_connected(true);
        let m = route("GET", "/metrics", &r, &live);
        assert_eq!((m.status, m.content_type), (200, CONTENT_TYPE));
        assert!(
            m.body
                .contains("# TYPE voicebot1_calls_ended_total counter"),
            "{}",
            m.body
        );
        let h = route("GET", "/health?verbose=1", &r, &live);
        assert_eq!(
            (h.status, h.body.as_str()),
            (200, "ok: ARI connected, 0 calls active, pool 3/4 free\n")
        );
        assert_eq!(route("HEAD", "/health", &r, &live).status, 200);
        assert_eq!(route("GET", "/metricsx", &r, &live).status, 404);
        assert_eq!(route("POST", "/metrics", &r, &live).status, 405);
        r.set_ari_connected(false);
        let h = route("GET", "/health", &r, &live);
        assert_eq!(h.status, 503);
        assert_eq!(h.body.lines().count(), 1, "{}", h.body);
    }

    #[test]
    fn the_endpoint_answers_over_http_and_stops_when_dropped() {
        use std::io::{Read, Write};
        let endpoint = Endpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.addr();
        assert_ne!(addr.port(), 0);
        let server = endpoint.serve(live).unwrap();
        let get = |path: &str| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let metrics = get("/metrics");
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("text/plain; version=0.0.4"), "{metrics}");
        assert!(metrics.contains("voicebot1_pool_ports_free 3"), "{metrics}");
        // The process-wide registry: not connected in a unit test.
        assert!(get("/health").starts_with("HTTP/1.1 503"));
        drop(server);
        // The port is free again once tiny_http's accept thread has seen the stop.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while Endpoint::bind(addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "port {addr} still taken after the server was dropped"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
