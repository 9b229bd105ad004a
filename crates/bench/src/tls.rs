//! The cost of TLS and access control: one berth root served first over
//! plain HTTP without auth, then with `--tls-auto` and an `[auth]` table
//! (wrk sending a bearer token from berth's `/token`), and nginx with TLS
//! serving the very same blob file (hard-linked from berth's root) with
//! berth's own certificate.
//!
//! Rows: manifest GET by tag over TLS with a token against plain HTTP
//! without auth (target: TLS + auth costs at most 15% of requests/s); blob
//! GET over TLS against nginx over TLS (target: at least 0.8x); blob GET
//! over TLS against plain HTTP (context). wrk speaks HTTP/1.1 over TLS
//! (it sends no ALPN) to both berth and nginx.
//!
//! berth holds a lock on its root, so the plain and the TLS server run one
//! after the other, not alternated as the Distribution comparison is.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::Plan;
use crate::blob::Blob;
use crate::client::Conn;
use crate::ops;
use crate::report::{Cell, Row, Target, Unit};
use crate::servers::{self, Server};
use crate::wrk;

const REPO: &str = "bench/tls";
const USER: &str = "bench";
const PASSWORD: &str = "bench-Pass-1";

/// Best-of samples of one figure for one server; the first error wins.
#[derive(Default)]
struct Figure {
    vals: Vec<f64>,
    err: Option<String>,
}

impl Figure {
    fn record(&mut self, r: Result<f64>) {
        match r {
            Ok(v) => self.vals.push(v),
            Err(e) => {
                eprintln!("==>   error: {e:#}");
                self.err.get_or_insert_with(|| one_line(&format!("{e:#}")));
            }
        }
    }

    fn fail(&mut self, e: &str) {
        self.err.get_or_insert_with(|| one_line(e));
    }

    fn cell(&self) -> Cell {
        if let Some(e) = &self.err {
            return Err(e.clone());
        }
        self.vals
            .iter()
            .copied()
            .reduce(f64::max)
            .ok_or_else(|| "no sample".into())
    }
}

fn one_line(e: &str) -> String {
    let line = e.lines().next().unwrap_or_default();
    let mut s: String = line.chars().take(90).collect();
    if s.len() < line.len() {
        s.push('…');
    }
    s
}

/// What one server measured.
#[derive(Default)]
struct Figures {
    manifest_rps: Figure,
    blob_bps: Figure,
}

/// The images the workload reads: a small image for manifest GETs, and a
/// blob of the plan's size for blob GETs.
struct Content {
    config: Blob,
    layer: Blob,
    manifest: Vec<u8>,
    big: Blob,
}

impl Content {
    fn new(plan: &Plan) -> Content {
        let config = Blob::small(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        );
        let layer = Blob::new(4096, 7100);
        let manifest = ops::image_manifest(&config, &layer);
        Content {
            config,
            layer,
            manifest,
            big: Blob::new(plan.blob, 7101),
        }
    }
}

/// The workload: its rows, never an early return (errors become cells).
pub async fn run(plan: &Plan, berth_bin: &Path, nginx: Option<&Path>, workdir: &Path) -> Vec<Row> {
    let dir = workdir.join("tls");
    let content = Content::new(plan);
    let mut plain = Figures::default();
    let mut tls = Figures::default();
    let mut ngx = Figure::default();
    eprintln!(
        "==> TLS + auth: manifest GET and {} MiB blob GET, plain HTTP then --tls-auto with tokens, and nginx with TLS",
        plan.blob / (1024 * 1024)
    );
    if let Err(e) = std::fs::create_dir_all(&dir) {
        let msg = format!("creating {}: {e}", dir.display());
        for f in [
            &mut plain.manifest_rps,
            &mut plain.blob_bps,
            &mut tls.manifest_rps,
            &mut tls.blob_bps,
            &mut ngx,
        ] {
            f.fail(&msg);
        }
    } else {
        measure_plain(plan, berth_bin, &dir, &content, &mut plain).await;
        measure_tls(plan, berth_bin, nginx, &dir, &content, &mut tls, &mut ngx).await;
    }
    let conns = plan.wrk_connections;
    let size = format!("{} MiB", plan.blob / (1024 * 1024));
    let mut rows = vec![
        Row {
            workload: format!(
                "manifest GET by tag, TLS + bearer token vs plain HTTP without auth, {conns} connections (wrk)"
            ),
            berth: tls.manifest_rps.cell(),
            reference: plain.manifest_rps.cell(),
            reference_name: Some("berth http"),
            unit: Unit::ReqPerSec,
            target: Target::Within(0.15),
        },
        Row {
            workload: format!("blob GET {size} over TLS + bearer token vs plain HTTP without auth"),
            berth: tls.blob_bps.cell(),
            reference: plain.blob_bps.cell(),
            reference_name: Some("berth http"),
            unit: Unit::MibPerSec,
            target: Target::None,
        },
    ];
    // Without nginx the comparison is left out, as for plain blob GETs.
    if nginx.is_some() {
        rows.insert(
            1,
            Row {
                workload: format!(
                    "blob GET {size} over TLS + bearer token vs nginx TLS (wrk, 2 connections)"
                ),
                berth: tls.blob_bps.cell(),
                reference: ngx.cell(),
                reference_name: Some("nginx tls"),
                unit: Unit::MibPerSec,
                target: Target::Within(0.2),
            },
        );
    }
    rows
}

/// berth over plain HTTP without auth on `dir/berth-root`: push the
/// content, then measure.
async fn measure_plain(plan: &Plan, bin: &Path, dir: &Path, content: &Content, out: &mut Figures) {
    let server = match servers::start_berth(bin, dir).await {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("starting plain berth: {e:#}");
            out.manifest_rps.fail(&msg);
            out.blob_bps.fail(&msg);
            return;
        }
    };
    if let Err(e) = push(&server, content).await {
        let msg = format!("pushing the content: {e:#}");
        out.manifest_rps.fail(&msg);
        out.blob_bps.fail(&msg);
        return;
    }
    let base = format!("http://{}", server.addr);
    measure(plan, &base, &[], content, out).await;
}

async fn push(server: &Server, content: &Content) -> Result<()> {
    let mut c = Conn::connect(server.addr).await?;
    for blob in [&content.config, &content.layer, &content.big] {
        ops::push_monolithic(&mut c, REPO, blob).await?;
    }
    ops::put_manifest(&mut c, REPO, "latest", &content.manifest).await
}

/// wrk against `base` (http or https): manifest GETs, then blob GETs.
async fn measure(plan: &Plan, base: &str, auth: &[&str], content: &Content, out: &mut Figures) {
    let accept = format!("Accept: {}", ops::ACCEPT_MANIFESTS);
    let mut headers: Vec<&str> = auth.to_vec();
    headers.push(&accept);
    let manifest_url = format!("{base}/v2/{REPO}/manifests/latest");
    let blob_url = format!("{base}{}", ops::blob_path(REPO, &content.big));
    for _ in 0..plan.repeats.min(2) {
        let run = wrk::WrkRun {
            url: &manifest_url,
            threads: plan.wrk_threads,
            connections: plan.wrk_connections,
            duration: plan.wrk_duration,
            headers: &headers,
        };
        out.manifest_rps
            .record(wrk::run(&run).await.map(|w| w.requests_per_sec));
        out.blob_bps
            .record(blob_throughput(plan, &blob_url, auth, content.big.size).await);
    }
}

/// Bytes per second of wrk fetching one blob URL over 2 connections.
async fn blob_throughput(plan: &Plan, url: &str, headers: &[&str], size: u64) -> Result<f64> {
    let run = wrk::WrkRun {
        url,
        threads: 1,
        connections: 2,
        duration: plan.wrk_duration.max(Duration::from_secs(2)),
        headers,
    };
    let w = wrk::run(&run).await?;
    Ok(w.requests_per_sec * size as f64)
}

/// The same root with `--tls-auto` and `[auth]`; a token from `/token`;
/// then nginx with TLS on the same blob file.
async fn measure_tls(
    plan: &Plan,
    bin: &Path,
    nginx: Option<&Path>,
    dir: &Path,
    content: &Content,
    out: &mut Figures,
    ngx: &mut Figure,
) {
    let root = dir.join("berth-root");
    let started = async {
        let config = write_auth_config(dir)?;
        let addr = servers::free_port()?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--root")
            .arg(&root)
            .arg("--tls-auto")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn");
        let mut server = Server::spawn_unchecked("berth-tls", cmd, dir, addr, root.clone())?;
        let ca = root.join("tls/ca.crt");
        wait_https(&mut server, &ca).await?;
        let token = fetch_token(&server, &ca).await?;
        Ok::<_, anyhow::Error>((server, ca, token))
    }
    .await;
    let (server, ca, token) = match started {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("berth with TLS + auth: {e:#}");
            out.manifest_rps.fail(&msg);
            out.blob_bps.fail(&msg);
            ngx.fail(&msg);
            return;
        }
    };
    let bearer = format!("Authorization: Bearer {token}");
    let base = format!("https://{}", server.addr);
    measure(plan, &base, &[&bearer], content, out).await;
    drop(server);
    drop(ca);

    let Some(nginx) = nginx else {
        ngx.fail("nginx is not installed");
        return;
    };
    match start_nginx_tls(nginx, dir, &root, &content.big).await {
        Ok(n) => {
            let url = format!("https://{}/blob", n.addr);
            for _ in 0..plan.repeats.min(2) {
                ngx.record(blob_throughput(plan, &url, &[], content.big.size).await);
            }
        }
        Err(e) => ngx.fail(&format!("nginx with TLS: {e:#}")),
    }
}

/// An htpasswd file (bcrypt, by `htpasswd -B`) with the one user, and a
/// config letting it pull the benchmark repository.
fn write_auth_config(dir: &Path) -> Result<std::path::PathBuf> {
    let htpasswd = servers::find_program("htpasswd")
        .context("htpasswd not found (apt-get install apache2-utils)")?;
    let out = Command::new(htpasswd)
        .args(["-Bbn", USER, PASSWORD])
        .output()
        .context("running htpasswd")?;
    if !out.status.success() {
        bail!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let file = dir.join("htpasswd");
    std::fs::write(&file, String::from_utf8_lossy(&out.stdout).trim())?;
    let config = dir.join("berth-tls.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nhtpasswd = \"{}\"\ntoken_ttl = \"1h\"\n\n[[policy]]\nrepositories = [\"bench/**\"]\nsubjects = [\"{USER}\"]\nactions = [\"pull\"]\n",
            file.display()
        ),
    )?;
    Ok(config)
}

fn curl() -> Result<tokio::process::Command> {
    let bin = servers::find_program("curl").context("curl not found (apt-get install curl)")?;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(["-sS", "--noproxy", "*", "--max-time", "5"])
        .kill_on_drop(true);
    Ok(cmd)
}

/// Wait (bounded) until `/v2/` answers over TLS, verified against `ca`
/// once berth has written it.
async fn wait_https(server: &mut Server, ca: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if server.has_exited() {
            bail!("berth exited during start-up:\n{}", server.log_tail());
        }
        if ca.is_file() {
            let out = curl()?
                .arg("--cacert")
                .arg(ca)
                .args(["-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("https://{}/v2/", server.addr))
                .output()
                .await?;
            if String::from_utf8_lossy(&out.stdout) == "401" {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "berth with TLS did not answer /v2/ within 30 s:\n{}",
                server.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A pull token for the benchmark repository, as a client gets it.
async fn fetch_token(server: &Server, ca: &Path) -> Result<String> {
    let out = curl()?
        .arg("--cacert")
        .arg(ca)
        .arg("-u")
        .arg(format!("{USER}:{PASSWORD}"))
        .arg(format!(
            "https://{}/token?service=berth&scope=repository:{REPO}:pull",
            server.addr
        ))
        .output()
        .await
        .context("running curl for a token")?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("the token answer is not JSON")?;
    v["token"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no token in {v}"))
}

/// nginx (one process, TLS with berth's `--tls-auto` server certificate)
/// serving berth's own file for `blob` as `/blob`, hard-linked (or copied
/// across file systems).
async fn start_nginx_tls(bin: &Path, dir: &Path, root: &Path, blob: &Blob) -> Result<Server> {
    let hex = blob.hex();
    let file = root.join("blobs/sha256").join(&hex[..2]).join(hex);
    let docroot = dir.join("nginx-tls-docroot");
    std::fs::create_dir_all(&docroot)?;
    let served = docroot.join("blob");
    let _ = std::fs::remove_file(&served);
    if std::fs::hard_link(&file, &served).is_err() {
        std::fs::copy(&file, &served)
            .with_context(|| format!("copying {} for nginx", file.display()))?;
    }
    let addr = servers::free_port()?;
    let prefix = dir.join("nginx-tls");
    std::fs::create_dir_all(&prefix)?;
    let p = prefix.display();
    let temps: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|t| format!("  {t}_temp_path {p}/{t};\n"))
        .collect();
    let config = prefix.join("nginx.conf");
    std::fs::write(
        &config,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\n\
             error_log {p}/error.log warn;\npid {p}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n{temps}\
             \x20 server {{\n    listen {addr} ssl;\n    ssl_certificate {cert};\n    \
             ssl_certificate_key {key};\n    ssl_protocols TLSv1.2 TLSv1.3;\n    root {docroot};\n  }}\n}}\n",
            cert = root.join("tls/server.crt").display(),
            key = root.join("tls/server.key").display(),
            docroot = docroot.display(),
        ),
    )?;
    let mut cmd = Command::new(bin);
    cmd.arg("-p")
        .arg(&prefix)
        .arg("-e")
        .arg(prefix.join("error.log"))
        .arg("-c")
        .arg(&config);
    let mut server = Server::spawn_unchecked("nginx-tls", cmd, dir, addr, docroot)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if server.has_exited() {
            bail!("nginx exited during start-up:\n{}", server.log_tail());
        }
        let out = curl()?
            .args(["-k", "--head", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("https://{addr}/blob"))
            .output()
            .await?;
        if String::from_utf8_lossy(&out.stdout) == "200" {
            return Ok(server);
        }
        if Instant::now() > deadline {
            bail!("nginx with TLS did not serve /blob within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
