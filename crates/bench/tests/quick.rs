//! Keeps the benchmark working: runs `berth-bench --quick` (every workload
//! once, small sizes, the cache workload too) against a real berth and
//! Debian's docker-registry, and checks that the table has figures for berth
//! and its reference (Distribution, or a ceiling measured in the run) on
//! every workload.
//! docker-registry and wrk are required (scripts/test installs them): a
//! missing tool fails this test, it never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(240);

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The berth binary of this build profile, built now if it is not there
/// or might be stale (a no-op when it is fresh).
fn berth_binary(bench: &Path) -> PathBuf {
    let berth = bench.with_file_name("berth");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "berth"]);
    if bench.parent().and_then(Path::file_name) == Some("release".as_ref()) {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("running cargo build -p berth");
    assert!(status.success(), "cargo build -p berth failed");
    assert!(berth.is_file(), "no berth binary at {}", berth.display());
    berth
}

#[test]
fn quick_mode_measures_every_workload_for_both_servers() {
    for tool in ["docker-registry", "wrk"] {
        assert!(
            on_path(tool).is_some(),
            "{tool} is required by the benchmark test (scripts/test installs it)"
        );
    }
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_berth-bench"));
    let berth = berth_binary(&bench);
    let dir = tempfile::tempdir().unwrap();
    let stdout_path = dir.path().join("stdout");
    let mut child = Command::new(&bench)
        .arg("--quick")
        .arg("--berth")
        .arg(&berth)
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting berth-bench");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "berth-bench --quick ran over {LIMIT:?}:\n{}",
                std::fs::read_to_string(&stdout_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(&stdout_path).unwrap();
    println!("{out}");
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
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("| {w}")))
            .unwrap_or_else(|| panic!("no row for {w:?} in:\n{out}"));
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "", workload, berth, reference, runs, ratio, target, result, ""
        assert_eq!(cells.len(), 9, "malformed row {line:?}");
        for (name, cell) in [("berth", cells[2]), ("reference", cells[3])] {
            assert!(
                !cell.contains("ERROR") && cell.chars().any(|c| c.is_ascii_digit()),
                "{w:?}: no figure for {name}: {line:?}"
            );
        }
        assert_ne!(cells[7], "ERROR", "{line:?}");
    }
    // Distribution is stopped while it collects: berth alone has figures.
    for w in [
        "requests served during GC: manifest GET p99",
        "  of which berth's mark and sweep",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("| {w}")))
            .unwrap_or_else(|| panic!("no row for {w:?} in:\n{out}"));
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 9, "malformed row {line:?}");
        assert!(
            !cells[2].contains("ERROR") && cells[2].chars().any(|c| c.is_ascii_digit()),
            "{w:?}: no figure for berth: {line:?}"
        );
        assert!(!cells[3].contains("ERROR"), "{line:?}");
        assert_ne!(cells[7], "ERROR", "{line:?}");
    }
    assert!(
        out.contains("none: stopped"),
        "no note that Distribution serves nothing during its GC"
    );
}
