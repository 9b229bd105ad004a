//! Pushing very large manifests and indexes to a running berth (issue 11):
//! the server's CPU time for one PUT, read from `/proc/<pid>/stat` before
//! and after, stays small and does not grow with repeated descriptors.
//!
//! Test builds are unoptimised, so the bound here is a generous one for a
//! debug server (a release build needs a small fraction of it); the
//! per-function bounds are in `berth-manifest` and `berth-registry`'s
//! `large_manifests` test. What was measured is printed.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// The pid of the `berth serve` listening on `port` (found by its command line).
fn server_pid(port: u16) -> u32 {
    let listen = format!("127.0.0.1:{port}");
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        if args.iter().any(|a| a == "serve") && args.contains(&listen) {
            return pid;
        }
    }
    panic!("no berth serve process listens on {listen}");
}

/// User + system CPU time of a process so far (clock ticks of 1/100 s).
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after = &stat[stat.rfind(')').expect("stat has a command") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

/// PUT a manifest; its status and the server CPU it cost.
fn timed_put(
    server: &Server,
    pid: u32,
    tag: &str,
    media_type: &str,
    body: &[u8],
) -> (u16, Duration) {
    let before = cpu_of(pid);
    let r = put_manifest(server, "team/big", tag, media_type, body);
    // The server has answered; give its accounting a tick to settle.
    std::thread::sleep(Duration::from_millis(20));
    (r.status, cpu_of(pid) - before)
}

#[test]
fn a_25000_layer_manifest_and_index_cost_little_server_cpu() {
    let started = Instant::now();
    let server = Server::start();
    let pid = server_pid(server.port);
    let config = b"{}".to_vec();
    push_blob(&server, "team/big", &config);
    let layers: Vec<Vec<u8>> = (0..4).map(|i| format!("layer {i}").into_bytes()).collect();
    for l in &layers {
        push_blob(&server, "team/big", l);
    }
    let descriptors: Vec<_> = (0..25_000)
        .map(|i| descriptor(OCI_LAYER, &layers[i % 4]))
        .collect();
    // Compact JSON: pretty-printed, 25,000 descriptors pass the 4 MiB limit.
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": descriptors,
    }))
    .expect("serialise manifest");
    let (status, cpu) = timed_put(&server, pid, "big", OCI_MANIFEST, &manifest);
    assert_eq!(status, 201);
    eprintln!(
        "server CPU for a 25,000-layer manifest PUT ({} KiB): {cpu:?} (debug build)",
        manifest.len() / 1024
    );
    assert!(
        cpu < Duration::from_millis(800),
        "the PUT cost {cpu:?} of server CPU"
    );

    let child = descriptor(OCI_MANIFEST, &manifest);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": vec![child; 25_000],
    }))
    .expect("serialise index");
    let (status, cpu) = timed_put(&server, pid, "index", OCI_INDEX, &index);
    assert_eq!(status, 201);
    eprintln!(
        "server CPU for a 25,000-entry index PUT ({} KiB): {cpu:?} (debug build)",
        index.len() / 1024
    );
    assert!(
        cpu < Duration::from_millis(800),
        "the PUT cost {cpu:?} of server CPU"
    );
    assert!(started.elapsed() < Duration::from_secs(120));
}
