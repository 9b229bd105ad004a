//! The ceiling of a push, measured in the same run (issue 16): one core's
//! SHA-256 speed. A registry hashes every byte pushed to it, to check the
//! digest, and one upload's bytes go through one hasher on one core, so no
//! push can be faster than the fastest SHA-256 on one core of this machine.
//! berth's target is 0.9 of it.
//!
//! Measured four ways, each its own figure; the ceiling is the fastest
//! (by median):
//!
//! - `sha2` (RustCrypto, the version in Cargo.lock; SHA-NI when the CPU has
//!   it), `aws-lc-rs` (what rustls in berth runs on) and `ring`, all in this
//!   process, hashing one buffer the size of the pushed blob (256 MiB);
//! - `openssl speed -evp sha256 -bytes 16384`, OpenSSL's own assembly in its
//!   own process, which reports in 1000s of bytes per second.
//!
//! The in-process digests are checked against each other once, untimed: a
//! "fast" result that hashes wrongly is no ceiling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::progress_line;
use crate::report::Unit;
use crate::stats::{Cell, Series, Stat};

/// The versions in Cargo.lock (a unit test keeps them in step).
const SHA2_VERSION: &str = "0.11.1";
const AWS_LC_RS_VERSION: &str = "1.19.0";
const RING_VERSION: &str = "0.17.14";

/// A SHA-256 implementation hashing in this process.
#[derive(Debug, Clone, Copy)]
enum InProcess {
    Sha2,
    AwsLc,
    Ring,
}

impl InProcess {
    const ALL: [InProcess; 3] = [InProcess::Sha2, InProcess::AwsLc, InProcess::Ring];

    fn name(self) -> String {
        match self {
            InProcess::Sha2 => format!("sha2 {SHA2_VERSION}"),
            InProcess::AwsLc => format!("aws-lc-rs {AWS_LC_RS_VERSION}"),
            InProcess::Ring => format!("ring {RING_VERSION}"),
        }
    }

    fn digest(self, buf: &[u8]) -> Vec<u8> {
        match self {
            InProcess::Sha2 => {
                use sha2::Digest as _;
                sha2::Sha256::digest(buf).to_vec()
            }
            InProcess::AwsLc => aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, buf)
                .as_ref()
                .to_vec(),
            InProcess::Ring => ring::digest::digest(&ring::digest::SHA256, buf)
                .as_ref()
                .to_vec(),
        }
    }

    /// Bytes per second of one timed pass over `buf`.
    fn time(self, buf: &[u8]) -> f64 {
        let t = Instant::now();
        std::hint::black_box(self.digest(std::hint::black_box(buf)));
        buf.len() as f64 / t.elapsed().as_secs_f64().max(1e-9)
    }
}

/// One implementation's figure, in bytes per second of one core.
pub struct Measured {
    /// Its name and version, as the report's reference names it.
    pub name: String,
    /// How it was measured.
    pub how: String,
    pub cell: Cell,
}

/// Every implementation's figure.
pub struct Sha256Ceiling {
    pub each: Vec<Measured>,
    pub buffer: u64,
}

impl Sha256Ceiling {
    /// The fastest implementation by median: the ceiling.
    pub fn fastest(&self) -> Result<(String, Stat), String> {
        self.each
            .iter()
            .filter_map(|m| Some((&m.name, m.cell.as_ref().ok()?)))
            .max_by(|a, b| a.1.median().total_cmp(&b.1.median()))
            .map(|(n, s)| (n.clone(), s.clone()))
            .ok_or_else(|| "no SHA-256 implementation could be measured".into())
    }

    /// The figures as lines for the report's header of ceilings.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "SHA-256 on one core (the ceiling of a push), {} MiB per run:",
            self.buffer >> 20
        )];
        for m in &self.each {
            let v = match &m.cell {
                Ok(s) => format!(
                    "{}, {} run{}",
                    Unit::MibPerSec.format_stat(s),
                    s.runs(),
                    if s.runs() == 1 { "" } else { "s" }
                ),
                Err(e) => format!("ERROR: {e}"),
            };
            lines.push(format!("  {} ({}): {v}", m.name, m.how));
        }
        lines.push(match self.fastest() {
            Ok((name, _)) => format!("  ceiling: the fastest, {name}"),
            Err(e) => format!("  ceiling: none ({e})"),
        });
        lines
    }
}

/// Measure every implementation `repeats` times: in-process ones on a
/// buffer of `buffer` bytes, openssl for `openssl_seconds` a run.
pub async fn sha256(buffer: u64, repeats: usize, openssl_seconds: u64) -> Sha256Ceiling {
    progress_line(&format!(
        "SHA-256 ceiling: sha2, aws-lc-rs, ring on {} MiB, openssl speed {openssl_seconds} s; {repeats} run(s) each",
        buffer >> 20
    ));
    let mut in_process: Vec<Series> = InProcess::ALL.iter().map(|_| Series::default()).collect();
    match in_process_runs(buffer, repeats).await {
        Ok(runs) => {
            for (series, r) in in_process.iter_mut().zip(runs) {
                match r {
                    Ok(vals) => vals.into_iter().for_each(|v| series.record(Ok(v))),
                    Err(e) => series.record(Err(e)),
                }
            }
        }
        Err(e) => {
            let msg = format!("{e:#}");
            in_process.iter_mut().for_each(|s| s.fail(&msg));
        }
    }
    let mut openssl = Series::default();
    let version = openssl_version().await;
    for _ in 0..repeats {
        if openssl.failed() {
            break;
        }
        openssl.record(openssl_run(openssl_seconds).await);
    }
    let mut each: Vec<Measured> = InProcess::ALL
        .iter()
        .zip(&in_process)
        .map(|(imp, s)| Measured {
            name: imp.name(),
            how: format!("in this process, a {} MiB buffer", buffer >> 20),
            cell: s.cell(),
        })
        .collect();
    each.push(Measured {
        name: version,
        how: "openssl speed -evp sha256 -bytes 16384, its own process".into(),
        cell: openssl.cell(),
    });
    Sha256Ceiling { each, buffer }
}

/// Per implementation, its bytes/s over `repeats` runs (implementations
/// alternated within each run), or why it has none.
async fn in_process_runs(buffer: u64, repeats: usize) -> Result<Vec<Result<Vec<f64>>>> {
    let len = usize::try_from(buffer).context("buffer size")?;
    tokio::task::spawn_blocking(move || {
        // SHA-256 takes the same time whatever the bytes; non-zero so that
        // every page is really written (not the shared zero page).
        let buf = Arc::new(vec![0x5au8; len]);
        let want = InProcess::Sha2.digest(&buf);
        let mut out: Vec<Result<Vec<f64>>> = Vec::new();
        for imp in InProcess::ALL {
            // Also the untimed warm-up pass.
            if imp.digest(&buf) == want {
                out.push(Ok(Vec::new()));
            } else {
                out.push(Err(anyhow::anyhow!(
                    "{} hashes differently from sha2",
                    imp.name()
                )));
            }
        }
        for _ in 0..repeats {
            for (imp, r) in InProcess::ALL.iter().zip(out.iter_mut()) {
                if let Ok(vals) = r {
                    vals.push(imp.time(&buf));
                }
            }
        }
        out
    })
    .await
    .context("the hashing thread")
}

/// "OpenSSL 3.0.19".
async fn openssl_version() -> String {
    tokio::process::Command::new("openssl")
        .arg("version")
        .output()
        .await
        .ok()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "openssl (not found)".into())
}

/// One `openssl speed` run: bytes per second.
async fn openssl_run(seconds: u64) -> Result<f64> {
    let secs = seconds.max(1).to_string();
    let cmd = tokio::process::Command::new("openssl")
        .args([
            "speed", "-evp", "sha256", "-bytes", "16384", "-seconds", &secs,
        ])
        .kill_on_drop(true)
        .output();
    let limit = Duration::from_secs(seconds + 30);
    let out = tokio::time::timeout(limit, cmd)
        .await
        .context("openssl speed did not finish in time")?
        .context("running openssl speed (apt-get install openssl)")?;
    if !out.status.success() {
        bail!(
            "openssl speed failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_openssl_speed(&String::from_utf8_lossy(&out.stdout))
}

/// The sha256 figure of `openssl speed -evp sha256 -bytes N`, in bytes per
/// second. OpenSSL prints thousands of bytes per second (`1716518.91k` is
/// 1,716,518,910 B/s, 1637 MiB/s), and says so; without that line the
/// number's unit is unknown, so the output is refused.
pub fn parse_openssl_speed(text: &str) -> Result<f64> {
    if !text.contains("in 1000s of bytes per second") {
        bail!("openssl speed's output does not say its unit (1000s of bytes per second)");
    }
    let line = text
        .lines()
        .find(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case("sha256"))
        })
        .context("no sha256 line in openssl speed's output")?;
    let last = line.split_whitespace().last().unwrap_or_default();
    let thousands: f64 = last
        .strip_suffix('k')
        .with_context(|| format!("openssl speed: {last:?} is not a figure in k"))?
        .parse()
        .with_context(|| format!("openssl speed: malformed figure {last:?}"))?;
    if thousands.is_nan() || thousands <= 0.0 {
        bail!("openssl speed measured nothing: {line:?}");
    }
    Ok(thousands * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::MIB;

    /// `openssl speed -evp sha256 -bytes 16384 -seconds 1` on the
    /// development machine (stdout; the "Doing sha256 ..." line is stderr).
    const OPENSSL_3_0: &str = "version: 3.0.19
built on: Fri Apr  3 12:29:32 2026 UTC
options: bn(64,64)
compiler: gcc -fPIC -pthread -m64 -Wa,--noexecstack -Wall -fzero-call-used-regs=used-gpr -DOPENSSL_TLS_SECURITY_LEVEL=2 -Wa,--noexecstack -g -O2 -ffile-prefix-map=/build/reproducible-path/openssl-3.0.19=. -fstack-protector-strong -Wformat -Werror=format-security -DOPENSSL_USE_NODELETE -DL_ENDIAN -DOPENSSL_PIC -DOPENSSL_BUILDING_OPENSSL -DNDEBUG -Wdate-time -D_FORTIFY_SOURCE=2
CPUINFO: OPENSSL_ia32cap=0xfffa3203078bffff:0x405fc6f1bf07ab
The 'numbers' are in 1000s of bytes per second processed.
type          16384 bytes
sha256         1716518.91k
";

    #[test]
    fn parses_openssl_speed_in_thousands_of_bytes() {
        let v = parse_openssl_speed(OPENSSL_3_0).unwrap();
        assert_eq!(v, 1_716_518_910.0);
        // 1000s of bytes, not KiB: 1637 MiB/s, not 1676.
        assert!((v / MIB - 1637.0).abs() < 0.01, "{}", v / MIB);
        assert_eq!(Unit::MibPerSec.format(v), "1637 MiB/s");
    }

    #[test]
    fn refuses_openssl_output_it_cannot_read() {
        let no_unit = OPENSSL_3_0.replace(
            "The 'numbers' are in 1000s of bytes per second processed.\n",
            "",
        );
        assert!(parse_openssl_speed(&no_unit).is_err());
        let no_line = OPENSSL_3_0.replace("sha256         1716518.91k\n", "");
        assert!(parse_openssl_speed(&no_line).is_err());
        let bad = OPENSSL_3_0.replace("1716518.91k", "1716518.91");
        assert!(parse_openssl_speed(&bad).is_err());
        let zero = OPENSSL_3_0.replace("1716518.91k", "0.00k");
        assert!(parse_openssl_speed(&zero).is_err());
    }

    #[test]
    fn in_process_implementations_agree() {
        let buf = vec![7u8; 100_000];
        let want = InProcess::Sha2.digest(&buf);
        assert_eq!(want.len(), 32);
        for imp in InProcess::ALL {
            assert_eq!(imp.digest(&buf), want, "{imp:?}");
            assert!(imp.time(&buf) > 0.0);
        }
    }

    fn m(name: &str, cell: Cell) -> Measured {
        Measured {
            name: name.into(),
            how: "how".into(),
            cell,
        }
    }

    #[test]
    fn the_fastest_median_is_the_ceiling() {
        let c = Sha256Ceiling {
            each: vec![
                m("a", Stat::new([1.0, 2.0, 9.0]).ok_or_else(String::new)),
                m("b", Stat::new([3.0, 3.0, 3.0]).ok_or_else(String::new)),
                m("c", Err("not installed".into())),
            ],
            buffer: 256 << 20,
        };
        // a has the best single run, b the best median.
        assert_eq!(c.fastest().unwrap().0, "b");
        let text = c.describe().join("\n");
        assert!(text.contains("c (how): ERROR: not installed"), "{text}");
        assert!(text.contains("the fastest, b"), "{text}");
        let none = Sha256Ceiling {
            each: vec![m("c", Err("x".into()))],
            buffer: 1,
        };
        assert!(none.fastest().is_err());
    }

    #[test]
    fn versions_are_the_locked_ones() {
        let lock = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"));
        for (name, version) in [
            ("sha2", SHA2_VERSION),
            ("aws-lc-rs", AWS_LC_RS_VERSION),
            ("ring", RING_VERSION),
        ] {
            let entry = format!("name = \"{name}\"\nversion = \"{version}\"\n");
            assert!(lock.contains(&entry), "Cargo.lock has no {name} {version}");
        }
    }
}
