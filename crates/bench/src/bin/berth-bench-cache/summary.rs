//! What the cache benchmark reports (issue 16). Per target and client
//! count: the medians over the repeats, the total time with its min–max
//! range. Then the two targets, judged on medians:
//!
//! - a cold pull by many clients (32) through berth takes at most 1.5x the
//!   time of one client pulling the same image straight from the upstream
//!   (the cache adds a hop and a copy, but the clients must not queue
//!   behind each other);
//! - berth makes one upstream GET per blob, however many clients ask.
//!
//! And all of it as JSON (`--json`), for `berth-bench`'s own table.

use std::fmt::Write as _;
use std::time::Duration;

/// The time target: many clients through berth against one direct.
pub const TIME_TARGET: f64 = 1.5;
/// Upstream blob GETs per blob.
pub const GETS_TARGET: f64 = 1.0;

/// One measured run.
pub struct Outcome {
    pub target: &'static str,
    pub clients: usize,
    pub ttfb_p50: Duration,
    pub ttfb_max: Duration,
    pub total: Duration,
    pub bytes: u64,
    pub upstream_requests: usize,
    pub upstream_blob_gets: usize,
}

/// Minimum, median (of an even count: the mean of the middle two) and
/// maximum of some samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

pub fn spread(vals: impl IntoIterator<Item = f64>) -> Option<Spread> {
    let mut v: Vec<f64> = vals.into_iter().collect();
    if v.is_empty() || v.iter().any(|x| x.is_nan()) {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n.is_multiple_of(2) {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    } else {
        v[n / 2]
    };
    Some(Spread {
        min: v[0],
        median,
        max: v[n - 1],
    })
}

/// The runs of one target with one client count.
pub struct Group<'a> {
    pub target: &'static str,
    pub clients: usize,
    pub runs: Vec<&'a Outcome>,
}

impl Group<'_> {
    fn of(&self, f: impl Fn(&Outcome) -> f64) -> Option<Spread> {
        spread(self.runs.iter().map(|o| f(o)))
    }

    pub fn total(&self) -> Option<Spread> {
        self.of(|o| o.total.as_secs_f64())
    }

    pub fn blob_gets(&self) -> Option<Spread> {
        self.of(|o| o.upstream_blob_gets as f64)
    }
}

/// Runs grouped by (target, clients), in the order first measured.
pub fn groups(results: &[Outcome]) -> Vec<Group<'_>> {
    let mut out: Vec<Group> = Vec::new();
    for r in results {
        match out
            .iter_mut()
            .find(|g| g.target == r.target && g.clients == r.clients)
        {
            Some(g) => g.runs.push(r),
            None => out.push(Group {
                target: r.target,
                clients: r.clients,
                runs: vec![r],
            }),
        }
    }
    out
}

/// A count as a count when it is whole (a median of an even number of
/// runs may fall between two).
fn count(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Seconds to the millisecond: a cold pull of a small image is well
/// under a second.
fn secs(s: &Spread) -> String {
    if s.min == s.max {
        format!("{:.3} s", s.median)
    } else {
        format!("{:.3} s ({:.3}–{:.3})", s.median, s.min, s.max)
    }
}

/// The table: one line per target and client count, medians of its runs.
pub fn table(groups: &[Group]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:>7} {:>4} {:>10} {:>10} {:>24} {:>7} {:>13} {:>18}",
        "target",
        "clients",
        "runs",
        "TTFB p50",
        "TTFB max",
        "total (min–max)",
        "MiB/s",
        "upstream reqs",
        "upstream blob GETs"
    );
    for g in groups {
        let med = |f: &dyn Fn(&Outcome) -> f64| g.of(f).map_or(0.0, |s| s.median);
        let ms = |f: &dyn Fn(&Outcome) -> Duration| {
            format!("{:.1} ms", med(&|o| f(o).as_secs_f64()) * 1000.0)
        };
        let rate = med(&|o| o.bytes as f64 / (1 << 20) as f64 / o.total.as_secs_f64().max(1e-9));
        let _ = writeln!(
            out,
            "{:<20} {:>7} {:>4} {:>10} {:>10} {:>24} {:>7.0} {:>13} {:>18}",
            g.target,
            g.clients,
            g.runs.len(),
            ms(&|o| o.ttfb_p50),
            ms(&|o| o.ttfb_max),
            g.total().map_or("-".into(), |s| secs(&s)),
            rate,
            count(med(&|o| o.upstream_requests as f64)),
            count(med(&|o| o.upstream_blob_gets as f64)),
        );
    }
    out.push_str(
        "Each figure is the median of the runs (total: with its min–max range); \
         the targets below are judged on the medians.\n",
    );
    out
}

fn find<'a, 'b>(groups: &'a [Group<'b>], target: &str, clients: usize) -> Option<&'a Group<'b>> {
    groups
        .iter()
        .find(|g| g.target == target && g.clients == clients)
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "FAIL"
    }
}

/// The target lines: many clients through berth against one direct, and
/// berth's upstream GETs per blob (Distribution's proxy mode for context).
/// `across` says how the direct client reached the upstream ("across the
/// same 500 Mbit/s link"): the ratio means little without it.
pub fn verdicts(groups: &[Group], blobs: usize, across: &str) -> String {
    let mut out = String::new();
    let many = groups.iter().map(|g| g.clients).max().unwrap_or(1);
    let direct = find(groups, "direct", 1).and_then(Group::total);
    let per_blob = |g: &Group| -> Option<Spread> {
        let s = g.blob_gets()?;
        let b = blobs.max(1) as f64;
        Some(Spread {
            min: s.min / b,
            median: s.median / b,
            max: s.max / b,
        })
    };
    let spread_text = |s: &Spread| {
        if s.min == s.max {
            format!("{:.2}", s.median)
        } else {
            format!("{:.2} ({:.2}–{:.2})", s.median, s.min, s.max)
        }
    };
    match (find(groups, "berth", many).and_then(Group::total), direct) {
        (Some(b), Some(d)) => {
            let ratio = b.median / d.median.max(1e-9);
            let _ = writeln!(
                out,
                "cold pull by {many} clients through berth: {}, {ratio:.2}x the time of 1 client \
                 straight from the upstream {across} ({}); target <= {TIME_TARGET}x: {}",
                secs(&b),
                secs(&d),
                verdict(ratio <= TIME_TARGET)
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "cold pull by {many} clients through berth against 1 client direct: not measured"
            );
        }
    }
    match find(groups, "berth", many).and_then(per_blob) {
        Some(s) => {
            let _ = writeln!(
                out,
                "upstream blob GETs per blob, {many} clients through berth: {}; target {GETS_TARGET}: {}",
                spread_text(&s),
                verdict(s.median <= GETS_TARGET)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "upstream blob GETs per blob through berth: not measured"
            );
        }
    }
    if let Some(g) = find(groups, "distribution-proxy", many) {
        if let (Some(t), Some(d), Some(p)) = (g.total(), direct, per_blob(g)) {
            let _ = writeln!(
                out,
                "for context, Distribution's proxy mode: {many} clients {:.2}x the time of 1 direct, \
                 {:.2} upstream blob GETs per blob",
                t.median / d.median.max(1e-9),
                p.median
            );
        }
    }
    if let (Some(t), Some(d)) = (
        find(groups, "direct-loopback", many).and_then(Group::total),
        direct,
    ) {
        let _ = writeln!(
            out,
            "for context, {many} clients straight from a copy of the upstream on loopback (no link, \
             no cache): {}, {:.2}x the time of 1 direct: what serving, receiving and verifying {many} \
             copies costs on this machine, whose cores the clients share with the servers",
            secs(&t),
            t.median / d.median.max(1e-9)
        );
    }
    out
}

/// Every run's figures, grouped, for `berth-bench`.
pub fn json(groups: &[Group], blobs: usize, image_bytes: u64, repeats: usize) -> serde_json::Value {
    let list = |g: &Group, f: &dyn Fn(&Outcome) -> f64| -> Vec<f64> {
        g.runs.iter().map(|o| f(o)).collect()
    };
    serde_json::json!({
        "blobs": blobs,
        "image_bytes": image_bytes,
        "repeats": repeats,
        "groups": groups.iter().map(|g| serde_json::json!({
            "target": g.target,
            "clients": g.clients,
            "total_secs": list(g, &|o| o.total.as_secs_f64()),
            "upstream_blob_gets": list(g, &|o| o.upstream_blob_gets as f64),
            "upstream_requests": list(g, &|o| o.upstream_requests as f64),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: &'static str, clients: usize, total_ms: u64, gets: usize) -> Outcome {
        Outcome {
            target,
            clients,
            ttfb_p50: Duration::from_millis(1),
            ttfb_max: Duration::from_millis(2),
            total: Duration::from_millis(total_ms),
            bytes: 1 << 20,
            upstream_requests: gets + 1,
            upstream_blob_gets: gets,
        }
    }

    #[test]
    fn spreads_of_odd_and_even_counts() {
        let s = spread([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        let s = spread([4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 4.0));
        assert_eq!(spread([]), None);
        assert_eq!(count(5.0), "5");
        assert_eq!(count(5.5), "5.5");
    }

    #[test]
    fn targets_are_judged_on_medians() {
        // berth with 32 clients: medians 1.4 s and 5 GETs of 5 blobs; one
        // slow run (9 s) does not fail it, the median decides.
        let results = vec![
            run("direct", 1, 1000, 5),
            run("berth", 32, 1400, 5),
            run("distribution-proxy", 32, 3000, 40),
            run("direct", 1, 1000, 5),
            run("berth", 32, 9000, 5),
            run("distribution-proxy", 32, 3000, 30),
            run("direct", 1, 1100, 5),
            run("berth", 32, 1300, 5),
            run("distribution-proxy", 32, 3000, 35),
            run("direct-loopback", 32, 1200, 160),
        ];
        let g = groups(&results);
        assert_eq!(g.len(), 4);
        assert_eq!(g[1].runs.len(), 3);
        let v = verdicts(&g, 5, "across the same 500 Mbit/s link");
        assert!(
            v.contains("1.40x the time of 1 client straight from the upstream across the same 500 Mbit/s link (")
                && v.contains("target <= 1.5x: PASS"),
            "{v}"
        );
        assert!(v.contains("1.00; target 1: PASS"), "{v}");
        assert!(v.contains("7.00 upstream blob GETs per blob"), "{v}");
        assert!(v.contains("1.200 s, 1.20x the time of 1 direct"), "{v}");
        let t = table(&g);
        assert!(t.contains("1.400 s (1.300–9.000)"), "{t}");
        let j = json(&g, 5, 1 << 20, 3);
        assert_eq!(j["groups"][1]["target"], "berth");
        assert_eq!(j["groups"][1]["total_secs"][1], 9.0);
        // Too slow, too many GETs: both fail.
        let results = vec![run("direct", 1, 1000, 5), run("berth", 32, 1600, 6)];
        let v = verdicts(&groups(&results), 5, "");
        assert!(v.contains("target <= 1.5x: FAIL"), "{v}");
        assert!(v.contains("1.20; target 1: FAIL"), "{v}");
    }
}
