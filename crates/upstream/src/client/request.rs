//! The request path every operation goes through: authorize (fetching a
//! token when the plan says so), send with the first-byte timeout, answer
//! one 401, then map the status and read bodies within bounds.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use crate::auth::{max_token_response, token_url, Plan, Scope, TokenResponse};
use crate::challenge::challenges_from_headers;
use crate::error::{parse_retry_after, TimeoutPhase, UpstreamError};
use crate::stall::StallClock;

use super::{header_str, UpstreamClient, MAX_ERROR_BODY};

/// A request body.
pub(crate) enum ReqBody {
    Empty,
    /// Resendable (after a 401).
    Bytes(Bytes),
    /// Sent once: a 401 on it is final, so the auth flow runs beforehand.
    Stream(reqwest::Body),
}

/// One request, before auth.
pub(crate) struct Req {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: ReqBody,
    pub scopes: Vec<Scope>,
    /// Total timeout; `None` for blob transfers.
    pub timeout: Option<Duration>,
}

/// The stall window of the request a response answers, carried in the
/// response's extensions so that every body reader finds it.
#[derive(Debug, Clone, Copy)]
struct StallWindow(Duration);

/// The stall window a response's body is read under.
pub(super) fn stall_window(resp: &Response) -> Duration {
    resp.extensions()
        .get::<StallWindow>()
        .map_or(crate::config::DEFAULT_STALL_TIMEOUT, |w| w.0)
}

/// Run `send` (a request's `send()`), failing with a first-byte timeout when
/// no response headers arrive within `limit`.
async fn within_first_byte<F>(
    limit: Duration,
    what: &str,
    send: F,
) -> Result<Response, UpstreamError>
where
    F: std::future::Future<Output = Result<Response, reqwest::Error>>,
{
    match tokio::time::timeout(limit, send).await {
        Ok(r) => r.map_err(|e| UpstreamError::transport(what, e)),
        Err(_) => Err(UpstreamError::timeout(what, TimeoutPhase::FirstByte, limit)),
    }
}

impl UpstreamClient {
    /// Turn an auth plan into the header to send, fetching a token if needed.
    async fn authorize(
        &self,
        plan: Plan,
        request_scopes: &[Scope],
    ) -> Result<Option<String>, UpstreamError> {
        match plan {
            Plan::Anonymous => Ok(None),
            Plan::Header(h) => Ok(Some(h)),
            Plan::FetchToken {
                realm,
                service,
                scopes,
            } => {
                // One token fetch at a time per registry: requests that start
                // together (a pull's blobs) then share the first one's token.
                self.inner.policy.check(&realm).map_err(|why| {
                    tracing::warn!(registry = %self.inner.registry, reason = %why, "refused a token realm");
                    UpstreamError::Protocol(format!("token realm refused: {why}"))
                })?;
                let _one_at_a_time = self.inner.token_fetch.lock().await;
                if let Some(h) = self
                    .inner
                    .auth
                    .cached_header(&realm, service.as_deref(), &scopes)
                {
                    return Ok(Some(h));
                }
                // Credentials cross the network in the clear only for an
                // upstream the operator marked insecure.
                let credentials = self
                    .inner
                    .auth
                    .credentials()
                    .filter(|_| self.inner.policy.may_send_credentials(&realm));
                if credentials.is_none() && self.inner.auth.credentials().is_some() {
                    tracing::warn!(registry = %self.inner.registry, "the token realm is plain http: asking for a token without the configured credentials (mark the upstream insecure to send them)");
                }
                let rb = match credentials {
                    // OAuth2: trade the refresh token for an access token.
                    Some(c) if c.identity_token.is_some() => {
                        let mut form = url::form_urlencoded::Serializer::new(String::new());
                        form.append_pair("grant_type", "refresh_token")
                            .append_pair("client_id", "berth")
                            .append_pair(
                                "refresh_token",
                                c.identity_token.as_deref().unwrap_or_default(),
                            );
                        if let Some(s) = &service {
                            form.append_pair("service", s);
                        }
                        let scope: Vec<String> = scopes.iter().map(Scope::to_string).collect();
                        form.append_pair("scope", &scope.join(" "));
                        self.inner
                            .http
                            .post(realm.clone())
                            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                            .body(form.finish())
                    }
                    // The token spec's GET, with Basic credentials if we have them.
                    Some(c) => self
                        .inner
                        .http
                        .get(token_url(&realm, service.as_deref(), &scopes))
                        .header(header::AUTHORIZATION, sensitive(&c.basic_header())?),
                    None => self
                        .inner
                        .http
                        .get(token_url(&realm, service.as_deref(), &scopes)),
                };
                let rb = rb.timeout(self.inner.request_timeout);
                let obtained = Instant::now();
                let mut resp =
                    within_first_byte(self.inner.first_byte_timeout, "token request", rb.send())
                        .await?;
                resp.extensions_mut()
                    .insert(StallWindow(self.inner.stall_timeout));
                let status = resp.status();
                if !status.is_success() {
                    let retry_after = parse_retry_after(header_str(resp.headers(), "retry-after"));
                    let body = read_bounded(resp, MAX_ERROR_BODY).await.unwrap_or_default();
                    return Err(UpstreamError::from_status(
                        status,
                        retry_after,
                        &body,
                        &format!("token server {realm}"),
                    ));
                }
                let body = read_bounded(resp, max_token_response()).await?;
                let (token, lifetime) = TokenResponse::parse(&body)?;
                self.inner.auth.store_token(
                    &realm,
                    service.as_deref(),
                    &[request_scopes, &scopes],
                    &token,
                    lifetime,
                    obtained,
                );
                tracing::debug!(registry = %self.inner.registry, %realm, lifetime_s = lifetime.as_secs(), "fetched a registry token");
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    async fn send_once(
        &self,
        req: &Req,
        authorization: Option<&str>,
        body: Option<reqwest::Body>,
    ) -> Result<Response, UpstreamError> {
        let mut rb = self
            .inner
            .http
            .request(req.method.clone(), req.url.clone())
            .headers(self.inner.extra_headers.clone())
            .headers(req.headers.clone());
        if let Some(a) = authorization {
            rb = rb.header(header::AUTHORIZATION, sensitive(a)?);
        }
        if let Some(t) = req.timeout {
            rb = rb.timeout(t);
        }
        let what = format!("{} {}", req.method, req.url);
        let mut resp = match body {
            // Sending a body may take any time; the HTTP client's read
            // timeout and the request's total timeout bound the answer.
            Some(b) => rb
                .body(b)
                .send()
                .await
                .map_err(|e| UpstreamError::transport(&what, e))?,
            None => within_first_byte(self.inner.first_byte_timeout, &what, rb.send()).await?,
        };
        resp.extensions_mut()
            .insert(StallWindow(self.inner.stall_timeout));
        Ok(resp)
    }

    /// Send a request through the auth flow; returns the response whatever
    /// its status (see [`check`]).
    pub(crate) async fn execute(&self, mut req: Req) -> Result<Response, UpstreamError> {
        // `retry` is the body to send again after a 401; `None` when the body
        // was a stream, which cannot be sent twice.
        let (first, retry): (Option<reqwest::Body>, Option<Option<Bytes>>) =
            match std::mem::replace(&mut req.body, ReqBody::Empty) {
                ReqBody::Empty => (None, Some(None)),
                ReqBody::Bytes(b) => (Some(reqwest::Body::from(b.clone())), Some(Some(b))),
                ReqBody::Stream(s) => (Some(s), None),
            };
        // Credentials go only to the registry itself; another host (an
        // upload Location elsewhere) must pass the network policy and never
        // gets them, nor a token obtained with them.
        let at_registry = req.url.origin() == self.inner.base.origin();
        let plan = if at_registry {
            self.inner.auth.plan(&req.scopes)
        } else {
            self.inner
                .policy
                .check(&req.url)
                .map_err(|why| UpstreamError::Protocol(format!("refused: {why}")))?;
            Plan::Anonymous
        };
        let authorization = self.authorize(plan, &req.scopes).await?;
        let resp = self
            .send_once(&req, authorization.as_deref(), first)
            .await?;
        let retry_body = match retry {
            Some(b) if resp.status() == StatusCode::UNAUTHORIZED => b,
            _ => return Ok(resp),
        };
        // One answer to the challenge, then whatever the registry says is final.
        // When a redirect led to the challenger (registry.k8s.io sends pulls
        // on to regional registries), the retry goes straight there: a
        // redirect to another host would drop the Authorization again.
        let final_url = resp.url().clone();
        let redirected = final_url.origin() != req.url.origin();
        if (redirected || !at_registry) && self.inner.auth.credentials().is_some() {
            // The challenger is not the registry: with credentials configured,
            // any token we could present carries their access.
            return Ok(resp);
        }
        let challenges = challenges_from_headers(resp.headers());
        let plan = self.inner.auth.plan_after_challenge(
            &challenges,
            &req.scopes,
            authorization.is_some() && !redirected,
        )?;
        if redirected {
            if matches!(&plan, Plan::Header(h) if h.starts_with("Basic ")) {
                // Our password goes only to the registry we were pointed at.
                return Ok(resp);
            }
            req.url = final_url;
        }
        let authorization = self.authorize(plan, &req.scopes).await?;
        self.send_once(
            &req,
            authorization.as_deref(),
            retry_body.map(reqwest::Body::from),
        )
        .await
    }

    pub(crate) fn req(&self, method: Method, url: Url, scopes: Vec<Scope>) -> Req {
        Req {
            method,
            url,
            headers: HeaderMap::new(),
            body: ReqBody::Empty,
            scopes,
            timeout: Some(self.inner.request_timeout),
        }
    }
}

/// Give a 404 without a spec body (every HEAD) the code the spec would use.
pub(super) fn with_code(e: UpstreamError, code: &str) -> UpstreamError {
    match e {
        UpstreamError::NotFound {
            code: None,
            message,
        } => UpstreamError::NotFound {
            code: Some(code.to_string()),
            message,
        },
        other => other,
    }
}

/// Read a whole (small) body, refusing more than `limit` bytes, and
/// failing when it stalls (see `stall`).
pub(crate) async fn read_bounded(mut resp: Response, limit: usize) -> Result<Bytes, UpstreamError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(UpstreamError::Protocol(format!(
            "{} sent a body larger than {limit} bytes",
            resp.url()
        )));
    }
    let mut buf = Vec::new();
    let mut clock = StallClock::new(stall_window(&resp));
    let what = format!("reading the body of {}", resp.url());
    loop {
        clock.resume();
        let chunk = match tokio::time::timeout_at(clock.deadline(), resp.chunk()).await {
            Ok(c) => c.map_err(|e| UpstreamError::transport(&what, e))?,
            Err(_) => return Err(clock.error(&what)),
        };
        let Some(chunk) = chunk else { break };
        clock.record(chunk.len());
        if buf.len() + chunk.len() > limit {
            return Err(UpstreamError::Protocol(format!(
                "{} sent a body larger than {limit} bytes",
                resp.url()
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// An `Authorization` value, marked sensitive so that it is never logged.
fn sensitive(value: &str) -> Result<HeaderValue, UpstreamError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        UpstreamError::Protocol("credentials or token not valid in a header".to_string())
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// Pass a success through; turn anything else into an [`UpstreamError`].
pub(crate) async fn check(resp: Response, what: &str) -> Result<Response, UpstreamError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = parse_retry_after(header_str(resp.headers(), "retry-after"));
    // A final 401 says why in its challenge: `insufficient_scope` is what
    // Docker Hub answers for a repository that is private or does not exist.
    let challenge_error = (status == StatusCode::UNAUTHORIZED)
        .then(|| {
            challenges_from_headers(resp.headers())
                .iter()
                .find_map(|c| c.bearer().and_then(|b| b.error))
        })
        .flatten();
    let body = read_bounded(resp, MAX_ERROR_BODY).await.unwrap_or_default();
    let what = match challenge_error {
        Some(e) => format!("{what} (challenge error: {e})"),
        None => what.to_string(),
    };
    Err(UpstreamError::from_status(
        status,
        retry_after,
        &body,
        &what,
    ))
}
