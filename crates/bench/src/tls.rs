//! TLS with access control, priced: a second berth serving HTTPS (an
//! openssl-made CA and certificate) with `[auth]` on (one htpasswd user,
//! bearer tokens from `/token`), against
//!
//! - the plain berth without auth, for manifest GETs by tag (wrk, both
//!   with the same connections and duration; over TLS every request
//!   carries the bearer token, so this is what TLS + auth costs; wrk runs
//!   on a CPU of its own, the servers on the others, so that wrk's own TLS
//!   work is not counted as the server's, see `pin`);
//! - nginx over TLS (same certificate, same file: berth's own blob file),
//!   for a blob GET: both read with curl, so the client's TLS cost is the
//!   same on each side.
//!
//! Targets (issue 10): TLS + auth costs at most 15% of manifest requests/s,
//! judged on capacity (requests per second of the server's own CPU time,
//! so that the client's work on the same cores does not count); blob GET
//! over TLS at least 0.8x nginx's TLS throughput.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::bench::{short, Bench};
use crate::blob::Blob;
use crate::ops;
use crate::report::{Row, Target, Unit};
use crate::servers::{start_berth_tls, start_nginx_tls, Server};
use crate::stats::Samples;
use crate::wrk;

const USER: &str = "bench";
const PASSWORD: &str = "bench-password";
const REPO: &str = "bench/tls";

/// The certificate files and the berth config of the TLS run.
struct Setup {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    config: PathBuf,
}

async fn command(program: &str, args: &[&str]) -> Result<Vec<u8>> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {program} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// A CA, a server certificate for 127.0.0.1 signed by it, an htpasswd file
/// and a config granting the user everything.
async fn setup(dir: &Path) -> Result<Setup> {
    let d = dir.join("tls");
    std::fs::create_dir_all(&d)?;
    let f = |n: &str| d.join(n);
    let s = |p: &Path| p.display().to_string();
    let (ca, ca_key, cert, key, csr) = (
        f("ca.crt"),
        f("ca.key"),
        f("server.crt"),
        f("server.key"),
        f("server.csr"),
    );
    let ext = f("san.ext");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n")?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut args = vec!["req", "-x509", "-days", "2", "-subj", "/CN=berth-bench CA"];
    args.extend(ec);
    let (ca_s, ca_key_s) = (s(&ca), s(&ca_key));
    args.extend(["-keyout", &ca_key_s, "-out", &ca_s]);
    command("openssl", &args).await?;
    let (csr_s, key_s, cert_s, ext_s) = (s(&csr), s(&key), s(&cert), s(&ext));
    let mut args = vec!["req", "-subj", "/CN=127.0.0.1"];
    args.extend(ec);
    args.extend(["-keyout", &key_s, "-out", &csr_s]);
    command("openssl", &args).await?;
    command(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &csr_s,
            "-CA",
            &ca_s,
            "-CAkey",
            &ca_key_s,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext_s,
            "-out",
            &cert_s,
        ],
    )
    .await?;
    let htpasswd = command("htpasswd", &["-nbB", USER, PASSWORD]).await?;
    let htpasswd_file = f("htpasswd");
    std::fs::write(&htpasswd_file, htpasswd)?;
    let config = f("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nhtpasswd = \"{}\"\ntoken_ttl = \"30m\"\n\n\
             [[policy]]\nrepositories = [\"**\"]\nsubjects = [\"{USER}\"]\n\
             actions = [\"pull\", \"push\", \"delete\"]\n",
            htpasswd_file.display()
        ),
    )?;
    Ok(Setup {
        ca,
        cert,
        key,
        config,
    })
}

/// curl over TLS to the berth under test, as the user.
async fn curl_user(ca: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let ca = ca.display().to_string();
    let creds = format!("{USER}:{PASSWORD}");
    let mut all = vec!["-sS", "-f", "--cacert", &ca, "-u", &creds, "-H", "Expect:"];
    all.extend_from_slice(args);
    command("curl", &all).await
}

/// Push `blob` (written to a file first: curl streams it) and return.
async fn push(ca: &Path, base: &str, dir: &Path, blob: &Blob) -> Result<()> {
    let file = dir.join(format!("{}.blob", blob.hex()));
    blob.write_to(&file)?;
    let url = format!("{base}/v2/{REPO}/blobs/uploads/?digest={}", blob.digest);
    let data = format!("@{}", file.display());
    let r = curl_user(
        ca,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &data,
            "-o",
            "/dev/null",
            &url,
        ],
    )
    .await;
    let _ = std::fs::remove_file(&file);
    r.map(|_| ())
}

/// A bearer token for pulling from the repository, from berth's `/token`.
async fn token(ca: &Path, base: &str) -> Result<String> {
    let url = format!("{base}/token?service=berth&scope=repository:{REPO}:pull");
    let body = curl_user(ca, &[&url]).await?;
    let v: serde_json::Value = serde_json::from_slice(&body).context("the token response")?;
    v["token"]
        .as_str()
        .map(str::to_string)
        .context("no token in the token response")
}

/// curl's download speed (bytes/s) of `url`, checking it got `size` bytes.
async fn curl_speed(ca: &Path, url: &str, header: Option<&str>, size: u64) -> Result<f64> {
    let ca = ca.display().to_string();
    let mut args = vec![
        "-sS",
        "-f",
        "--cacert",
        &ca,
        "-o",
        "/dev/null",
        "-w",
        "%{size_download} %{speed_download}",
    ];
    if let Some(h) = header {
        args.extend(["-H", h]);
    }
    args.push(url);
    let out = command("curl", &args).await?;
    let text = String::from_utf8_lossy(&out);
    let mut it = text.split_whitespace();
    let got: f64 = it
        .next()
        .and_then(|v| v.parse().ok())
        .context("curl's size")?;
    let speed: f64 = it
        .next()
        .and_then(|v| v.parse().ok())
        .context("curl's speed")?;
    if got as u64 != size {
        bail!("downloaded {got} bytes of {size}");
    }
    Ok(speed)
}

impl Bench<'_> {
    pub async fn tls(&mut self, berth_bin: &Path) {
        let p = self.plan.clone();
        crate::bench::progress_line(&format!(
            "TLS with access control: manifest GETs (wrk) and a {} MiB blob GET (curl)",
            p.blob >> 20
        ));
        let mut manifest = Samples::default();
        let mut capacity = Samples::default();
        let mut blob_get = Samples::default();
        let r = self
            .tls_run(berth_bin, &mut manifest, &mut capacity, &mut blob_get)
            .await;
        if let Err(e) = r {
            let msg = format!("{e:#}");
            for s in [&mut manifest, &mut capacity, &mut blob_get] {
                for i in 0..2 {
                    if s.0[i].is_empty() && !s.failed(i) {
                        s.record(i, Err(anyhow::anyhow!(msg.clone())));
                    }
                }
            }
        }
        // The target is on capacity: requests per second of berth's own
        // CPU. Throughput on this machine also carries wrk's TLS work (and,
        // pinned, is capped by wrk's single CPU), so it is shown for context.
        self.rows.push(Row {
            workload: format!(
                "manifest GET by tag over TLS with a bearer token, {} connections: requests per berth CPU-second",
                p.wrk_connections
            ),
            berth: capacity.cell(0),
            reference: capacity.cell(1),
            reference_name: Some("plain, no auth".into()),
            reference_note: None,
            unit: Unit::ReqPerCpuSec,
            target: Target::Within(0.15),
        });
        self.rows.push(Row {
            workload: format!(
                "manifest GET by tag over TLS with a bearer token, {} connections (wrk on a CPU of its own)",
                p.wrk_connections
            ),
            berth: manifest.cell(0),
            reference: manifest.cell(1),
            reference_name: Some("plain, no auth".into()),
            reference_note: None,
            unit: Unit::ReqPerSec,
            target: Target::None,
        });
        self.rows.push(Row {
            workload: format!("blob GET over TLS, {} MiB (curl)", p.blob >> 20),
            berth: blob_get.cell(0),
            reference: blob_get.cell(1),
            reference_name: Some("nginx TLS".into()),
            reference_note: None,
            unit: Unit::GibPerSec,
            target: Target::Times(0.8),
        });
    }

    /// Fills `manifest` and `capacity` (0: TLS + auth, 1: plain berth) and
    /// `blob_get` (0: berth TLS, 1: nginx TLS).
    async fn tls_run(
        &self,
        berth_bin: &Path,
        manifest: &mut Samples,
        capacity: &mut Samples,
        blob_get: &mut Samples,
    ) -> Result<()> {
        let p = self.plan.clone();
        let s = setup(&self.workdir).await?;
        let tls =
            start_berth_tls(berth_bin, &self.workdir, &s.cert, &s.key, &s.config, &s.ca).await?;
        let base = format!("https://{}", tls.addr);
        let config = Blob::small(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        );
        let layer = Blob::new(p.blob, 5000);
        for b in [&config, &layer] {
            push(&s.ca, &base, &self.workdir, b).await?;
        }
        let manifest_bytes = ops::image_manifest(&config, &layer);
        let mf = self.workdir.join("tls-manifest.json");
        std::fs::write(&mf, &manifest_bytes)?;
        let data = format!("@{}", mf.display());
        let ct = format!("Content-Type: {}", ops::OCI_MANIFEST);
        let url = format!("{base}/v2/{REPO}/manifests/latest");
        curl_user(
            &s.ca,
            &[
                "-X",
                "PUT",
                "-H",
                &ct,
                "--data-binary",
                &data,
                "-o",
                "/dev/null",
                &url,
            ],
        )
        .await?;
        // The same manifest on the plain berth, without auth.
        let mut c = self.conn_to(self.servers[0]).await?;
        ops::push_monolithic(&mut c, REPO, &config).await?;
        let small_layer_for_plain = layer.clone();
        ops::push_monolithic(&mut c, REPO, &small_layer_for_plain).await?;
        ops::put_manifest(&mut c, REPO, "latest", &manifest_bytes).await?;

        let token = token(&s.ca, &base).await?;
        let bearer = format!("Authorization: Bearer {token}");
        let accept = format!("Accept: {}", ops::ACCEPT_MANIFESTS);
        let plain_url = format!("http://{}/v2/{REPO}/manifests/latest", self.servers[0].addr);
        // wrk on one CPU, both berths on the others (see `pin`): the
        // client's own TLS work is not the server's cost.
        let split = crate::pin::Split::of_this_machine()?;
        let pinned = match &split {
            Some(split) => Some(crate::pin::Pinned::servers(
                split,
                &[tls.pid(), self.servers[0].pid()],
            )?),
            None => None,
        };
        for rep in 0..p.repeats {
            for i in crate::bench::order(rep) {
                let (url, headers): (&str, Vec<&str>) = if i == 0 {
                    (&url, vec![&accept, &bearer])
                } else {
                    (&plain_url, vec![&accept])
                };
                let run = wrk::WrkRun {
                    url,
                    threads: p.wrk_threads,
                    connections: p.wrk_connections,
                    duration: p.wrk_duration,
                    headers: &headers,
                    cpus: split.as_ref().map(|s| s.client.as_str()),
                };
                let pid = if i == 0 {
                    tls.pid()
                } else {
                    self.servers[0].pid()
                };
                let before = crate::servers::cpu_seconds_of(pid)?;
                let r = wrk::run(&run).await;
                let cpu = crate::servers::cpu_seconds_of(pid)? - before;
                capacity.record(
                    i,
                    r.as_ref()
                        .map(|w| w.requests as f64 / cpu.max(0.01))
                        .map_err(|e| anyhow::anyhow!("{e:#}")),
                );
                manifest.record(i, r.map(|w| w.requests_per_sec));
            }
        }
        drop(pinned);

        // Blob GET: berth over TLS against nginx over TLS, the same file.
        let file = crate::bench::blob_file(&tls, &layer);
        let nginx_path = format!(
            "/{}",
            file.strip_prefix(&tls.root).unwrap_or(&file).display()
        );
        let nginx: Result<Server> = match &self.nginx {
            None => Err(anyhow::anyhow!("nginx is not installed")),
            Some(bin) => {
                start_nginx_tls(bin, &self.workdir, &tls.root, &s.cert, &s.key, &s.ca).await
            }
        };
        let blob_url = format!("{base}/v2/{REPO}/blobs/{}", layer.digest);
        // Warm the page cache, untimed.
        curl_speed(&s.ca, &blob_url, Some(&bearer), layer.size).await?;
        for rep in 0..p.get_repeats.max(p.repeats) {
            for i in crate::bench::order(rep) {
                let r = if i == 0 {
                    curl_speed(&s.ca, &blob_url, Some(&bearer), layer.size).await
                } else {
                    match &nginx {
                        Ok(n) => {
                            let u = format!("https://{}{nginx_path}", n.addr);
                            curl_speed(&s.ca, &u, None, layer.size).await
                        }
                        Err(e) => Err(anyhow::anyhow!(short(&format!("{e:#}")))),
                    }
                };
                blob_get.record(i, r);
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), async {}).await;
        Ok(())
    }
}
