//! The server's accept loop, for plain HTTP and for TLS: each connection is
//! served by hyper-util's auto builder (HTTP/1.1, or HTTP/2 by ALPN or
//! prior knowledge), with the client's address put into every request's
//! extensions as axum's `ConnectInfo<SocketAddr>` (access control reads it
//! for rate limits and audit lines).
//!
//! What a client may hold is bounded here ([`limits`]): every connection
//! has a place in a bounded table ([`conn`]) and its bytes pass timers
//! ([`guard`]), so half-open sockets, clients that stop reading and uploads
//! that stop sending are closed instead of accumulating.
//!
//! Shutdown: when `stop` fires, the listener closes, every connection is
//! told to finish its in-flight requests (HTTP/1.1 stops keep-alive, HTTP/2
//! sends GOAWAY), and [`serve`] returns once they have; after the grace
//! period the rest are closed.

pub mod conn;
pub mod guard;
pub mod limits;
pub mod rate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use berth_api::zero_copy::{SendFileSocket, ZeroCopy};
use conn::{ConnState, ConnTable, Refusal};
use guard::{InFlight, RequestBody, Watched};
pub use limits::Limits;

/// After the grace period, how long closed connections get to unwind.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The body a refused connection is told (plain HTTP; a TLS one is closed).
const REFUSED: &str =
    r#"{"errors":[{"code":"UNAVAILABLE","message":"too many connections, retry shortly"}]}"#;

/// Serve `app` on `listener` until `stop` resolves; TLS when `tls` is set.
/// Returns false when connections were still open after the grace period.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: impl std::future::Future<Output = ()>,
    limits: Limits,
) -> bool {
    let graceful = GracefulShutdown::new();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let table = ConnTable::new(limits);
    let rate = limits
        .max_requests_per_client
        .map(|n| Arc::new(rate::RateLimiter::new(n)));
    tokio::pin!(stop);
    loop {
        // Shed connections close on their own tasks; a burst of newcomers
        // must not outrun them (each still holds a file descriptor).
        tokio::select! {
            _ = table.room_to_accept() => {}
            _ = &mut stop => break,
        }
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: pause, keep serving.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let admitted = match table.admit(peer) {
            Ok(a) => a,
            Err(why) => {
                refuse(tcp, peer, why, acceptor.is_none());
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        // Plain HTTP/1.x sends blobs by sendfile; TLS encrypts in user space.
        let (accepted, zero_copy) = match &acceptor {
            None => {
                let socket = SendFileSocket::new(tcp);
                let handle = socket.handle();
                (Accepted::Plain(socket), Some(handle))
            }
            Some(acceptor) => (Accepted::Tls(tcp, acceptor.clone()), None),
        };
        let service = service(
            app.clone(),
            peer,
            acceptor.is_some(),
            zero_copy,
            &admitted.state,
            &limits,
            rate.clone(),
        );
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let state = admitted.state.clone();
            let run = async {
                match accepted {
                    Accepted::Plain(socket) => {
                        serve_io(socket, &state, limits, service, watcher, peer).await
                    }
                    Accepted::Tls(tcp, acceptor) => {
                        // The handshake counts as reading the first request's
                        // headers: a client stalling in it is cut off as one
                        // stalling in them would be.
                        let tls =
                            match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp))
                                .await
                            {
                                Ok(Ok(tls)) => tls,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                        serve_io(tls, &state, limits, service, watcher, peer).await
                    }
                }
            };
            tokio::select! {
                _ = run => {}
                _ = state.closing() => {
                    tracing::debug!(%peer, "connection closed by the server");
                }
            }
            drop(admitted);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_ok()
    {
        return true;
    }
    table.close_all();
    let unwound = async {
        while table.len() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, unwound).await;
    false
}

/// An admitted connection, before its first byte is read.
enum Accepted {
    Plain(SendFileSocket),
    Tls(TcpStream, tokio_rustls::TlsAcceptor),
}

/// Answer a connection the table has no room for, without waiting on it.
fn refuse(tcp: TcpStream, peer: SocketAddr, why: Refusal, plain: bool) {
    let limit = match why {
        Refusal::Full | Refusal::ClientFull => "the connection limit",
        Refusal::Memory => "the memory budget",
    };
    tracing::warn!(%peer, reason = ?why, "refusing a connection: {limit} is reached");
    if plain {
        // The socket's buffer takes this at once; a client that is not
        // reading loses nothing it asked for.
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{REFUSED}",
            REFUSED.len()
        );
        let _ = tcp.try_write(response.as_bytes());
    }
}

/// The per-connection service: client address and Host into the request,
/// its body under the body timeout, and the request counted in flight until
/// its response is sent.
fn service(
    app: Router,
    peer: SocketAddr,
    tls: bool,
    zero_copy: Option<ZeroCopy>,
    state: &Arc<ConnState>,
    limits: &Limits,
    rate: Option<Arc<rate::RateLimiter>>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = hyper::Response<guard::ResponseBody<axum::body::Body>>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    let state = state.clone();
    let body_timeout = limits.body_timeout;
    hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let in_flight = InFlight::start(state.clone());
        req.extensions_mut().insert(ConnectInfo(peer));
        // Only HTTP/1.x writes body frames as they are (see serve_io):
        // h2c on a plain connection frames them itself.
        if let Some(handle) = zero_copy
            .as_ref()
            .filter(|_| req.version() < http::Version::HTTP_2)
        {
            req.extensions_mut().insert(handle.clone());
        }
        // HTTP/2 names the host in the `:authority` pseudo-header, which
        // hyper puts into the URI, not into a Host header: copy it there
        // so that what reads Host (the token realm of challenges) sees
        // the name and port the client used. Without this, curl over TLS
        // (HTTP/2 by ALPN) was sent to `https://localhost/token`.
        if !req.headers().contains_key(http::header::HOST) {
            let authority = req
                .uri()
                .authority()
                .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok());
            if let Some(value) = authority {
                req.headers_mut().insert(http::header::HOST, value);
            }
        }
        if tls {
            // berth terminates TLS itself: say so the way a proxy in
            // front would, so that the token realm in challenges is
            // https (whatever the client sent in this header).
            req.headers_mut()
                .insert("x-forwarded-proto", http::HeaderValue::from_static("https"));
        }
        let over = rate.as_ref().and_then(|r| r.take(peer.ip()).err());
        let req = req.map(|b| axum::body::Body::new(RequestBody::new(b, body_timeout)));
        let response = (over.is_none()).then(|| app.clone().oneshot(req));
        async move {
            let response = match (response, over) {
                (Some(r), _) => r.await?,
                (None, wait) => too_many_requests(wait.unwrap_or(1)),
            };
            Ok(response.map(|b| in_flight.into_body(b)))
        }
    })
}

/// The answer to a client over its request rate.
fn too_many_requests(wait: u64) -> hyper::Response<axum::body::Body> {
    let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"too many requests from this address"}]}"#;
    let mut r = hyper::Response::new(axum::body::Body::from(body));
    *r.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&wait.to_string()) {
        h.insert(http::header::RETRY_AFTER, v);
    }
    r
}

/// Serve one connection's requests until it ends.
async fn serve_io<IO, S>(
    io: IO,
    state: &Arc<ConnState>,
    limits: Limits,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
    peer: SocketAddr,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<guard::ResponseBody<axum::body::Body>>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let io = Watched::new(io, state.clone(), limits);
    let mut builder = Builder::new(TokioExecutor::new());
    // Vectored writes ("queue"): hyper hands body frames to the socket as
    // they are, never copied into its own buffer, which zero-copy sends
    // rely on (berth_api::zero_copy); TLS streams say they do not do
    // vectored writes and are flattened as before.
    if io.is_write_vectored() {
        builder.http1().writev(true);
    }
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};
    use std::net::SocketAddr;

    /// A router that answers with the client address it was given, and a
    /// slow route for the shutdown check.
    fn echo() -> Router {
        Router::new()
            .route(
                "/who",
                axum::routing::get(|ConnectInfo(addr): ConnectInfo<SocketAddr>| async move {
                    addr.to_string()
                }),
            )
            .route(
                "/host",
                axum::routing::get(|headers: http::HeaderMap| async move {
                    let host = headers
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("none")
                        .to_string();
                    let proto = headers
                        .get("x-forwarded-proto")
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("none")
                        .to_string();
                    format!("{host} {proto}")
                }),
            )
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    "done"
                }),
            )
    }

    async fn get<S>(io: S, path: &str) -> (u16, String)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header("host", "localhost")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn tls_pair(dir: &std::path::Path) -> (Arc<rustls::ServerConfig>, tokio_rustls::TlsConnector) {
        let paths = crate::tls::auto::ensure(dir, &["localhost".to_string()])
            .unwrap()
            .paths;
        let cert = crate::tls::ReloadingCert::open(&paths.server_cert, &paths.server_key).unwrap();
        let server = crate::tls::server_config(Arc::new(cert)).unwrap();
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_file(&paths.ca_cert).unwrap())
            .unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        (
            Arc::new(server),
            tokio_rustls::TlsConnector::from(Arc::new(client)),
        )
    }

    /// HTTP/2 (prior knowledge here) carries no Host header, only
    /// `:authority`: the handlers see it as Host all the same, and a plain
    /// connection claims no https.
    #[tokio::test]
    async fn http2_authority_becomes_the_host_header() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            echo(),
            None,
            async {
                let _ = stop_rx.await;
            },
            Limits {
                shutdown_grace: Duration::from_secs(5),
                ..Limits::default()
            },
        ));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get(format!("http://{addr}/host"))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        assert!(req.headers().get(http::header::HOST).is_none());
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(String::from_utf8_lossy(&body), format!("{addr} none"));
        stop_tx.send(()).unwrap();
        assert!(server.await.unwrap());
    }

    #[tokio::test]
    async fn connect_info_on_plain_and_tls_and_graceful_stop() {
        let dir = tempfile::tempdir().unwrap();
        let (server_tls, connector) = tls_pair(dir.path());
        for tls in [None, Some(server_tls)] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let is_tls = tls.is_some();
            let server = tokio::spawn(serve(
                listener,
                echo(),
                tls,
                async {
                    let _ = stop_rx.await;
                },
                Limits {
                    shutdown_grace: Duration::from_secs(5),
                    ..Limits::default()
                },
            ));
            let connect = || async {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let local = tcp.local_addr().unwrap();
                (tcp, local)
            };
            let (tcp, local) = connect().await;
            let (status, body) = if is_tls {
                let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
                get(connector.connect(name, tcp).await.unwrap(), "/who").await
            } else {
                get(tcp, "/who").await
            };
            assert_eq!((status, body), (200, local.to_string()), "tls: {is_tls}");

            // A request in flight when the stop comes is answered.
            let (tcp, _) = connect().await;
            let slow = if is_tls {
                let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
                let io = connector.connect(name, tcp).await.unwrap();
                tokio::spawn(async move { get(io, "/slow").await })
            } else {
                tokio::spawn(async move { get(tcp, "/slow").await })
            };
            tokio::time::sleep(Duration::from_millis(100)).await;
            stop_tx.send(()).unwrap();
            assert_eq!(slow.await.unwrap(), (200, "done".to_string()));
            assert!(
                server.await.unwrap(),
                "connections left after the grace period"
            );
            assert!(
                tokio::net::TcpStream::connect(addr).await.is_err(),
                "still listening"
            );
        }
    }
}
