//! The result table: one row per figure, berth beside the reference (a
//! ceiling measured in the same run: one core's SHA-256, nginx's sendfile;
//! or Distribution), the ratio, the target and whether berth meets it.
//!
//! Every cell holds all the runs of its figure ([`Stat`]) and shows the
//! median with the min–max range; ratios and results are computed on the
//! medians (see `stats` for why). Ratios are always "times better for
//! berth", so a ratio above 1 favours berth whatever the unit.

use std::fmt::Write as _;

pub use crate::stats::Cell;
use crate::stats::Stat;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    MibPerSec,
    GibPerSec,
    ReqPerSec,
    /// Requests served per second of the server's own CPU time: its
    /// capacity per core, whatever else shares the machine.
    ReqPerCpuSec,
    Millis,
    Secs,
    Mib,
    /// Requests to an upstream per blob pulled through a cache.
    PerBlob,
}

impl Unit {
    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Unit::MibPerSec | Unit::GibPerSec | Unit::ReqPerSec | Unit::ReqPerCpuSec
        )
    }

    /// The number alone, scaled to the unit (for ranges: the unit once).
    fn number(self, v: f64) -> String {
        match self {
            Unit::MibPerSec => format!("{:.0}", v / MIB),
            Unit::GibPerSec => format!("{:.2}", v / GIB),
            Unit::ReqPerSec if v >= 100.0 => format!("{v:.0}"),
            Unit::ReqPerSec => format!("{v:.1}"),
            Unit::ReqPerCpuSec => format!("{v:.0}"),
            Unit::Millis => format!("{:.2}", v * 1e3),
            // Below a second, a third decimal keeps two significant digits.
            Unit::Secs if v < 1.0 => format!("{v:.3}"),
            Unit::Secs | Unit::PerBlob => format!("{v:.2}"),
            Unit::Mib => format!("{:.1}", v / MIB),
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Unit::MibPerSec => "MiB/s",
            Unit::GibPerSec => "GiB/s",
            Unit::ReqPerSec => "req/s",
            Unit::ReqPerCpuSec => "req/CPU-s",
            Unit::Millis => "ms",
            Unit::Secs => "s",
            Unit::Mib => "MiB",
            Unit::PerBlob => "per blob",
        }
    }

    pub fn format(self, v: f64) -> String {
        format!("{} {}", self.number(v), self.suffix())
    }

    /// `median unit (min–max)`, or `value unit` for a single run.
    pub fn format_stat(self, s: &Stat) -> String {
        if s.runs() == 1 {
            return self.format(s.median());
        }
        format!(
            "{} ({}–{})",
            self.format(s.median()),
            self.number(s.min()),
            self.number(s.max())
        )
    }
}

pub const MIB: f64 = 1024.0 * 1024.0;
pub const GIB: f64 = 1024.0 * MIB;

/// What berth must achieve on a row (judged on medians).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// No target: shown for context.
    None,
    /// At least this many times better than the reference.
    Times(f64),
    /// Better than the reference at all.
    Better,
    /// No more than this fraction worse than the reference.
    Within(f64),
    /// The figure itself (in the row's unit, raw) below this.
    Below(f64),
    /// The figure itself at most this.
    AtMost(f64),
    /// A time at most this many times the reference's time.
    TimeWithin(f64),
}

pub struct Row {
    pub workload: String,
    pub berth: Cell,
    pub reference: Cell,
    /// Name of the reference when it is not Distribution.
    pub reference_name: Option<String>,
    /// Shown instead of a reference figure when the reference has none by
    /// design (Distribution serves nothing while it collects garbage): the
    /// row then has no ratio and `reference` is not an error.
    pub reference_note: Option<String>,
    pub unit: Unit,
    pub target: Target,
}

impl Row {
    /// How many times better berth's median is than the reference's.
    pub fn ratio(&self) -> Option<f64> {
        if self.reference_note.is_some() {
            return None;
        }
        let (b, r) = (self.berth.as_ref().ok()?, self.reference.as_ref().ok()?);
        let (b, r) = (b.median(), r.median());
        if b <= 0.0 || r <= 0.0 {
            return None;
        }
        Some(if self.unit.higher_is_better() {
            b / r
        } else {
            r / b
        })
    }

    /// `Some(pass)` when the row has a target and both figures it needs.
    pub fn pass(&self) -> Option<bool> {
        let b = self.berth.as_ref().ok()?.median();
        match self.target {
            Target::None => None,
            Target::Times(x) => Some(self.ratio()? >= x),
            Target::Better => Some(self.ratio()? > 1.0),
            Target::Within(f) => Some(self.ratio()? >= 1.0 - f),
            Target::Below(v) => Some(b < v),
            Target::AtMost(v) => Some(b <= v),
            Target::TimeWithin(x) => {
                self.ratio()?;
                let r = self.reference.as_ref().ok()?.median();
                Some(b <= x * r)
            }
        }
    }

    pub fn errored(&self) -> bool {
        self.berth.is_err() || (self.reference_note.is_none() && self.reference.is_err())
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::None => "-".into(),
            Target::Times(x) => format!(">= {x}x"),
            Target::Better => "better".into(),
            Target::Within(f) => format!(">= {:.2}x", 1.0 - f),
            Target::Below(v) => format!("< {}", self.unit.format(v)),
            Target::AtMost(v) => format!("<= {}", self.unit.format(v)),
            Target::TimeWithin(x) => format!("time <= {x}x (>= {:.2}x)", 1.0 / x),
        }
    }

    /// How many runs each side had: one number when they agree.
    fn runs_text(&self) -> String {
        let b = self.berth.as_ref().ok().map(Stat::runs);
        let r = match &self.reference_note {
            Some(_) => None,
            None => self.reference.as_ref().ok().map(Stat::runs),
        };
        match (b, r) {
            (Some(b), Some(r)) if b != r => format!("{b}/{r}"),
            (Some(n), _) | (None, Some(n)) => n.to_string(),
            (None, None) => "-".into(),
        }
    }
}

fn cell(c: &Cell, unit: Unit, name: Option<&str>) -> String {
    match (c, name) {
        (Ok(s), None) => unit.format_stat(s),
        (Ok(s), Some(n)) => format!("{n}: {}", unit.format_stat(s)),
        (Err(e), _) => format!("ERROR: {e}"),
    }
}

/// What every cell means, printed under the table.
pub const FOOTER: &str =
    "Each figure is the median of its runs, with the range (min–max) when there \
were several; \"runs\" says how many (berth/reference when they differ).\n\
Ratios and results are computed on the medians; a ratio is how many times better berth is, \
whatever the unit.";

/// The table as Markdown-compatible text, columns padded to line up, and
/// the footer.
pub fn render(rows: &[Row]) -> String {
    let header = [
        "workload",
        "berth",
        "reference (Distribution unless named)",
        "runs",
        "ratio",
        "target",
        "result",
    ];
    let lines: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.workload.clone(),
                cell(&r.berth, r.unit, None),
                match &r.reference_note {
                    Some(note) => note.clone(),
                    None => cell(&r.reference, r.unit, r.reference_name.as_deref()),
                },
                r.runs_text(),
                r.ratio().map_or("-".into(), |x| format!("{x:.2}x")),
                r.target_text(),
                match (r.errored(), r.pass()) {
                    (true, _) => "ERROR".into(),
                    (false, Some(true)) => "pass".into(),
                    (false, Some(false)) => "FAIL".into(),
                    (false, None) => "-".into(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for l in &lines {
        for (w, c) in widths.iter_mut().zip(l) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut emit = |cells: &[String]| {
        out.push('|');
        for (c, w) in cells.iter().zip(widths) {
            let _ = write!(out, " {c:<w$} |");
        }
        out.push('\n');
    };
    emit(&header.map(String::from));
    emit(&widths.map(|w| "-".repeat(w)));
    for l in &lines {
        emit(l);
    }
    out.push('\n');
    out.push_str(FOOTER);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(vals: &[f64]) -> Cell {
        Stat::new(vals.iter().copied()).ok_or_else(|| "none".to_string())
    }

    fn row(b: Cell, r: Cell, unit: Unit, target: Target) -> Row {
        Row {
            workload: "w".into(),
            berth: b,
            reference: r,
            reference_name: None,
            reference_note: None,
            unit,
            target,
        }
    }

    #[test]
    fn ratios_favour_berth_whatever_the_unit() {
        let r = row(s(&[10.0]), s(&[2.0]), Unit::ReqPerSec, Target::Times(5.0));
        assert_eq!(r.ratio(), Some(5.0));
        assert_eq!(r.pass(), Some(true));
        let r = row(s(&[0.002]), s(&[0.001]), Unit::Millis, Target::Better);
        assert_eq!(r.ratio(), Some(0.5));
        assert_eq!(r.pass(), Some(false));
        let r = row(s(&[0.95]), s(&[1.0]), Unit::GibPerSec, Target::Within(0.1));
        assert_eq!(r.pass(), Some(true));
        let r = row(
            s(&[5.0 * MIB]),
            s(&[9.0]),
            Unit::Mib,
            Target::Below(20.0 * MIB),
        );
        assert_eq!(r.pass(), Some(true));
        let r = row(Err("boom".into()), s(&[1.0]), Unit::Mib, Target::Below(1.0));
        assert!(r.errored());
        assert_eq!(r.pass(), None);
    }

    #[test]
    fn ratio_and_result_are_on_medians() {
        // berth's best run (30) beats 0.9x the ceiling's median (20), its
        // median (10) does not: the median decides.
        let r = row(
            s(&[5.0, 10.0, 30.0]),
            s(&[19.0, 20.0, 21.0]),
            Unit::MibPerSec,
            Target::Times(0.9),
        );
        assert_eq!(r.ratio(), Some(0.5));
        assert_eq!(r.pass(), Some(false));
        // Even counts: the mean of the two middle runs (4 and 16 → 10).
        let r = row(
            s(&[1.0, 4.0, 16.0, 100.0]),
            s(&[10.0]),
            Unit::GibPerSec,
            Target::Times(1.0),
        );
        assert_eq!(r.ratio(), Some(1.0));
        assert_eq!(r.pass(), Some(true));
        // Lower is better: a time within 1.5x of the reference's.
        let mut r = row(
            s(&[1.4, 1.5, 9.0]),
            s(&[1.0, 1.0, 0.1]),
            Unit::Secs,
            Target::TimeWithin(1.5),
        );
        assert_eq!(r.pass(), Some(true));
        r.berth = s(&[1.6]);
        assert_eq!(r.pass(), Some(false));
        assert_eq!(r.target_text(), "time <= 1.5x (>= 0.67x)");
    }

    #[test]
    fn a_note_stands_for_a_reference_without_figures() {
        let mut r = row(s(&[0.002]), Err(String::new()), Unit::Millis, Target::None);
        assert!(r.errored());
        r.reference_note = Some("none: stopped".into());
        assert!(!r.errored());
        assert_eq!(r.ratio(), None);
        let t = render(&[r]);
        assert!(t.contains("none: stopped") && !t.contains("ERROR"));
        assert!(t.contains("2.00 ms"));
    }

    #[test]
    fn renders_median_range_and_runs() {
        let mut named = row(
            s(&[1850.0 * MIB, 1790.0 * MIB, 1900.0 * MIB]),
            s(&[2000.0 * MIB, 2100.0 * MIB]),
            Unit::MibPerSec,
            Target::Times(0.9),
        );
        named.reference_name = Some("SHA-256 ceiling, aws-lc-rs".into());
        let t = render(&[
            row(
                s(&[2.0 * GIB]),
                s(&[GIB]),
                Unit::GibPerSec,
                Target::Times(1.3),
            ),
            row(s(&[1.0]), Err("x".into()), Unit::ReqPerSec, Target::None),
            named,
        ]);
        let lines: Vec<&str> = t.lines().collect();
        // Header, rule, three rows, a blank line, the footer's two lines.
        assert_eq!(lines.len(), 8, "{t}");
        assert!(lines[..5]
            .iter()
            .all(|l| l.chars().count() == lines[0].chars().count()));
        let cells = |l: &str| -> Vec<String> { l.split('|').map(|c| c.trim().into()).collect() };
        let one = cells(lines[2]);
        assert_eq!(one[2], "2.00 GiB/s");
        assert_eq!(one[4], "1");
        assert_eq!(one[5], "2.00x");
        assert_eq!(one[7], "pass");
        assert!(lines[3].contains("ERROR: x"));
        let three = cells(lines[4]);
        assert_eq!(three[2], "1850 MiB/s (1790–1900)");
        assert_eq!(
            three[3],
            "SHA-256 ceiling, aws-lc-rs: 2050 MiB/s (2000–2100)"
        );
        assert_eq!(three[4], "3/2");
        assert_eq!(three[5], "0.90x");
        assert_eq!(three[6], ">= 0.9x");
        assert_eq!(three[7], "pass");
        assert!(t.contains("computed on the medians"));
    }
}
