//! The process's own metrics, read from `/proc/self` at each scrape under
//! the names Prometheus's client libraries use (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, ...), so that the
//! usual dashboards and alerts work. Off Linux (no `/proc`) they are absent.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Linux fixes the tick user space sees (`USER_HZ`) at 100 per second.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Default)]
pub(crate) struct ProcessCollector;

/// What one scrape reads.
#[derive(Debug, Default, PartialEq)]
struct Sample {
    cpu_seconds: f64,
    threads: Option<i64>,
    start_time_seconds: Option<f64>,
    virtual_bytes: Option<i64>,
    resident_bytes: Option<i64>,
    open_fds: Option<i64>,
    max_fds: Option<i64>,
}

/// Fields of `/proc/PID/stat` after the command name; index 0 is field 3.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().collect())
}

fn read(stat: &str, status: &str, limits: &str, proc_stat: &str) -> Option<Sample> {
    let f = stat_fields(stat)?;
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            .map(|k| k * 1024)
    };
    let boot = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<i64>().ok());
    Some(Sample {
        // utime (field 14) and stime (15).
        cpu_seconds: (num(11)? + num(12)?) as f64 / TICKS_PER_SECOND,
        threads: num(17).map(|n| n as i64),
        // starttime (22) is in ticks since boot.
        start_time_seconds: boot
            .zip(num(19))
            .map(|(b, t)| b as f64 + t as f64 / TICKS_PER_SECOND),
        virtual_bytes: kb("VmSize:"),
        resident_bytes: kb("VmRSS:"),
        open_fds: None,
        max_fds,
    })
}

fn sample() -> Option<Sample> {
    let text = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mut s = read(
        &text("/proc/self/stat"),
        &text("/proc/self/status"),
        &text("/proc/self/limits"),
        &text("/proc/stat"),
    )?;
    s.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as i64);
    Some(s)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = sample() else { return Ok(()) };
        let cpu = ConstCounter::new(s.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges: [(&str, &str, Option<f64>); 6] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                s.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                s.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                s.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                s.max_fds.map(|v| v as f64),
            ),
            (
                "process_threads",
                "Number of OS threads",
                s.threads.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                s.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let g = ConstGauge::new(v);
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_files() {
        let stat = "1234 (tokio rt) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 7 0 4200 1000000 200 18446744073709551615";
        let status = "Name:\tberth\nVmSize:\t  123456 kB\nVmRSS:\t   10240 kB\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        let s = read(stat, status, limits, "cpu 1 2 3\nbtime 1700000000\n").unwrap();
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.threads, Some(7));
        assert_eq!(s.start_time_seconds, Some(1_700_000_042.0));
        assert_eq!(s.virtual_bytes, Some(123456 * 1024));
        assert_eq!(s.resident_bytes, Some(10240 * 1024));
        assert_eq!(s.max_fds, Some(1024));
        assert!(read("garbage", "", "", "").is_none());
        // This process, read for real.
        let me = sample().unwrap();
        assert!(me.open_fds.unwrap() > 0 && me.resident_bytes.unwrap() > 0);
    }
}
