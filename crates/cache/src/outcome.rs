//! What the cache did for the current request — served what it held
//! (`hit`), started fetching (`fill`), joined a fetch under way (`follow`),
//! checked a tag upstream (`revalidated`), served a held tag because the
//! upstream failed (`stale`), streamed without keeping (`uncached`) — and
//! which upstream that involved, for the request's log line.
//!
//! It is recorded where the cache decides and read by the API when it
//! writes the line. A task-local rather than a value every signature
//! carries: outside a [`scope`] (logging off, lifecycle jobs, prefetches)
//! recording does nothing.

use std::cell::RefCell;
use std::future::Future;

/// The last outcome recorded in a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub outcome: &'static str,
    pub upstream: String,
}

tokio::task_local! {
    static OUTCOME: RefCell<Option<Recorded>>;
}

/// Run `f`, returning what the cache recorded while it ran.
pub async fn scope<F: Future>(f: F) -> (F::Output, Option<Recorded>) {
    OUTCOME
        .scope(RefCell::new(None), async move {
            let out = f.await;
            let recorded = OUTCOME.with(|o| o.borrow_mut().take());
            (out, recorded)
        })
        .await
}

/// Note what the cache did for the request being served, if one is.
pub(crate) fn record(outcome: &'static str, upstream: &str) {
    let _ = OUTCOME.try_with(|o| {
        *o.borrow_mut() = Some(Recorded {
            outcome,
            upstream: upstream.to_string(),
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_last_record_in_a_scope_is_read() {
        let ((), got) = scope(async {
            record("fill", "docker.io");
            record("hit", "quay.io");
        })
        .await;
        assert_eq!(
            got,
            Some(Recorded {
                outcome: "hit",
                upstream: "quay.io".into()
            })
        );
        // Outside a scope: nothing, and no panic.
        record("hit", "x");
        let ((), none) = scope(async {}).await;
        assert_eq!(none, None);
    }
}
