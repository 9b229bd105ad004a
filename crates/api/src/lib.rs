//! The OCI Distribution v1.1 HTTP API over a [`Registry`].
//!
//! A request flows: [`route::Route::parse`] (URL → route, names and digests
//! validated) → [`resolve::Resolver`] (which repository, incl. `?ns=` mirror
//! routing) → [`auth::Authorizer`] (may it?) → one handler per endpoint
//! family (`blobs`, `uploads`, `manifests`, `listing`, `referrers`), each a
//! thin translation between HTTP and [`Registry`] calls. With access control
//! on, [`access`] is the authorizer and `/token` issues its bearer tokens
//! (`token_endpoint`); the decisions themselves are berth-auth's.
#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod auth;
mod blobs;
pub mod error;
mod listing;
mod log;
mod manifests;
pub mod metrics;
mod prefetch;
mod process_metrics;
pub mod range;
mod referrers;
mod refused_body;
pub mod resolve;
pub mod route;
mod token_endpoint;
mod ui;
mod uploads;
pub mod zero_copy;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use berth_cache::Cache;
use berth_reference::RepositoryName;
use berth_registry::{ByteStream, Registry};
use futures::TryStreamExt;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};

use crate::auth::{Access, Action, Authorizer};
use crate::error::ApiError;
use crate::resolve::Resolver;
use crate::route::Route;

pub use crate::auth::AllowAll;
pub use crate::resolve::MirrorResolver;

/// Everything a request handler needs, shared by all connections.
#[derive(Clone)]
pub struct ApiState {
    pub registry: Arc<Registry>,
    pub resolver: Arc<dyn Resolver>,
    pub authorizer: Arc<dyn Authorizer>,
    /// The pull-through cache, which serves reads of mirrored repositories.
    /// Without it, mirrored repositories hold only what was pushed.
    pub cache: Option<Cache>,
    pub metrics: Arc<metrics::Metrics>,
    /// Access control (`[auth]`): users, policy, tokens; `None` allows all.
    pub auth: Option<Arc<berth_auth::Auth>>,
    /// The lifecycle jobs' figures (storage use, evictions), for the UI.
    pub lifecycle: Option<berth_lifecycle::LifecycleMetrics>,
}

impl ApiState {
    /// A plain registry: product routing rules, no authentication, no cache.
    pub fn new(registry: Arc<Registry>) -> Self {
        ApiState {
            resolver: Arc::new(MirrorResolver::new(registry.clone(), None)),
            registry,
            authorizer: Arc::new(AllowAll),
            cache: None,
            metrics: Arc::new(metrics::Metrics::new(None, None)),
            auth: None,
            lifecycle: None,
        }
    }

    /// Access control by berth-auth: its authorizer, and `/token`.
    pub fn with_auth(mut self, auth: Arc<berth_auth::Auth>) -> Self {
        self.authorizer = Arc::new(access::PolicyAuthorizer::new(auth.clone()));
        self.auth = Some(auth);
        self
    }

    /// A registry whose mirrored repositories are filled from upstreams.
    pub fn with_cache(
        registry: Arc<Registry>,
        cache: Cache,
        default_upstream: Option<String>,
    ) -> Self {
        ApiState {
            resolver: Arc::new(MirrorResolver::new(registry.clone(), default_upstream)),
            registry,
            authorizer: Arc::new(AllowAll),
            metrics: Arc::new(metrics::Metrics::new(Some(cache.metrics()), None)),
            cache: Some(cache),
            auth: None,
            lifecycle: None,
        }
    }
}

impl ApiState {
    /// Export the lifecycle jobs' metrics on `/metrics` too.
    pub fn with_lifecycle_metrics(mut self, lifecycle: &berth_lifecycle::Lifecycle) -> Self {
        self.metrics = Arc::new(metrics::Metrics::new(
            self.cache.as_ref().map(Cache::metrics),
            Some(lifecycle.metrics()),
        ));
        self.lifecycle = Some(lifecycle.metrics().clone());
        self
    }
}

/// The complete HTTP application: `/v2/…`, `/token`, the web UI (`/ui`),
/// `/healthz`, `/readyz`, `/metrics`.
pub fn router(state: ApiState) -> Router {
    let mut app = Router::new();
    if state.auth.is_some() {
        app = app.route("/token", axum::routing::any(token_endpoint::token));
    }
    app.merge(ui::routes())
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/readyz", axum::routing::get(readyz))
        .route("/metrics", axum::routing::get(metrics::render))
        .fallback(dispatch)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(refused_body::read_refused_bodies))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            log::log_request,
        ))
        .with_state(state)
}

async fn readyz(State(state): State<ApiState>) -> Response {
    // Ready when the store answers a listing.
    match state.registry.catalog(Some(1), None).await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("storage not ready: {e}\n"),
        )
            .into_response(),
    }
}

/// Per-request context handed to handlers.
pub(crate) struct Ctx {
    pub state: ApiState,
    pub repo: RepositoryName,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    /// The client's address, when the server records it.
    pub client: Option<SocketAddr>,
    /// Blob bytes may go from file to socket by `sendfile` (plain HTTP/1.x).
    pub zero_copy: Option<zero_copy::ZeroCopy>,
    /// Another replica forwarded its client's blob GET here (it proved the
    /// replicas' shared secret): fetched here, never forwarded again.
    pub from_peer: bool,
}

/// The client's address, when the server was started with connect info.
fn client_addr(parts: &http::request::Parts) -> Option<SocketAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

/// The connection's zero-copy handle, for HTTP/1.x requests only: HTTP/2
/// frames body bytes itself, copying them. The listener attaches the handle
/// to HTTP/1.x requests of plain connections alone; this keeps the rule
/// where the handle is used too.
fn zero_copy_of(parts: &http::request::Parts) -> Option<zero_copy::ZeroCopy> {
    if parts.version >= http::Version::HTTP_2 {
        return None;
    }
    parts.extensions.get::<zero_copy::ZeroCopy>().cloned()
}

impl Ctx {
    pub fn registry(&self) -> &Registry {
        &self.state.registry
    }

    /// The cache, when this request's repository is a mirror it serves.
    pub fn mirror(&self) -> Option<&Cache> {
        self.state
            .cache
            .as_ref()
            .filter(|_| Cache::upstream_of(&self.repo).is_some())
    }
}

async fn dispatch(State(state): State<ApiState>, req: Request) -> Response {
    let mut resp = match handle(state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    resp.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

/// The upstream the request's host names (`Host`, or HTTP/2's
/// `:authority`), when the cache routes by host: treated as its `?ns=`.
fn routed_host(state: &ApiState, parts: &http::request::Parts) -> Option<String> {
    let cache = state.cache.as_ref()?;
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))?;
    cache.upstream_for_host(host)
}

fn query_map(uri: &http::Uri) -> HashMap<String, String> {
    axum::extract::Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

/// The request body as a stream of bytes; a broken connection surfaces as an
/// I/O error so that nothing half-received is mistaken for a complete body.
pub(crate) fn body_stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map_err(std::io::Error::other))
}

async fn handle(state: ApiState, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let route = match Route::parse(parts.uri.path()) {
        // A reference that cannot be a tag names no manifest: reads and
        // deletes answer 404 (as the conformance suite expects); only a push
        // under such a name is a client error.
        Err(ApiError::ReferenceInvalid(r)) if parts.method != Method::PUT => {
            return Err(ApiError::Registry(
                berth_registry::RegistryError::ManifestUnknown(r),
            ))
        }
        other => other?,
    };
    let Some(route) = route else {
        return Err(ApiError::NotFound);
    };
    let query = query_map(&parts.uri);
    let method = parts.method.clone();
    let (action, read) = match method {
        Method::GET | Method::HEAD => (Action::Pull, true),
        Method::DELETE => (Action::Delete, false),
        _ => (Action::Push, false),
    };
    let repo = match route.name() {
        Some(name) => {
            let ns = match query.get("ns") {
                Some(ns) => Some(ns.clone()),
                None => routed_host(&state, &parts),
            };
            Some(state.resolver.resolve(name, ns.as_deref(), read).await?)
        }
        None => None,
    };
    let client = client_addr(&parts);
    // A replica forwarding a cold blob GET (see berth_cache::peers) was
    // authorised where its client asked; the secret admits blob reads only.
    let from_peer = read
        && matches!(route, Route::Blob { .. })
        && state
            .cache
            .as_ref()
            .and_then(Cache::peers)
            .is_some_and(|p| {
                parts
                    .headers
                    .get(header::AUTHORIZATION)
                    .is_some_and(|v| p.is_peer_authorization(v.as_bytes()))
            });
    let caller = if from_peer {
        auth::Caller::unrestricted()
    } else {
        state
            .authorizer
            .check(
                client,
                &parts.headers,
                &Access {
                    repository: repo.as_ref(),
                    action,
                },
            )
            .await?
    };

    let allow = route.allow();
    let Some(repo) = repo else {
        return match (method, route) {
            (Method::GET | Method::HEAD, Route::Base) => {
                Ok(([(header::CONTENT_TYPE, "application/json")], "{}").into_response())
            }
            (Method::GET, Route::Catalog) => listing::catalog(&state, &query, &caller).await,
            _ => Err(ApiError::MethodNotAllowed(allow)),
        };
    };
    let zero_copy = zero_copy_of(&parts);
    let ctx = Ctx {
        state,
        repo,
        query,
        headers: parts.headers,
        client,
        zero_copy,
        from_peer,
    };
    let audited = ctx.state.auth.is_some() && action != Action::Pull;
    let result = route_to_handler(&ctx, method.clone(), route, body).await;
    // Who it was, for the request log line (`log`), whatever the outcome.
    let logged = tracing::enabled!(target: "berth::request", tracing::Level::INFO);
    let result = match (result, &caller.user) {
        (r, Some(user)) if logged => {
            let mut resp = r.unwrap_or_else(IntoResponse::into_response);
            resp.extensions_mut().insert(log::User(user.clone()));
            Ok(resp)
        }
        (r, _) => r,
    };
    if audited {
        let status = match &result {
            Ok(r) => r.status(),
            Err(e) => e.status(),
        };
        let outcome = if status.is_success() {
            "ok".to_string()
        } else {
            format!("failed {}", status.as_u16())
        };
        access::audit(
            caller.user.as_deref(),
            client,
            Some(ctx.repo.as_str()),
            &format!("{} ({method})", action.as_str()),
            &outcome,
        );
    }
    result
}

async fn route_to_handler(
    ctx: &Ctx,
    method: Method,
    route: Route,
    body: Body,
) -> Result<Response, ApiError> {
    let allow = route.allow();
    let head = method == Method::HEAD;
    match (method, route) {
        (Method::GET, Route::Tags { .. }) => listing::tags(ctx).await,
        (Method::GET | Method::HEAD, Route::Manifest { reference, .. }) => {
            manifests::get(ctx, &reference, head).await
        }
        (Method::PUT, Route::Manifest { reference, .. }) => {
            manifests::put(ctx, &reference, body).await
        }
        (Method::DELETE, Route::Manifest { reference, .. }) => {
            manifests::delete(ctx, &reference).await
        }
        (Method::GET | Method::HEAD, Route::Blob { digest, .. }) => {
            blobs::get(ctx, &digest, head).await
        }
        (Method::DELETE, Route::Blob { digest, .. }) => blobs::delete(ctx, &digest).await,
        (Method::POST, Route::Uploads { .. }) => uploads::start(ctx, body).await,
        (Method::GET, Route::Upload { id, .. }) => uploads::status(ctx, &id).await,
        (Method::PATCH, Route::Upload { id, .. }) => uploads::patch(ctx, &id, body).await,
        (Method::PUT, Route::Upload { id, .. }) => uploads::put(ctx, &id, body).await,
        (Method::DELETE, Route::Upload { id, .. }) => uploads::cancel(ctx, &id).await,
        (Method::GET, Route::Referrers { digest, .. }) => referrers::get(ctx, &digest).await,
        (Method::POST, Route::Prefetch { reference, .. }) => prefetch::post(ctx, reference).await,
        _ => Err(ApiError::MethodNotAllowed(allow)),
    }
}

/// Insert a header whose value we built ourselves; values that are not
/// valid header text (which our own formatting never produces) are dropped.
pub(crate) fn set_header(
    h: &mut HeaderMap,
    name: impl header::IntoHeaderName,
    value: impl AsRef<str>,
) {
    if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
        h.insert(name, v);
    }
}
