//! What the benchmark tests share: finding tools, the berth binary of this
//! build profile, and running a benchmark program within a time limit.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A program on PATH (or in /usr/sbin, /sbin), if installed.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The berth binary of this build profile, built now if it is not there
/// or might be stale (a no-op when it is fresh).
pub fn berth_binary(bench: &Path) -> PathBuf {
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

/// Run `bench` with `args`, `--berth` and `--dir` a fresh temporary
/// directory; its exit status and standard output. Killed, and the test
/// failed, past `limit`.
pub fn run_bench(bench: &Path, args: &[&str], limit: Duration) -> (ExitStatus, String) {
    let berth = berth_binary(bench);
    let dir = tempfile::tempdir().unwrap();
    let stdout_path = dir.path().join("stdout");
    let mut child = Command::new(bench)
        .args(args)
        .arg("--berth")
        .arg(&berth)
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the benchmark");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} {args:?} ran over {limit:?}:\n{}",
                bench.display(),
                std::fs::read_to_string(&stdout_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(&stdout_path).unwrap();
    println!("{out}");
    (status, out)
}

/// The cells of the table row whose workload starts with `workload`:
/// "", workload, berth, reference, runs, ratio, target, result, "".
pub fn row<'a>(out: &'a str, workload: &str) -> Vec<&'a str> {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("| {workload}")))
        .unwrap_or_else(|| panic!("no row for {workload:?} in:\n{out}"));
    let cells: Vec<&str> = line.split('|').map(str::trim).collect();
    assert_eq!(cells.len(), 9, "malformed row {line:?}");
    cells
}

/// The row has figures for berth and its reference, and a verdict.
pub fn assert_measured(out: &str, workload: &str) {
    let cells = row(out, workload);
    for (name, cell) in [("berth", cells[2]), ("reference", cells[3])] {
        assert!(
            !cell.contains("ERROR") && cell.chars().any(|c| c.is_ascii_digit()),
            "{workload:?}: no figure for {name}: {cells:?}"
        );
    }
    assert_ne!(cells[7], "ERROR", "{cells:?}");
}
