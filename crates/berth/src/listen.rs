//! The server's accept loop, for plain HTTP and for TLS: each connection is
//! served by hyper-util's auto builder (HTTP/1.1, or HTTP/2 by ALPN or
//! prior knowledge), with the client's address put into every request's
//! extensions as axum's `ConnectInfo<SocketAddr>` (access control reads it
//! for rate limits and audit lines).
//!
//! Shutdown: when `stop` fires, the listener closes, every connection is
//! told to finish its in-flight requests (HTTP/1.1 stops keep-alive, HTTP/2
//! sends GOAWAY), and [`serve`] returns once they have, or after `grace`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Longest a TLS handshake may take; a client that stalls in it holds only
/// its own task, never the accept loop.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Serve `app` on `listener` until `stop` resolves; TLS when `tls` is set.
/// Returns false when connections were still open after `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: impl std::future::Future<Output = ()>,
    grace: Duration,
) -> bool {
    let graceful = GracefulShutdown::new();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(stop);
    loop {
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
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = acceptor.is_some();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
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
            app.clone().oneshot(req.map(axum::body::Body::new))
        });
        match &acceptor {
            None => {
                let conn = Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                // The handshake runs in the connection's own task; it is
                // registered for graceful shutdown once it has succeeded.
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
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
                    let conn = Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tls), service)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_ok()
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
        let (paths, _) = crate::tls::auto::ensure(dir, &["localhost".to_string()]).unwrap();
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
            Duration::from_secs(5),
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
                Duration::from_secs(5),
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
