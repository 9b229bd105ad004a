//! How long a cached tag is trusted before it is revalidated upstream.
//! Pinned version tags rarely move, `latest` often does, so the TTL can
//! depend on the tag through glob patterns (`v*`, `*-rc*`, `latest`).

use std::time::Duration;

/// Default TTL of a cached tag.
pub const DEFAULT_TAG_TTL: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone)]
pub struct TtlPolicy {
    pub default: Duration,
    /// First matching pattern wins.
    pub patterns: Vec<(String, Duration)>,
}

impl Default for TtlPolicy {
    fn default() -> Self {
        TtlPolicy {
            default: DEFAULT_TAG_TTL,
            patterns: Vec::new(),
        }
    }
}

impl TtlPolicy {
    pub fn ttl_for(&self, tag: &str) -> Duration {
        self.patterns
            .iter()
            .find(|(p, _)| glob_match(p, tag))
            .map_or(self.default, |(_, ttl)| *ttl)
    }
}

pub use berth_reference::glob_match;

/// Parse `300`, `300s`, `5m`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 's') => (&s[..i], 1),
        (i, 'm') => (&s[..i], 60),
        (i, 'h') => (&s[..i], 3600),
        (i, 'd') => (&s[..i], 86400),
        _ => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .map(|n| Duration::from_secs(n.saturating_mul(mult)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_patterns_first_match_wins() {
        let p = TtlPolicy {
            default: Duration::from_secs(60),
            patterns: vec![
                ("latest".into(), Duration::from_secs(10)),
                ("*".into(), Duration::from_secs(3600)),
            ],
        };
        assert_eq!(p.ttl_for("latest"), Duration::from_secs(10));
        assert_eq!(p.ttl_for("v1"), Duration::from_secs(3600));
        assert_eq!(TtlPolicy::default().ttl_for("x"), DEFAULT_TAG_TTL);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("x"), None);
    }
}
