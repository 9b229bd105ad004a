//! Keeps the benchmark working: runs `berth-bench --quick` (every workload
//! once, small sizes, the cache workload too) against a real berth and
//! Debian's docker-registry, and checks that the table has figures for berth
//! and its reference (Distribution, or a ceiling measured in the run) on
//! every workload.
//! docker-registry and wrk are required (scripts/test installs them): a
//! missing tool fails this test, it never skips.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(240);

#[test]
fn quick_mode_measures_every_workload_for_both_servers() {
    for tool in ["docker-registry", "wrk"] {
        assert!(
            on_path(tool).is_some(),
            "{tool} is required by the benchmark test (scripts/test installs it)"
        );
    }
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_berth-bench"));
    let (status, out) = run_bench(&bench, &["--quick"], LIMIT);
    assert!(
        status.success(),
        "berth-bench --quick failed ({status}):\n{out}"
    );
    assert!(out.contains("cores"), "no core count printed");
    assert!(
        out.contains("WARNING: absolute figures vary"),
        "no variance warning"
    );
    assert!(
        out.contains("Ceilings measured in this run:") && out.contains("openssl speed"),
        "no SHA-256 ceilings"
    );
    assert!(
        out.contains("computed on the medians"),
        "no footer saying how ratios are computed"
    );

    let mut workloads = vec![
        "monolithic push, 4 MiB (digest verified)",
        "monolithic push, 4 MiB, against one core's SHA-256",
        "chunked push, 4 MiB in 1 MiB chunks (digest verified)",
        "chunked push, 4 MiB in 1 MiB chunks, against one core's SHA-256",
        "blob GET, ",
        "resident memory, idle",
        "resident memory, peak during",
        "aggregate GET rate",
        "manifest GET by tag, 4 connections",
        "manifest GET by tag, p99",
        "catalog of",
        "tag list of",
        "set-up: 40 repositories",
        "set-up: 40 tags",
        "online GC, 500 blobs / 50 manifests",
        "peak resident memory during GC",
        "set-up for GC: 500 blobs / 50 manifests",
        "cold pull through the cache by 32 clients, total time ",
        "cold pull through the cache by 32 clients, total time, against",
        "upstream blob GETs per blob",
    ];
    if on_path("nginx").is_some() {
        workloads.push("blob GET against nginx");
        workloads.push("aggregate GET rate of those 4 downloads against nginx");
    }
    for w in workloads {
        assert_measured(&out, w);
    }
    // Distribution is stopped while it collects: berth alone has figures.
    for w in [
        "requests served during GC: manifest GET p99",
        "  of which berth's mark and sweep",
    ] {
        let cells = row(&out, w);
        assert!(
            !cells[2].contains("ERROR") && cells[2].chars().any(|c| c.is_ascii_digit()),
            "{w:?}: no figure for berth: {cells:?}"
        );
        assert!(!cells[3].contains("ERROR"), "{cells:?}");
        assert_ne!(cells[7], "ERROR", "{cells:?}");
    }
    assert!(
        out.contains("none: stopped"),
        "no note that Distribution serves nothing during its GC"
    );
}
