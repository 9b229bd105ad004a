//! `/ui/cache`: how the cache is doing (hit ratio, bytes served from the
//! cache against bytes fetched from upstreams, coalesced and stale serves),
//! each upstream's health, and storage use with what eviction and GC freed.
//! Read from the same counters `/metrics` exports. With access control on,
//! only a signed-in user sees it (it names upstreams and their errors).

use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use maud::{html, Markup};

use super::layout::{self, ago, bytes, percent, Section};
use super::{page_response, sign_in_required, Viewer};
use crate::ApiState;

/// Longest upstream error text shown.
const MAX_ERROR: usize = 200;

pub async fn page(State(state): State<ApiState>, viewer: Viewer) -> Response {
    if viewer.auth_on && viewer.user().is_none() {
        return sign_in_required("Sign in to see the cache and storage figures.");
    }
    let body = html! {
        (cache_section(&state))
        (upstreams_section(&state))
        (storage_section(&state))
    };
    page_response(
        StatusCode::OK,
        layout::page(&viewer, Section::Cache, "Cache & storage", body),
    )
}

fn cache_section(state: &ApiState) -> Markup {
    let Some(cache) = &state.cache else {
        return html! { section #cache { h2 { "Cache" } p.empty { "This server has no pull-through cache." } } };
    };
    let m = cache.metrics();
    let (hits, misses) = (m.hits.get(), m.misses.get());
    let (from_cache, from_upstream) = (m.hit_bytes.get(), m.upstream_bytes.get());
    html! {
        section #cache {
            h2 { "Cache" }
            div.cards {
                div.card #hit-ratio { span.label { "Hit ratio" } span.value { (percent(hits, hits + misses)) } span.sub { (hits) " hits, " (misses) " misses" } }
                div.card #bytes-from-cache { span.label { "Served from cache" } span.value { (bytes(from_cache)) } span.sub { (percent(from_cache, from_cache + from_upstream)) " of blob bytes" } }
                div.card #bytes-from-upstreams { span.label { "Fetched from upstreams" } span.value { (bytes(from_upstream)) } }
                div.card #stale-serves { span.label { "Stale serves" } span.value { (m.stale_serves.get()) } span.sub { "tags served while the upstream could not be asked" } }
                div.card { span.label { "Coalesced requests" } span.value { (m.coalesced.get()) } span.sub { "joined a fetch already running" } }
                div.card { span.label { "Failed fills" } span.value { (m.fill_failures.get()) } }
                div.card { span.label { "Served uncached" } span.value { (m.uncached_serves.get()) } span.sub { "storage full" } }
            }
        }
    }
}

fn upstreams_section(state: &ApiState) -> Markup {
    let board = state
        .cache
        .as_ref()
        .map(|c| c.metrics().health.snapshot())
        .unwrap_or_default();
    html! {
        section #upstreams {
            h2 { "Upstreams" }
            @if board.is_empty() { p.empty { "No upstream has been asked yet." } } @else {
                table {
                    thead { tr { th { "Upstream" } th { "Health" } th.num { "Requests" } th.num { "Failures" } th.num { "Mean answer" } th { "Last success" } th { "Last failure" } } }
                    tbody {
                        @for (host, h) in &board {
                            tr {
                                td { (host) }
                                td { @if h.failing() { span.bad { "failing" } } @else { span.good { "ok" } } }
                                td.num { (h.requests) }
                                td.num { (h.failures) " (" (percent(h.failures, h.requests)) ")" }
                                td.num { (h.mean_time().map(|d| format!("{} ms", d.as_millis())).unwrap_or_else(|| "–".into())) }
                                td { (h.last_success.map(ago).unwrap_or_else(|| "never".into())) }
                                td {
                                    @match &h.last_failure {
                                        Some((at, why)) => { (ago(*at)) ": " span.muted { (without_queries(why)) } }
                                        None => { "never" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn storage_section(state: &ApiState) -> Markup {
    let Some(l) = &state.lifecycle else {
        return html! { section #storage { h2 { "Storage" } p.empty { "No lifecycle figures on this server." } } };
    };
    let usage = l.usage();
    // One snapshot when a collection measured one (the gauges are set at
    // different times: the evictor refreshes the total between collections).
    let gauge = |g: &prometheus_client::metrics::gauge::Gauge| g.get().max(0) as u64;
    let (stored, pinned, cached) = match &usage {
        Some((_, r)) => (r.total.bytes, r.pinned.bytes, r.cached.bytes),
        None => (
            gauge(&l.stored_bytes),
            gauge(&l.pinned_bytes),
            gauge(&l.cached_bytes),
        ),
    };
    html! {
        section #storage {
            h2 { "Storage" }
            div.cards {
                div.card #stored { span.label { "Blobs stored" } span.value { (bytes(stored)) } }
                div.card { span.label { "Pinned (pushed, loaded)" } span.value { (bytes(pinned)) } }
                div.card { span.label { "Cache only (evictable)" } span.value { (bytes(cached)) } }
                div.card #evictions { span.label { "Evictions" } span.value { (l.evictions.get()) } span.sub { (bytes(l.evicted_bytes.get())) " freed" } }
                div.card { span.label { "Garbage collections" } span.value { (l.gc_runs.get()) } span.sub { (bytes(l.bytes_freed.get())) " freed, " (l.blobs_deleted.get()) " blobs" } }
                div.card { span.label { "Uploads open" } span.value { (l.uploads_open.get()) } }
            }
            @match &usage {
                Some((at, report)) => {
                    table #by-upstream {
                        caption { "By upstream, at the last collection (" (ago(*at)) ")" }
                        thead { tr { th { "Held for" } th.num { "Blobs" } th.num { "Bytes" } } }
                        tbody {
                            @for (group, b) in &report.by_upstream {
                                tr { td { (group) } td.num { (b.blobs) } td.num { (bytes(b.bytes)) } }
                            }
                        }
                    }
                }
                None => { p.empty { "No collection has measured storage yet." } }
            }
        }
    }
}

/// An upstream error for the page: at most [`MAX_ERROR`] characters, and
/// no URL's query (a redirect's presigned signature travels there).
fn without_queries(text: &str) -> String {
    let words: Vec<String> = text
        .split(' ')
        .map(|w| match (w.contains("://"), w.find('?')) {
            (true, Some(q)) => format!("{}?…", &w[..q]),
            _ => w.to_string(),
        })
        .collect();
    words.join(" ").chars().take(MAX_ERROR).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_texts_lose_their_urls_queries() {
        let t = super::without_queries(
            "cannot reach upstream: error sending request for url (https://cdn.example/blob?X-Amz-Signature=abc&x=1)",
        );
        assert!(!t.contains("Signature"), "{t}");
        assert!(t.contains("https://cdn.example/blob?…"), "{t}");
        assert_eq!(
            super::without_queries(&"x".repeat(500)).len(),
            super::MAX_ERROR
        );
    }
}
