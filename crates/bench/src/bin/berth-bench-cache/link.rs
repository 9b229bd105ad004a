//! The upstream's link: a network namespace of the benchmark's own, joined
//! to the root namespace by a veth pair whose two ends each carry a
//! token-bucket filter (`tc qdisc ... tbf`). The upstream runs inside it, so
//! every byte it serves crosses a link of limited bandwidth, as from a
//! registry across a WAN, while berth, Distribution's proxy and the clients
//! stay on this machine's loopback, as a cache near its nodes is.
//!
//! Without it (the upstream on loopback too) 32 clients through a cache move
//! 32 times the bytes of one client straight from the upstream over the
//! same fast path, and the time ratio measures copying, not the cache.
//!
//! This module owns the rate (`--upstream-rate`), creating the namespace
//! and its link ([`Link::create`]), starting a command inside it
//! ([`Link::command`]) and removing all of it when a [`Link`] is dropped:
//! on success, on error, on `--max-seconds` and on Ctrl-C (`main` turns
//! those into a return, so the drop runs). A run killed outright cannot
//! clean up; the next run sweeps away what it left ([`sweep_stale`]).
//!
//! Every `ip`/`tc`/`kill` command it runs is bounded in time.

use std::fmt;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::proc::find_on_path;

/// The namespaces this program makes: this prefix and the pid of the run.
const NS_PREFIX: &str = "berth-bench-cache-";
/// The veth ends are `bbc<pid>r` (root namespace) and `bbc<pid>n`
/// (namespace): at most 11 characters, within the kernel's 15.
const IF_PREFIX: &str = "bbc";
/// The /30s are taken from 10.231.0.0/16 (16384 of them): private, and
/// unlikely to be a network this machine is on; each candidate is checked
/// against the host's addresses and routes first.
const SUBNETS: u32 = 1 << 14;
const SUBNET_BASE: u32 = u32::from_be_bytes([10, 231, 0, 0]);
/// An `ip` or `tc` command takes milliseconds; one that takes longer than
/// this is stuck.
const COMMAND_LIMIT: Duration = Duration::from_secs(10);
/// Distribution's port inside the namespace, which is empty, so any port is
/// free (the next ones for retries).
pub const UPSTREAM_PORT: u16 = 5000;

/// `--upstream-rate`: how fast the upstream's link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamRate {
    /// `none`: the upstream on loopback, as fast as this machine copies.
    Unlimited,
    /// Bits per second, each way.
    Limited(u64),
}

impl UpstreamRate {
    /// The default: a generous WAN link.
    pub const DEFAULT: &'static str = "500mbit";
}

/// `none`, or a rate as `tc` writes it: a number and `bit`, `kbit`, `mbit`
/// or `gbit` (powers of 1000, per second). `tc`'s `bps` (bytes) is not
/// accepted, to avoid mistaking it for bits.
pub fn parse_rate(s: &str) -> Result<UpstreamRate, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "none" {
        return Ok(UpstreamRate::Unlimited);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => {
            return Err(format!(
                "{s:?}: give `none` or a rate such as 500mbit (units: bit, kbit, mbit, gbit)"
            ))
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: no number before the unit"))?;
    let bits = (n * scale).round();
    // Below 1 Mbit/s the full-size image would not arrive within the time
    // limits; above 40 Gbit/s the filter is not what limits the rate.
    if !(1e6..=40e9).contains(&bits) {
        return Err(format!("{s:?}: the rate must be 1mbit..=40gbit, or none"));
    }
    Ok(UpstreamRate::Limited(bits as u64))
}

impl fmt::Display for UpstreamRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            UpstreamRate::Unlimited => write!(f, "unlimited (loopback)"),
            UpstreamRate::Limited(b) if b % 1_000_000_000 == 0 => {
                write!(f, "{} Gbit/s", b / 1_000_000_000)
            }
            UpstreamRate::Limited(b) if b % 1_000_000 == 0 => write!(f, "{} Mbit/s", b / 1_000_000),
            UpstreamRate::Limited(b) => write!(f, "{:.3} Mbit/s", b as f64 / 1e6),
        }
    }
}

/// The programs the link needs, found on PATH or in the sbin directories
/// (which a PATH may lack).
struct Tools {
    ip: PathBuf,
    tc: PathBuf,
    /// Only for processes left inside a namespace; the upstream itself is
    /// killed by its `Proc`.
    kill: Option<PathBuf>,
}

fn find_tool(name: &str) -> Option<PathBuf> {
    find_on_path(name).or_else(|| {
        ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .map(|d| PathBuf::from(d).join(name))
            .find(|p| p.is_file())
    })
}

/// The effective uid, from /proc (the benchmark has no libc binding).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

impl Tools {
    /// Root, `ip` and `tc`, or an error naming everything that is missing:
    /// a rate was asked for, and measuring without it would be measuring
    /// something else.
    fn find() -> Result<Tools> {
        let mut missing = Vec::new();
        match effective_uid() {
            Some(0) => {}
            Some(uid) => missing.push(format!("root (running as uid {uid})")),
            None => missing.push("root (the uid could not be read from /proc)".into()),
        }
        let ip = find_tool("ip");
        let tc = find_tool("tc");
        if ip.is_none() {
            missing.push("`ip` (iproute2)".into());
        }
        if tc.is_none() {
            missing.push("`tc` (iproute2)".into());
        }
        match (ip, tc) {
            (Some(ip), Some(tc)) if missing.is_empty() => Ok(Tools {
                ip,
                tc,
                kill: find_tool("kill"),
            }),
            _ => bail!(
                "the upstream's rate-limited link (a network namespace, a veth pair, tc tbf) \
                 needs root and iproute2; missing: {}. Run as root with iproute2 installed, \
                 or pass --upstream-rate none for an upstream on loopback",
                missing.join(", ")
            ),
        }
    }
}

/// Run a short command, bounded by [`COMMAND_LIMIT`]; its stdout, or an
/// error with the command and its stderr.
fn run(program: &PathBuf, args: &[&str]) -> Result<String> {
    let what = format!("{} {}", program.display(), args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    // Read both pipes while waiting, so that a long output cannot block it.
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out = reader(child.stdout.take().map(|p| Box::new(p) as _));
    let err = reader(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + COMMAND_LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what}: no exit within {COMMAND_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        bail!("{what}: {status}: {}", err.trim());
    }
    Ok(out)
}

/// The upstream's namespace and link; dropping it removes both.
pub struct Link {
    tools: Tools,
    pub ns: String,
    root_if: String,
    ns_if: String,
    /// The root namespace's end of the veth.
    pub root_addr: Ipv4Addr,
    /// The namespace's end, where the upstream listens.
    pub upstream_addr: Ipv4Addr,
    pub rate: UpstreamRate,
    /// What exists so far, so that a failed set-up removes only what it made.
    made_ns: bool,
    made_veth: bool,
}

impl Link {
    /// Make the namespace `berth-bench-cache-<pid>` and a veth pair into it
    /// on a free /30, both ends up (and `lo` inside), a token bucket of
    /// `bits_per_sec` on each end: the namespace's end limits what the
    /// upstream sends (blob bytes), the root end what reaches it (requests,
    /// pushes, ACKs).
    pub fn create(bits_per_sec: u64) -> Result<Link> {
        let tools = Tools::find()?;
        sweep_stale(&tools);
        let pid = std::process::id();
        let (root_addr, upstream_addr) = free_subnet(&tools, pid)?;
        let mut link = Link {
            tools,
            ns: format!("{NS_PREFIX}{pid}"),
            root_if: format!("{IF_PREFIX}{pid}r"),
            ns_if: format!("{IF_PREFIX}{pid}n"),
            root_addr,
            upstream_addr,
            rate: UpstreamRate::Limited(bits_per_sec),
            made_ns: false,
            made_veth: false,
        };
        // From here on a failure returns early and the drop undoes it.
        link.set_up(bits_per_sec)?;
        Ok(link)
    }

    fn set_up(&mut self, bits_per_sec: u64) -> Result<()> {
        let (ns, root_if, ns_if) = (self.ns.clone(), self.root_if.clone(), self.ns_if.clone());
        let ip_bin = self.tools.ip.clone();
        let ip = |args: &[&str]| run(&ip_bin, args);
        ip(&["netns", "add", &ns]).context("creating the upstream's network namespace")?;
        self.made_ns = true;
        // Created with its peer already inside the namespace: no moment when
        // both ends are in the root namespace.
        ip(&[
            "link", "add", &root_if, "type", "veth", "peer", "name", &ns_if, "netns", &ns,
        ])
        .context("creating the veth pair (is the veth module available?)")?;
        self.made_veth = true;
        let root_cidr = format!("{}/30", self.root_addr);
        let ns_cidr = format!("{}/30", self.upstream_addr);
        ip(&["addr", "add", &root_cidr, "dev", &root_if])?;
        ip(&["link", "set", &root_if, "up"])?;
        ip(&["-n", &ns, "addr", "add", &ns_cidr, "dev", &ns_if])?;
        ip(&["-n", &ns, "link", "set", &ns_if, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        let rate = format!("{bits_per_sec}bit");
        // The bucket holds 4 ms of the rate (a 250 Hz timer's tick, the
        // least tbf needs to reach it), at least 64 KiB so that a full
        // segmentation-offload packet passes whole; packets queue for at
        // most 25 ms, about a WAN link's buffer, before they are dropped.
        let burst = (bits_per_sec / 8 / 250).max(64 << 10).to_string();
        let tbf = [
            "root", "tbf", "rate", &rate, "burst", &burst, "latency", "25ms",
        ];
        let tc = |pre: &[&str], dev: &str| {
            let mut args = pre.to_vec();
            args.extend(["qdisc", "add", "dev", dev]);
            args.extend(tbf);
            run(&self.tools.tc, &args).context("adding the token-bucket filter (sch_tbf)")
        };
        tc(&["-n", &ns], &ns_if)?;
        tc(&[], &root_if)?;
        Ok(())
    }

    /// `program` to run inside the namespace (`ip netns exec` execs it, so
    /// the child is the program itself and killing it kills the program).
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut cmd = Command::new(&self.tools.ip);
        cmd.args(["netns", "exec", &self.ns]).arg(program);
        cmd
    }

    /// One line for the report's header.
    pub fn describe(&self) -> String {
        format!(
            "{} each way: network namespace {} behind a veth pair ({} {} <-> {} {}), \
             tc tbf on both ends",
            self.rate, self.ns, self.root_if, self.root_addr, self.ns_if, self.upstream_addr
        )
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let left = remove(
            &self.tools,
            &self.ns,
            &self.root_if,
            self.made_ns,
            self.made_veth,
        );
        if !left.is_empty() {
            eprintln!(
                "berth-bench-cache: could not remove the upstream's link: {}",
                left.join("; ")
            );
        }
    }
}

/// Remove a namespace of ours and its veth: kill what runs inside (a
/// namespace with processes outlives `ip netns del`, and its veth with it),
/// delete the namespace (which deletes the veth pair once it is freed) and
/// the root end if it is still there. What could not be removed, with the
/// command that would.
fn remove(tools: &Tools, ns: &str, root_if: &str, has_ns: bool, has_veth: bool) -> Vec<String> {
    let mut left = Vec::new();
    if has_ns {
        let pids = || -> Vec<String> {
            run(&tools.ip, &["netns", "pids", ns])
                .map(|o| o.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        };
        let mut inside = pids();
        if !inside.is_empty() {
            match &tools.kill {
                Some(kill) => {
                    let mut args = vec!["-KILL"];
                    args.extend(inside.iter().map(String::as_str));
                    let _ = run(kill, &args);
                    // SIGKILL is not instant: wait (bounded) until they are gone.
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while !inside.is_empty() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(20));
                        inside = pids();
                    }
                }
                None => left.push(format!(
                    "processes {} in {ns} (no `kill` to end them)",
                    inside.join(" ")
                )),
            }
            if !inside.is_empty() {
                left.push(format!("processes {} still in {ns}", inside.join(" ")));
            }
        }
        if let Err(e) = run(&tools.ip, &["netns", "del", ns]) {
            left.push(format!("{e:#} (ip netns del {ns})"));
        }
    }
    if has_veth && run(&tools.ip, &["link", "show", "dev", root_if]).is_ok() {
        if let Err(e) = run(&tools.ip, &["link", "del", "dev", root_if]) {
            left.push(format!("{e:#} (ip link del {root_if})"));
        }
    }
    left
}

/// Whether the run with this pid is still going: its namespace is in use.
fn run_alive(pid: u32) -> bool {
    // Kernel task names are cut to 15 characters.
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|c| "berth-bench-cache".starts_with(c.trim()) && !c.trim().is_empty())
}

/// Remove the namespaces and veth ends of earlier runs that were killed
/// before they could (SIGKILL, a crash): else their upstreams would keep
/// running and their addresses stay taken. Those of live runs stay.
fn sweep_stale(tools: &Tools) {
    let mut stale = Vec::new();
    if let Ok(list) = run(&tools.ip, &["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if let Some(pid) = name.strip_prefix(NS_PREFIX).and_then(|p| p.parse().ok()) {
                stale.push(pid);
            }
        }
    }
    if let Ok(links) = run(&tools.ip, &["-o", "link", "show"]) {
        for l in links.lines() {
            // "12: bbc1234r@if11: <...>"
            let name = l.split_whitespace().nth(1).unwrap_or("");
            let name = name.split(['@', ':']).next().unwrap_or("");
            if let Some(pid) = name
                .strip_prefix(IF_PREFIX)
                .and_then(|r| r.strip_suffix('r'))
                .and_then(|p| p.parse().ok())
            {
                stale.push(pid);
            }
        }
    }
    stale.sort_unstable();
    stale.dedup();
    for pid in stale {
        // Our own pid's are of an earlier run that had it: ours is not made yet.
        if pid != std::process::id() && run_alive(pid) {
            continue;
        }
        let ns = format!("{NS_PREFIX}{pid}");
        let root_if = format!("{IF_PREFIX}{pid}r");
        let has_ns = run(&tools.ip, &["netns", "list"]).is_ok_and(|l| {
            l.lines()
                .any(|x| x.split_whitespace().next() == Some(ns.as_str()))
        });
        eprintln!("berth-bench-cache: removing {ns} and {root_if}, left by a run that was killed");
        for left in remove(tools, &ns, &root_if, has_ns, true) {
            eprintln!("berth-bench-cache: {left}");
        }
    }
}

/// An IPv4 prefix from `ip` output: `a.b.c.d/len`, or an address as /32.
fn prefix(text: &str) -> Option<(u32, u32)> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, l.parse().ok()?),
        None => (text, 32),
    };
    let addr: Ipv4Addr = addr.parse().ok()?;
    (len <= 32).then_some((u32::from(addr), len))
}

fn overlaps((a, alen): (u32, u32), (b, blen): (u32, u32)) -> bool {
    let len = alen.min(blen);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    a & mask == b & mask
}

/// A /30 in 10.231.0.0/16 that no address of this host is in and no route
/// of /16 or longer covers (such a route says that range is in use here;
/// a broader one, a VPN's 10.0.0.0/8, is only shadowed for 4 addresses).
/// Starts at the pid's, so that concurrent runs pick different ones.
fn free_subnet(tools: &Tools, pid: u32) -> Result<(Ipv4Addr, Ipv4Addr)> {
    let mut taken = Vec::new();
    let addrs = run(&tools.ip, &["-o", "-4", "addr", "show"])?;
    // "4: eth0    inet 192.0.2.2/24 brd ..."
    for l in addrs.lines() {
        let mut words = l.split_whitespace();
        if words.any(|w| w == "inet") {
            if let Some((a, _)) = words.next().and_then(prefix) {
                taken.push((a, 32));
            }
        }
    }
    let routes = run(&tools.ip, &["-4", "route", "show", "table", "all"])?;
    // "10.1.0.0/16 via ...", "local 127.0.0.1 dev lo ...", "default via ..."
    for l in routes.lines() {
        if let Some(p) = l.split_whitespace().take(2).find_map(prefix) {
            if p.1 >= 16 {
                taken.push(p);
            }
        }
    }
    let first = pid % SUBNETS;
    for i in 0..64 {
        let net = SUBNET_BASE + ((first + i) % SUBNETS) * 4;
        if !taken.iter().any(|&t| overlaps((net, 30), t)) {
            return Ok((Ipv4Addr::from(net + 1), Ipv4Addr::from(net + 2)));
        }
    }
    bail!("no free /30 in 10.231.0.0/16 for the upstream's link near #{first}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("none"), Ok(UpstreamRate::Unlimited));
        assert_eq!(
            parse_rate("500mbit"),
            Ok(UpstreamRate::Limited(500_000_000))
        );
        assert_eq!(
            parse_rate("1.5Gbit"),
            Ok(UpstreamRate::Limited(1_500_000_000))
        );
        assert!(parse_rate("500").is_err());
        assert!(parse_rate("500mbps").is_err());
        assert!(parse_rate("10kbit").is_err());
        assert!(parse_rate("mbit").is_err());
        assert_eq!(UpstreamRate::Limited(500_000_000).to_string(), "500 Mbit/s");
        assert_eq!(UpstreamRate::Limited(2_000_000_000).to_string(), "2 Gbit/s");
        assert_eq!(
            UpstreamRate::Limited(1_500_000_000).to_string(),
            "1500 Mbit/s"
        );
    }

    #[test]
    fn prefixes_and_overlaps() {
        let p = |s| prefix(s).unwrap();
        assert_eq!(p("10.231.0.4/30"), (SUBNET_BASE + 4, 30));
        assert_eq!(p("127.0.0.1").1, 32);
        assert!(prefix("default").is_none());
        assert!(overlaps(p("10.231.0.4/30"), p("10.231.0.6")));
        assert!(!overlaps(p("10.231.0.4/30"), p("10.231.0.8")));
        assert!(overlaps(p("10.231.0.4/30"), p("10.0.0.0/8")));
        assert!(overlaps(p("10.231.0.4/30"), p("0.0.0.0/0")));
    }
}
