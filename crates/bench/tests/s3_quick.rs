//! Keeps the S3 benchmark working: runs `berth-bench --quick --only s3`
//! (a Garage it starts, small sizes, one run each) and checks that every
//! row of it has figures for berth and its reference: Distribution's S3
//! driver, berth on local disk, or one replica; and that the replicas'
//! upstream GETs per blob meet their target even at this size. Garage and
//! docker-registry are required (scripts/test installs them): a missing
//! tool fails this test, it never skips.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(240);

#[test]
fn quick_s3_benchmark_measures_every_row() {
    assert!(
        on_path("docker-registry").is_some(),
        "docker-registry is required by the benchmark test (scripts/test installs it)"
    );
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_berth-bench"));
    let (status, out) = run_bench(&bench, &["--quick", "--only", "s3"], LIMIT);
    assert!(
        status.success(),
        "berth-bench --quick --only s3 failed ({status}):\n{out}"
    );
    for w in [
        "S3: monolithic push, 4 MiB ",
        "S3: monolithic push, 4 MiB, against local disk",
        "S3: blob GET, 4 MiB ",
        "S3: blob GET, 4 MiB, against local disk",
        "S3: manifest GET by tag, 4 connections (wrk) ",
        "S3: manifest GET by tag, 4 connections (wrk), against local disk",
        "S3: manifest GET by tag, p99 latency ",
        "S3: manifest GET by tag, p99 latency, against local disk",
        "S3: cold pull by 4 clients over 3 replicas, total time",
        "S3: cold pull by 4 clients over 3 replicas, upstream GETs",
    ] {
        assert_measured(&out, w);
    }
    let gets = row(
        &out,
        "S3: cold pull by 4 clients over 3 replicas, upstream GETs",
    );
    assert_eq!(
        gets[7], "pass",
        "more than one upstream GET per blob: {gets:?}"
    );
    assert!(gets[2].starts_with("1.00"), "{gets:?}");
}
