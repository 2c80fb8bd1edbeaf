//! The web view (`--web-view`): one page on the host's loopback that shows every machine's
//! screen live next to the test's progress and, after a failure, its artifacts.
//!
//! The page (`page/`) is served by this crate, and so is everything it loads: the VNC client
//! in it is the host's noVNC ([`novnc`]), whose files are served from where the host keeps
//! them; nothing comes from the network. Its screens are QEMU's own VNC servers (the driver's
//! `vnc` option, a unix socket per machine) reached through a WebSocket proxy ([`vnc_proxy`]).
//! Its progress is [`ntd_core::log::progress`], polled as JSON ([`state`]).
//!
//! The server listens on 127.0.0.1 only, and everything it serves is under a random path
//! (`/<128-bit token>/`) that only the log shows: other users of the host, who can reach the
//! loopback port but not the run's sockets, cannot reach the machines through it either. It
//! answers only requests addressed to it by that name (or `localhost`), so that no other web
//! page can reach the machines through a browser on this host (DNS rebinding). The page sends
//! keys and pointer events to a machine only after the user ticks that machine's input box.

mod content_type;
pub mod novnc;
mod state;
mod vnc_proxy;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path as UrlPath, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use ntd_core::Driver;
use ntd_core::log::progress::Progress;
use ntd_core::machine::qemu::QemuMachine;

/// Why the web view did not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The port is taken, or the address cannot be bound.
    #[error("cannot listen on 127.0.0.1:{port}")]
    Listen {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    /// The system gave no random bytes for the page's secret path.
    #[error("no random bytes for the page's address")]
    Random(#[source] getrandom::Error),
}

/// What the web view shows.
#[derive(Debug)]
pub struct WebViewConfig {
    /// The run's driver: its machines and failure artifacts.
    pub driver: Driver,
    /// The run's progress, kept by its log layer.
    pub progress: Arc<Progress>,
    /// The test's name, for the page's title.
    pub test_name: String,
    /// The noVNC directory, if the host has one ([`novnc::find`]); without it the page shows
    /// the progress and the artifacts, and the viewer's command instead of the screens.
    pub novnc: Option<PathBuf>,
}

/// The running web view; dropping it stops the server and closes every page's screens.
#[derive(Debug)]
pub struct WebView {
    address: SocketAddr,
    /// The secret first segment of every path.
    token: String,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: WebViewConfig,
    /// The test's outcome, once it has ended.
    outcome: Mutex<Option<String>>,
    /// Whether a page has polled the state at all, and whether it has seen the outcome.
    polled: AtomicBool,
    outcome_shown: AtomicBool,
    /// Set when the web view is dropped: the server and the proxies stop.
    shutdown: tokio::sync::watch::Sender<bool>,
}

/// The web view's listening socket, bound before the driver starts so that a taken port is
/// a usage error, not a failed test.
#[derive(Debug)]
pub struct Listener {
    listener: std::net::TcpListener,
    port: u16,
}

impl Listener {
    /// Listen on 127.0.0.1:`port` (0: any free port).
    pub fn bind(port: u16) -> Result<Listener, Error> {
        let listen_error = |source| Error::Listen { port, source };
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map_err(listen_error)?;
        listener.set_nonblocking(true).map_err(listen_error)?;
        Ok(Listener { listener, port })
    }
}

impl WebView {
    /// How long [`WebView::wait_until_shown`] waits at most for a page to see the outcome.
    pub const SHOW_OUTCOME: Duration = Duration::from_secs(3);

    /// Serve the page on `listener`, on `runtime`.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        listener: Listener,
        config: WebViewConfig,
    ) -> Result<WebView, Error> {
        let Listener { listener, port } = listener;
        let listen_error = |source| Error::Listen { port, source };
        let address = listener.local_addr().map_err(listen_error)?;
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(Error::Random)?;
        let token: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(listen_error)?
        };
        let shared = Arc::new(Shared {
            config,
            outcome: Mutex::new(None),
            polled: AtomicBool::new(false),
            outcome_shown: AtomicBool::new(false),
            shutdown: tokio::sync::watch::Sender::new(false),
        });
        let app = router(Arc::clone(&shared), address.port(), &token);
        let mut stopped = shared.shutdown.subscribe();
        runtime.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await;
        });
        Ok(WebView { address, token, shared })
    }

    /// The page's address, `http://127.0.0.1:<port>/<token>/`.
    pub fn url(&self) -> String {
        format!("http://{}/{}/", self.address, self.token)
    }

    /// Say on the page that the test ended, and how (`passed`, `failed`, …).
    pub fn finish(&self, outcome: &str) {
        *lock(&self.shared.outcome) = Some(outcome.to_owned());
    }

    /// Block until a page has been told the outcome, for at most [`WebView::SHOW_OUTCOME`];
    /// at once when no page ever asked for the state.
    pub fn wait_until_shown(&self) {
        let deadline = std::time::Instant::now() + Self::SHOW_OUTCOME;
        while self.shared.polled.load(Ordering::SeqCst)
            && !self.shared.outcome_shown.load(Ordering::SeqCst)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for WebView {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The page's routes, under `/<token>/`; the page refers to everything by relative URLs.
fn router(shared: Arc<Shared>, port: u16, token: &str) -> Router {
    let at = |path: &str| format!("/{token}/{path}");
    Router::new()
        .route(&at(""), get(|| async { Html(include_str!("../page/index.html")) }))
        .route(
            &at("page.js"),
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], include_str!("../page/page.js")) }),
        )
        .route(
            &at("page.css"),
            get(|| async { ([(header::CONTENT_TYPE, "text/css")], include_str!("../page/page.css")) }),
        )
        .route(&at("state"), get(state_json))
        .route(&at("novnc/{*path}"), get(novnc_file))
        .route(&at("vnc/{machine}"), get(vnc_socket))
        .route(&at("artifacts/{file}"), get(artifact))
        .layer(middleware::from_fn(move |request: Request, next: Next| only_for_this_host(request, next, port)))
        .with_state(shared)
}

/// Headers on every answer: no other site may frame the page (and trick its user into typing
/// into a machine), nothing is sniffed into another type (artifacts hold the guest's text),
/// and the secret path leaves in no `Referer`.
fn guarded(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Refuse requests not addressed to this server by its loopback name, and WebSockets opened
/// by pages of other origins.
async fn only_for_this_host(request: Request, next: Next, port: u16) -> Response {
    let ours = |value: &str| is_this_host(value, port);
    let headers = request.headers();
    let host_ok = header_str(headers, header::HOST).is_some_and(ours);
    let origin_ok = match header_str(headers, header::ORIGIN) {
        None => true,
        Some(origin) => origin.strip_prefix("http://").is_some_and(ours),
    };
    if !host_ok || !origin_ok {
        return guarded(
            (StatusCode::FORBIDDEN, "ntd's web view answers only http://127.0.0.1 and http://localhost\n")
                .into_response(),
        );
    }
    guarded(next.run(request).await)
}

/// Whether a `Host` value (or an `Origin`'s authority) names this server: `127.0.0.1` or
/// `localhost`, with its port (a browser leaves out port 80).
fn is_this_host(value: &str, port: u16) -> bool {
    let (name, given) = match value.rsplit_once(':') {
        Some((name, given)) => (name, given.parse::<u16>().ok()),
        None => (value, Some(80)),
    };
    matches!(name, "127.0.0.1" | "localhost") && given == Some(port)
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

async fn state_json(State(shared): State<Arc<Shared>>) -> Response {
    let outcome = lock(&shared.outcome).clone();
    shared.polled.store(true, Ordering::SeqCst);
    if outcome.is_some() {
        shared.outcome_shown.store(true, Ordering::SeqCst);
    }
    axum::Json(state::state(&shared.config, outcome.as_deref())).into_response()
}

async fn novnc_file(State(shared): State<Arc<Shared>>, UrlPath(path): UrlPath<String>) -> Response {
    match &shared.config.novnc {
        Some(root) => novnc::serve(root, &path).await,
        None => (StatusCode::NOT_FOUND, "this host has no noVNC\n").into_response(),
    }
}

/// A WebSocket to the machine's VNC server.
async fn vnc_socket(
    State(shared): State<Arc<Shared>>,
    UrlPath(machine): UrlPath<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let socket = shared
        .config
        .driver
        .all_machines()
        .into_iter()
        .find(|m| m.name() == machine)
        .and_then(|m| QemuMachine::from_machine(&m).and_then(|q| q.vnc_socket().map(PathBuf::from)));
    match (socket, upgrade) {
        (None, _) => (StatusCode::NOT_FOUND, format!("no machine {machine:?} with a VNC server\n")).into_response(),
        (Some(socket), Ok(upgrade)) => {
            let stopped = shared.shutdown.subscribe();
            upgrade.on_upgrade(move |ws| vnc_proxy::proxy(ws, socket, stopped))
        }
        (Some(_), Err(rejection)) => rejection.into_response(),
    }
}

/// A failure artifact, by its file name: only files the failure wrote.
async fn artifact(State(shared): State<Arc<Shared>>, UrlPath(file): UrlPath<String>) -> Response {
    let artifacts = shared.config.driver.failure_artifacts();
    let Some(found) = artifacts.iter().find(|a| a.path.file_name().is_some_and(|name| *name == *file)) else {
        return (StatusCode::NOT_FOUND, "no such failure artifact\n").into_response();
    };
    match tokio::fs::read(&found.path).await {
        Ok(data) => ([(header::CONTENT_TYPE, content_type::of(&file))], data).into_response(),
        Err(e) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read {}: {e}\n", found.path.display())).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_servers_names_and_port_are_ours() {
        assert!(is_this_host("127.0.0.1:8080", 8080));
        assert!(is_this_host("localhost:8080", 8080));
        assert!(is_this_host("localhost", 80), "browsers leave out port 80");
        for other in ["127.0.0.1:8081", "localhost", "rebound.example:8080", "127.0.0.1.example:8080", "[::1]:8080", ""]
        {
            assert!(!is_this_host(other, 8080), "{other:?}");
        }
    }
}
