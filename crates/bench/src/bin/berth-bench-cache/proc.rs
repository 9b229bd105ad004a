//! The processes of the cache benchmark: Distribution (the upstream, and
//! in proxy mode a second cache), berth with `--upstream`, each on a free
//! loopback port with fresh storage (the upstream inside its network
//! namespace instead, on the namespace's address, when it has a [`Link`]).
//! A [`Proc`] kills its process when dropped (also on error or time-out)
//! and removes its storage, so that repeats do not fill the disk.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use http::Method;

use crate::http::send;
use crate::link::{Link, UPSTREAM_PORT};
use crate::UPSTREAM_HOST;

const STARTUP: Duration = Duration::from_secs(30);

pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding an ephemeral port")?;
    Ok(l.local_addr()?.port())
}

/// A server process, killed when dropped (also on error or time-out),
/// its storage then removed.
pub struct Proc {
    name: String,
    pub addr: SocketAddr,
    log: PathBuf,
    storage: PathBuf,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.storage);
    }
}

impl Proc {
    fn spawn(
        name: &str,
        mut cmd: Command,
        addr: SocketAddr,
        log: PathBuf,
        storage: PathBuf,
    ) -> Result<Proc> {
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.to_string(),
            addr,
            log,
            storage,
            child,
        })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait (bounded) until `GET /v2/` answers 200.
    async fn ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited during start-up ({status}):\n{}",
                    self.name,
                    tail(&self.log_text())
                );
            }
            if let Ok(r) = send(self.addr, Method::GET, "/v2/", &[], None).await {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer /v2/ within {STARTUP:?}:\n{}",
                    self.name,
                    tail(&self.log_text())
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The end of its log without the access log's lines (the requests
    /// would bury the error that explains a failure).
    pub fn log_tail(&self) -> String {
        let log = self.log_text();
        let kept: Vec<&str> = log.lines().filter(|l| !l.contains("] \"")).collect();
        format!("{}'s log ends:\n{}", self.name, tail(&kept.join("\n")))
    }

    /// Requests in a Distribution access log: `METHOD URI` per line.
    pub fn access_log(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter_map(|l| {
                let rest = &l[l.find("] \"")? + 3..];
                Some(rest[..rest.find(" HTTP/")?].to_string())
            })
            .collect()
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Start `docker-registry serve` on fresh storage under `dir`, with its
/// access log on; `proxy` makes it a pull-through cache of that URL;
/// `inside` runs it in that link's namespace.
pub async fn start_distribution(
    bin: &Path,
    dir: &Path,
    name: &str,
    proxy: Option<&str>,
    inside: Option<&Link>,
) -> Result<Proc> {
    let mut last = None;
    for attempt in 0..3 {
        let addr = match inside {
            // The namespace is the upstream's alone: its ports are free.
            Some(link) => SocketAddr::new(link.upstream_addr.into(), UPSTREAM_PORT + attempt),
            None => SocketAddr::new(LOOPBACK, free_port()?),
        };
        let storage = dir.join(format!("{name}-{attempt}"));
        std::fs::create_dir_all(&storage)?;
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {addr}\n  secret: berth-bench-cache\n",
            storage.display()
        );
        if let Some(url) = proxy {
            config.push_str(&format!("proxy:\n  remoteurl: {url}\n"));
        }
        let config_path = dir.join(format!("{name}-{attempt}.yml"));
        std::fs::write(&config_path, config)?;
        let mut cmd = match inside {
            Some(link) => link.command(bin),
            None => Command::new(bin),
        };
        cmd.arg("serve").arg(&config_path);
        let log = dir.join(format!("{name}-{attempt}.log"));
        let mut p = Proc::spawn(name, cmd, addr, log, storage)?;
        match p.ready().await {
            Ok(()) => return Ok(p),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("{name} did not start")))
}

/// Start `berth serve` on a fresh root under `dir`, mirroring the upstream.
pub async fn start_berth(bin: &Path, dir: &Path, name: &str, upstream: &str) -> Result<Proc> {
    let mut last = None;
    for attempt in 0..3 {
        let addr = SocketAddr::new(LOOPBACK, free_port()?);
        let root = dir.join(format!("{name}-{attempt}"));
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--listen", &addr.to_string(), "--root"])
            .arg(&root)
            .arg(format!("--upstream={UPSTREAM_HOST}={upstream}"))
            .env("RUST_LOG", "warn");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("BERTH_") {
                cmd.env_remove(key);
            }
        }
        let log = dir.join(format!("{name}-{attempt}.log"));
        let mut p = Proc::spawn(name, cmd, addr, log, root)?;
        match p.ready().await {
            Ok(()) => return Ok(p),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("{name} did not start")))
}
