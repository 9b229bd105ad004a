//! Running `wrk` for the small-request workload and reading its report:
//! requests per second and the 99th percentile latency (`--latency`).

use std::time::Duration;

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WrkResult {
    pub requests_per_sec: f64,
    pub p99: Duration,
    /// Requests completed in the whole run (`N requests in Xs`).
    pub requests: u64,
}

pub struct WrkRun<'a> {
    pub url: &'a str,
    pub threads: u32,
    pub connections: u32,
    pub duration: Duration,
    pub headers: &'a [&'a str],
    /// Run wrk on these CPUs only (a taskset list), see `pin`.
    pub cpus: Option<&'a str>,
}

pub async fn run(w: &WrkRun<'_>) -> Result<WrkResult> {
    let mut cmd = match w.cpus {
        None => tokio::process::Command::new("wrk"),
        Some(cpus) => {
            let mut c = tokio::process::Command::new("taskset");
            c.args(["-c", cpus, "wrk"]);
            c
        }
    };
    cmd.arg(format!("-t{}", w.threads))
        .arg(format!("-c{}", w.connections))
        .arg(format!("-d{}s", w.duration.as_secs().max(1)))
        .arg("--timeout")
        .arg("5s")
        .arg("--latency");
    for h in w.headers {
        cmd.arg("-H").arg(h);
    }
    cmd.arg(w.url).kill_on_drop(true);
    let limit = w.duration + Duration::from_secs(30);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .context("wrk did not finish in time")?
        .context("running wrk (is it installed?)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&text)
}

/// Parse wrk's report. Any non-2xx/3xx response or socket error makes the
/// run invalid: a fast error page is not a fast registry.
pub fn parse(text: &str) -> Result<WrkResult> {
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("Non-2xx or 3xx responses:") {
            bail!("the server answered with errors: {l}");
        }
        if l.starts_with("Socket errors:") && socket_errors(l) > 0 {
            bail!("wrk saw socket errors: {l}");
        }
    }
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .context("no Requests/sec in wrk's output")?
        .trim()
        .parse::<f64>()
        .context("malformed Requests/sec")?;
    let p99 = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("99%"))
        .context("no 99% latency in wrk's output (was --latency given?)")?;
    let p99 = parse_duration(p99.trim())?;
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .context("no \"requests in\" in wrk's output")?
        .0
        .parse::<u64>()
        .context("malformed request count")?;
    if rps <= 0.0 || requests == 0 {
        bail!("wrk measured no requests");
    }
    Ok(WrkResult {
        requests_per_sec: rps,
        p99,
        requests,
    })
}

/// `Socket errors: connect 0, read 0, write 0, timeout 0` → total.
fn socket_errors(line: &str) -> u64 {
    line.split(',')
        .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

/// wrk's durations: `812.00us`, `1.25ms`, `2.00s`, `1.00m`.
fn parse_duration(s: &str) -> Result<Duration> {
    let split = s
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in {s:?}"))?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .with_context(|| format!("bad number in {s:?}"))?;
    let secs = match unit {
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => bail!("unknown unit in {s:?}"),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 10s test @ http://127.0.0.1:1234/v2/x/manifests/latest
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20ms  500.00us  20.00ms   90.00%
    Req/Sec    13.40k     1.00k   15.00k    70.00%
  Latency Distribution
     50%    1.10ms
     75%    1.40ms
     90%    1.90ms
     99%  812.00us
  266000 requests in 10.00s, 100.00MB read
Requests/sec:  26600.50
Transfer/sec:     10.00MB
";

    #[test]
    fn parses_a_report() {
        let r = parse(REPORT).unwrap();
        assert_eq!(r.requests_per_sec, 26600.5);
        assert_eq!(r.p99, Duration::from_micros(812));
        assert_eq!(r.requests, 266000);
    }

    #[test]
    fn refuses_errors() {
        let bad = REPORT.replace(
            "Requests/sec",
            "  Non-2xx or 3xx responses: 12\nRequests/sec",
        );
        assert!(parse(&bad).is_err());
        let sock = REPORT.replace(
            "Requests/sec",
            "  Socket errors: connect 0, read 3, write 0, timeout 0\nRequests/sec",
        );
        assert!(parse(&sock).is_err());
        let ok = REPORT.replace(
            "Requests/sec",
            "  Socket errors: connect 0, read 0, write 0, timeout 0\nRequests/sec",
        );
        assert!(parse(&ok).is_ok());
        assert_eq!(parse_duration("2.00s").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("3.0x").is_err());
    }
}
