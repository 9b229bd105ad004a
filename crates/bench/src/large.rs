//! One very large image manifest, pushed (issue 11): 25,000 layers over a
//! handful of blobs, as a careless or hostile client may send. The figure is
//! the server's own CPU time per PUT (from `/proc/PID/stat`, over several
//! PUTs of distinct documents so that the 10 ms tick does not dominate,
//! and `repeats` such batches, each of documents not PUT before), which
//! must stay small however many descriptors repeat. The test suite
//! checks the same document against a debug build with a loose bound; this
//! is where the release figure and its target live.

use anyhow::Result;
use serde_json::json;

use crate::bench::Bench;
use crate::blob::Blob;
use crate::ops;
use crate::report::{Row, Target, Unit};
use crate::servers::cpu_seconds_of;
use crate::stats::Samples;

const LAYERS: usize = 25_000;
/// Distinct layer blobs the layers cycle over.
const BLOBS: u64 = 4;
const REPO: &str = "bench/large";

/// `count` manifests of `LAYERS` layers each, distinct by an annotation
/// (`batch`-n: no batch repeats another's documents).
fn documents(config: &Blob, blobs: &[Blob], batch: usize, count: usize) -> Vec<Vec<u8>> {
    let layers: Vec<serde_json::Value> = (0..LAYERS)
        .map(|k| {
            let b = &blobs[k % blobs.len()];
            json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": b.digest,
                "size": b.size,
            })
        })
        .collect();
    (0..count)
        .map(|n| {
            json!({
                "schemaVersion": 2,
                "mediaType": ops::OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config.digest,
                    "size": config.size,
                },
                "layers": layers,
                "annotations": {"org.example.bench.copy": format!("{batch}-{n}")},
            })
            .to_string()
            .into_bytes()
        })
        .collect()
}

impl Bench<'_> {
    pub async fn large_manifest(&mut self) {
        let puts = if self.plan.quick { 2 } else { 10 };
        let repeats = self.plan.repeats;
        crate::bench::progress_line(&format!(
            "manifest PUT with {LAYERS} layers over {BLOBS} blobs, {repeats} x {puts} PUTs per server"
        ));
        let mut cpu = Samples::default();
        for rep in 0..repeats {
            for i in crate::bench::order(rep) {
                if !cpu.failed(i) {
                    let r = self.large_run(i, rep, puts).await;
                    cpu.record(i, r);
                }
            }
        }
        self.rows.push(Row {
            workload: format!(
                "manifest PUT with {LAYERS} layers over {BLOBS} blobs: server CPU per PUT"
            ),
            berth: cpu.cell(0),
            reference: cpu.cell(1),
            reference_name: None,
            reference_note: None,
            unit: Unit::Millis,
            target: Target::AtMost(0.050),
        });
    }

    /// Server `i`'s CPU seconds per PUT in batch `batch`.
    async fn large_run(&self, i: usize, batch: usize, puts: usize) -> Result<f64> {
        let server = self.servers[i];
        let mut c = self.conn_to(server).await?;
        let config = Blob::small(br#"{"architecture":"amd64","os":"linux"}"#);
        let blobs: Vec<Blob> = (0..BLOBS).map(|k| Blob::new(512, 7000 + k)).collect();
        for b in std::iter::once(&config).chain(&blobs) {
            ops::push_monolithic(&mut c, REPO, b).await?;
        }
        // Built before the measured part: the client's JSON is not the server's.
        let docs = documents(&config, &blobs, batch, puts);
        let pid = server.pid();
        let before = cpu_seconds_of(pid)?;
        for (n, doc) in docs.iter().enumerate() {
            ops::put_manifest(&mut c, REPO, &format!("copy-{batch}-{n}"), doc).await?;
        }
        // The answer is sent once the work is done; a tick for the
        // accounting to catch up.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let cpu = cpu_seconds_of(pid)? - before;
        Ok(cpu / puts as f64)
    }
}
