//! CPU pinning for the workloads that price a server-side cost (TLS + auth):
//! the load generator on one CPU, the servers on the others.
//!
//! Why: on a small machine wrk and the servers share every core, so a
//! client-side cost (wrk's own OpenSSL decrypting every response) is charged
//! to the server's requests/s. In a cluster the clients are other nodes.
//! Pinning keeps the client's work off the servers' CPUs, so the figure is
//! the server's capacity with and without the feature. Both sides of such a
//! comparison are pinned the same way.

use anyhow::{bail, Context, Result};

/// Which CPUs the client and the servers get: the first CPU the process may
/// use for the client, the rest for servers. `None` on a one-CPU machine,
/// where there is nothing to separate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub client: String,
    pub servers: String,
}

impl Split {
    pub fn of_this_machine() -> Result<Option<Split>> {
        let text =
            std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
        let list = text
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .context("no Cpus_allowed_list in /proc/self/status")?;
        Ok(Self::from_cpus(&parse_list(list.trim())?))
    }

    fn from_cpus(cpus: &[u32]) -> Option<Split> {
        let (first, rest) = cpus.split_first()?;
        if rest.is_empty() {
            return None;
        }
        let servers = rest
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        Some(Split {
            client: first.to_string(),
            servers,
        })
    }
}

/// A kernel CPU list ("0-3,6") as CPU numbers.
fn parse_list(list: &str) -> Result<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let (lo, hi): (u32, u32) = (
            lo.parse().with_context(|| format!("CPU list {list:?}"))?,
            hi.parse().with_context(|| format!("CPU list {list:?}"))?,
        );
        if hi < lo || hi - lo > 4096 {
            bail!("CPU list {list:?}");
        }
        cpus.extend(lo..=hi);
    }
    Ok(cpus)
}

/// Every thread of `pid` restricted to `cpus` (taskset, util-linux).
pub fn pin(pid: u32, cpus: &str) -> Result<()> {
    let out = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .output()
        .context("running taskset (util-linux)")?;
    if !out.status.success() {
        bail!(
            "taskset -a -p -c {cpus} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Servers pinned for as long as this lives; on drop they get every CPU of
/// the machine back (the plain berth is shared with later workloads).
pub struct Pinned {
    pids: Vec<u32>,
    all: String,
}

impl Pinned {
    pub fn servers(split: &Split, pids: &[u32]) -> Result<Pinned> {
        let all = format!("{},{}", split.client, split.servers);
        let pinned = Pinned {
            pids: pids.to_vec(),
            all,
        };
        for pid in pids {
            pin(*pid, &split.servers)?;
        }
        Ok(pinned)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        for pid in &self.pids {
            // A server that has exited has nothing to restore.
            let _ = pin(*pid, &self.all);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_and_split() {
        assert_eq!(parse_list("0-3,6").unwrap(), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_list("1").unwrap(), vec![1]);
        assert!(parse_list("3-1").is_err());
        assert!(parse_list("x").is_err());
        assert_eq!(Split::from_cpus(&[5]), None);
        assert_eq!(
            Split::from_cpus(&[0, 1, 2]),
            Some(Split {
                client: "0".into(),
                servers: "1,2".into()
            })
        );
    }
}
