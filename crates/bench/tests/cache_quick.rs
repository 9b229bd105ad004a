//! Keeps the cache benchmark working: runs `berth-bench-cache --quick`
//! (a 2 MiB image, 1 and 32 clients, one run each) against a real berth and
//! Debian's docker-registry, and checks its table: a row for every target
//! and client count, berth's upstream blob GETs independent of the client
//! count, and a verdict on each target of issue 16. The upstream is behind
//! the default 500 Mbit/s link (a network namespace the benchmark makes and
//! removes), as in a full run.
//! docker-registry is required (scripts/test installs it), and so are root
//! and iproute2 for the link (the suite and CI run as root): a missing tool
//! fails this test, it never skips.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn quick_cache_benchmark_prints_every_row() {
    assert!(
        on_path("docker-registry").is_some(),
        "docker-registry is required by the benchmark test (scripts/test installs it)"
    );
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_berth-bench-cache"));
    let (status, out) = run_bench(&bench, &["--quick"], LIMIT);
    assert!(
        status.success(),
        "berth-bench-cache --quick failed ({status}):\n{out}"
    );

    // target clients runs ttfb-p50 "ms" ttfb-max "ms" total "s" [range]
    // MiB/s reqs blob-GETs
    let targets = ["direct", "berth", "distribution-proxy"];
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() >= 12 && targets.contains(&w[0]) && w[1].parse::<usize>().is_ok())
        .collect();
    for target in targets {
        for clients in ["1", "32"] {
            assert!(
                rows.iter().any(|r| r[0] == target && r[1] == clients),
                "no row for {target} with {clients} clients:\n{out}"
            );
        }
    }
    let blob_gets = |clients: &str| -> f64 {
        rows.iter()
            .find(|r| r[0] == "berth" && r[1] == clients)
            .and_then(|r| r.last()?.parse().ok())
            .unwrap_or_else(|| panic!("berth's upstream blob GETs with {clients} clients:\n{out}"))
    };
    assert_eq!(
        blob_gets("1"),
        blob_gets("32"),
        "berth's upstream blob GETs grew with the number of clients:\n{out}"
    );
    // The targets of issue 16, each with its verdict.
    for line in [
        "cold pull by 32 clients through berth: ",
        "upstream blob GETs per blob, 32 clients through berth: ",
    ] {
        let l = out
            .lines()
            .find(|l| l.starts_with(line))
            .unwrap_or_else(|| panic!("no line {line:?}:\n{out}"));
        assert!(
            l.ends_with(": PASS") || l.ends_with(": FAIL"),
            "no verdict in {l:?}"
        );
    }
    assert!(out.contains("WARNING: absolute figures vary"), "{out}");
    assert!(
        out.contains("upstream link: 500 Mbit/s each way: network namespace berth-bench-cache-"),
        "the upstream is not behind its link:\n{out}"
    );
}
