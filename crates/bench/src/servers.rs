//! The processes under test: berth, Distribution 2.8 (`docker-registry`)
//! and nginx, each on a free loopback port with its own directory under the
//! run's work directory (the same file system for all, so storage is
//! identical). A [`Server`] kills its process when dropped, also when the
//! benchmark panics or times out, so no run leaves a server behind.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::client::Conn;

/// How long a server may take to answer its first request.
const STARTUP: Duration = Duration::from_secs(30);

pub struct Server {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// Storage root (berth, Distribution) or document root (nginx).
    pub root: PathBuf,
    log: PathBuf,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// The whole log (for counting an upstream's requests in it).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident memory (VmRSS) in bytes.
    pub fn rss(&self) -> Result<u64> {
        rss_of(self.pid())
    }

    /// Wait until `GET path` answers `want` (any status when `None`).
    async fn wait_ready(&mut self, path: &str, want: Option<u16>) -> Result<()> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited during start-up ({status}):\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if let Ok(mut c) = Conn::connect(self.addr).await {
                if let Ok(r) = c.get(path, &[]).await {
                    let status = r.status.as_u16();
                    if want.is_none_or(|w| w == status) {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not become ready on {} within {STARTUP:?}:\n{}",
                    self.name,
                    self.addr,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Resident memory (VmRSS) of a process, in bytes.
pub fn rss_of(pid: u32) -> Result<u64> {
    status_field(pid, "VmRSS")
}

/// Peak resident memory (VmHWM) of a process since it started or since
/// [`reset_peak`], in bytes.
pub fn peak_rss_of(pid: u32) -> Result<u64> {
    status_field(pid, "VmHWM")
}

/// Reset a process's VmHWM to its current resident size (Linux's
/// `clear_refs` value 5), so that a later [`peak_rss_of`] is the peak of
/// what happened since.
pub fn reset_peak(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("resetting the peak RSS of {pid} (/proc/{pid}/clear_refs)"))
}

/// CPU time (user + system, every thread, those that have exited too) a
/// process has used, in seconds: `/proc/PID/stat` fields 14 and 15, in
/// USER_HZ ticks, which Linux fixes at 100 for user space.
pub fn cpu_seconds_of(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; fields are counted after it.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("malformed /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| -> Result<f64> {
        let v: u64 = fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("malformed /proc/{pid}/stat"))?;
        Ok(v as f64 / 100.0)
    };
    // Field 3 (state) is index 0 here: utime (14) is 11, stime (15) is 12.
    Ok(tick(11)? + tick(12)?)
}

/// A `kB` field of `/proc/PID/status`, in bytes.
fn status_field(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.split(':').next() == Some(field))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("malformed {field}"))?
        .parse()
        .with_context(|| format!("malformed {field}"))?;
    Ok(kb * 1024)
}

/// A loopback port nobody listens on right now.
pub(crate) fn free_port() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(l.local_addr()?)
}

fn spawn(name: &'static str, mut cmd: Command, dir: &Path) -> Result<(Child, PathBuf)> {
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log)?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {name} ({cmd:?})"))?;
    Ok((child, log))
}

/// `berth serve` with its own storage root, logging only warnings.
pub async fn start_berth(bin: &Path, dir: &Path) -> Result<Server> {
    start_berth_with(bin, dir, &[]).await
}

/// `berth serve` as [`start_berth`] does, with extra command-line options.
pub async fn start_berth_with(bin: &Path, dir: &Path, extra: &[&str]) -> Result<Server> {
    let extra: Vec<&std::ffi::OsStr> = extra.iter().map(std::ffi::OsStr::new).collect();
    let mut s = spawn_berth(bin, dir, "berth", "berth-root", &extra)?;
    s.wait_ready("/v2/", Some(200)).await?;
    Ok(s)
}

/// `berth serve` on a free loopback port and its own root under `dir`,
/// logging only warnings; readiness is the caller's to check.
fn spawn_berth(
    bin: &Path,
    dir: &Path,
    name: &'static str,
    root_name: &str,
    extra: &[&std::ffi::OsStr],
) -> Result<Server> {
    spawn_berth_at(bin, dir, name, root_name, free_port()?, extra, "warn")
}

/// `berth serve` named `name` (its log is `dir/NAME.log`) on `addr`, with
/// its root `dir/ROOT_NAME`, logging at `rust_log`; ready once `/v2/`
/// answers 200. For servers whose address must be known before they start
/// (replicas name themselves in their configuration).
pub async fn start_berth_at(
    bin: &Path,
    dir: &Path,
    name: &'static str,
    root_name: &str,
    addr: SocketAddr,
    extra: &[&str],
    rust_log: &str,
) -> Result<Server> {
    let extra: Vec<&std::ffi::OsStr> = extra.iter().map(std::ffi::OsStr::new).collect();
    let mut s = spawn_berth_at(bin, dir, name, root_name, addr, &extra, rust_log)?;
    s.wait_ready("/v2/", Some(200)).await?;
    Ok(s)
}

fn spawn_berth_at(
    bin: &Path,
    dir: &Path,
    name: &'static str,
    root_name: &str,
    addr: SocketAddr,
    extra: &[&std::ffi::OsStr],
    rust_log: &str,
) -> Result<Server> {
    let root = dir.join(root_name);
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--root")
        .arg(&root)
        .args(extra)
        .env("RUST_LOG", rust_log);
    let (child, log) = spawn(name, cmd, dir)?;
    Ok(Server {
        name,
        addr,
        root,
        log,
        child,
    })
}

/// `berth serve --tls-cert CERT --tls-key KEY --config CONFIG` on its own
/// root: HTTPS with access control. Ready once `/v2/` answers 401 over TLS
/// (checked with curl, which trusts `ca`).
pub async fn start_berth_tls(
    bin: &Path,
    dir: &Path,
    cert: &Path,
    key: &Path,
    config: &Path,
    ca: &Path,
) -> Result<Server> {
    let extra = [
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ];
    let mut s = spawn_berth(bin, dir, "berth-tls", "berth-tls-root", &extra)?;
    s.wait_ready_tls(ca, "/v2/", Some(401)).await?;
    Ok(s)
}

impl Server {
    /// Like `wait_ready`, over TLS: curl (`--cacert ca`) until `GET path`
    /// answers `want` (any status when `None`).
    async fn wait_ready_tls(&mut self, ca: &Path, path: &str, want: Option<u16>) -> Result<()> {
        let deadline = Instant::now() + STARTUP;
        let url = format!("https://{}{path}", self.addr);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited during start-up ({status}):
{}",
                    self.name,
                    self.log_tail()
                );
            }
            let out = tokio::process::Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "5",
                    "--cacert",
                ])
                .arg(ca)
                .arg(&url)
                .output()
                .await
                .context("running curl (is it installed?)")?;
            let code: u16 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0);
            if code != 0 && want.is_none_or(|w| w == code) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer {want:?} on {url} within {STARTUP:?}:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Distribution 2.8 configured as the `registry:2` image ships it
/// (filesystem storage, in-memory blob descriptor cache, deletes enabled),
/// minus the access log and health checks, at log level warn.
pub async fn start_distribution(bin: &Path, dir: &Path) -> Result<Server> {
    let root = dir.join("distribution-root");
    std::fs::create_dir_all(&root)?;
    let storage = format!("  filesystem:\n    rootdirectory: {}\n", root.display());
    start_distribution_on(
        bin,
        dir,
        "distribution",
        &distribution_config(dir),
        &storage,
        root,
    )
    .await
}

/// Distribution with `storage` (YAML lines of its `storage:` table, a
/// driver's; the cache, delete and maintenance settings are added) and its
/// configuration at `config`; `root` is what [`Server::root`] names.
pub async fn start_distribution_on(
    bin: &Path,
    dir: &Path,
    name: &'static str,
    config: &Path,
    storage: &str,
    root: PathBuf,
) -> Result<Server> {
    let addr = free_port()?;
    std::fs::write(
        config,
        format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n{storage}  cache:\n    blobdescriptor: inmemory\n  \
             delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {addr}\n"
        ),
    )?;
    let mut cmd = Command::new(bin);
    cmd.arg("serve").arg(config);
    // Its AWS SDK (v1) cannot load a custom CA bundle into its transport and
    // panics at start when one is named: the S3 workload's store is plain
    // HTTP on loopback and needs none.
    cmd.env_remove("AWS_CA_BUNDLE");
    let (child, log) = spawn(name, cmd, dir)?;
    let mut s = Server {
        name,
        addr,
        root,
        log,
        child,
    };
    s.wait_ready("/v2/", Some(200)).await?;
    Ok(s)
}

/// Where [`start_distribution`] writes its configuration (which
/// `docker-registry garbage-collect` reads too).
pub fn distribution_config(dir: &Path) -> PathBuf {
    dir.join("distribution.yml")
}

/// nginx as one process serving `docroot` with `sendfile on`: the ceiling
/// for serving a file over HTTP on this machine.
pub async fn start_nginx(bin: &Path, dir: &Path, docroot: &Path) -> Result<Server> {
    let mut s = nginx(bin, dir, docroot, None)?;
    s.wait_ready("/", None).await?;
    Ok(s)
}

/// nginx serving `docroot` over TLS (`cert`, `key`): the ceiling for
/// serving a file over HTTPS. Ready once `GET /` answers over TLS.
pub async fn start_nginx_tls(
    bin: &Path,
    dir: &Path,
    docroot: &Path,
    cert: &Path,
    key: &Path,
    ca: &Path,
) -> Result<Server> {
    let mut s = nginx(bin, dir, docroot, Some((cert, key)))?;
    s.wait_ready_tls(ca, "/", None).await?;
    Ok(s)
}

fn nginx(bin: &Path, dir: &Path, docroot: &Path, tls: Option<(&Path, &Path)>) -> Result<Server> {
    let addr = free_port()?;
    let name = if tls.is_some() { "nginx-tls" } else { "nginx" };
    let prefix = dir.join(name);
    std::fs::create_dir_all(&prefix)?;
    let p = prefix.display();
    let temps: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|t| format!("  {t}_temp_path {p}/{t};\n"))
        .collect();
    let listen = match tls {
        None => format!("listen {addr};"),
        Some((cert, key)) => format!(
            "listen {addr} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    \
             ssl_protocols TLSv1.2 TLSv1.3;",
            cert.display(),
            key.display()
        ),
    };
    let config = prefix.join("nginx.conf");
    std::fs::write(
        &config,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\n\
             error_log {p}/error.log warn;\npid {p}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n{temps}\
             \x20 server {{\n    {listen}\n    root {};\n  }}\n}}\n",
            docroot.display()
        ),
    )?;
    let mut cmd = Command::new(bin);
    cmd.arg("-p")
        .arg(&prefix)
        .arg("-e")
        .arg(prefix.join("error.log"))
        .arg("-c")
        .arg(&config);
    let (child, log) = spawn(name, cmd, dir)?;
    Ok(Server {
        name,
        addr,
        root: docroot.to_path_buf(),
        log,
        child,
    })
}

/// Find a program: an explicit path, else `PATH`, else the sbin directories
/// (nginx lives in /usr/sbin, which a non-root `PATH` may lack).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
