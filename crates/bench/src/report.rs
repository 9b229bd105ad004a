//! The result table: one row per figure, berth beside the reference server
//! (Distribution, or nginx for the file-serving ceiling), the ratio, the
//! target and whether berth meets it. Ratios are always "times better for
//! berth", so a ratio above 1 favours berth whatever the unit.

use std::fmt::Write as _;

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
}

impl Unit {
    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Unit::MibPerSec | Unit::GibPerSec | Unit::ReqPerSec | Unit::ReqPerCpuSec
        )
    }

    pub fn format(self, v: f64) -> String {
        match self {
            Unit::MibPerSec => format!("{:.0} MiB/s", v / MIB),
            Unit::GibPerSec => format!("{:.2} GiB/s", v / GIB),
            Unit::ReqPerSec if v >= 100.0 => format!("{v:.0} req/s"),
            Unit::ReqPerSec => format!("{v:.1} req/s"),
            Unit::ReqPerCpuSec => format!("{v:.0} req/CPU-s"),
            Unit::Millis => format!("{:.2} ms", v * 1e3),
            Unit::Secs => format!("{v:.2} s"),
            Unit::Mib => format!("{:.1} MiB", v / MIB),
        }
    }
}

pub const MIB: f64 = 1024.0 * 1024.0;
pub const GIB: f64 = 1024.0 * MIB;

/// What berth must achieve on a row.
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
}

/// One measured figure: a value (best of the repeats) or why there is none.
pub type Cell = Result<f64, String>;

pub struct Row {
    pub workload: String,
    pub berth: Cell,
    pub reference: Cell,
    /// Name of the reference when it is not Distribution.
    pub reference_name: Option<&'static str>,
    /// Shown instead of a reference figure when the reference has none by
    /// design (Distribution serves nothing while it collects garbage): the
    /// row then has no ratio and `reference` is not an error.
    pub reference_note: Option<String>,
    pub unit: Unit,
    pub target: Target,
}

impl Row {
    /// How many times better berth is than the reference.
    pub fn ratio(&self) -> Option<f64> {
        if self.reference_note.is_some() {
            return None;
        }
        let (b, r) = (self.berth.as_ref().ok()?, self.reference.as_ref().ok()?);
        if *b <= 0.0 || *r <= 0.0 {
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
        let b = *self.berth.as_ref().ok()?;
        match self.target {
            Target::None => None,
            Target::Times(x) => Some(self.ratio()? >= x),
            Target::Better => Some(self.ratio()? > 1.0),
            Target::Within(f) => Some(self.ratio()? >= 1.0 - f),
            Target::Below(v) => Some(b < v),
            Target::AtMost(v) => Some(b <= v),
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
        }
    }
}

fn cell(c: &Cell, unit: Unit, name: Option<&str>) -> String {
    match (c, name) {
        (Ok(v), None) => unit.format(*v),
        (Ok(v), Some(n)) => format!("{n}: {}", unit.format(*v)),
        (Err(e), _) => format!("ERROR: {e}"),
    }
}

/// The table as Markdown-compatible text, columns padded to line up.
pub fn render(rows: &[Row]) -> String {
    let header = [
        "workload",
        "berth",
        "distribution",
        "ratio",
        "target",
        "result",
    ];
    let lines: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.workload.clone(),
                cell(&r.berth, r.unit, None),
                match &r.reference_note {
                    Some(note) => note.clone(),
                    None => cell(&r.reference, r.unit, r.reference_name),
                },
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let r = row(Ok(10.0), Ok(2.0), Unit::ReqPerSec, Target::Times(5.0));
        assert_eq!(r.ratio(), Some(5.0));
        assert_eq!(r.pass(), Some(true));
        let r = row(Ok(0.002), Ok(0.001), Unit::Millis, Target::Better);
        assert_eq!(r.ratio(), Some(0.5));
        assert_eq!(r.pass(), Some(false));
        let r = row(Ok(0.95), Ok(1.0), Unit::GibPerSec, Target::Within(0.1));
        assert_eq!(r.pass(), Some(true));
        let r = row(Ok(5.0 * MIB), Ok(9.0), Unit::Mib, Target::Below(20.0 * MIB));
        assert_eq!(r.pass(), Some(true));
        let r = row(Err("boom".into()), Ok(1.0), Unit::Mib, Target::Below(1.0));
        assert!(r.errored());
        assert_eq!(r.pass(), None);
    }

    #[test]
    fn a_note_stands_for_a_reference_without_figures() {
        let mut r = row(Ok(0.002), Err(String::new()), Unit::Millis, Target::None);
        assert!(r.errored());
        r.reference_note = Some("none: stopped".into());
        assert!(!r.errored());
        assert_eq!(r.ratio(), None);
        let t = render(&[r]);
        assert!(t.contains("none: stopped") && !t.contains("ERROR"));
        assert!(t.contains("2.00 ms"));
    }

    #[test]
    fn renders_aligned_rows() {
        let t = render(&[
            row(Ok(2.0 * GIB), Ok(GIB), Unit::GibPerSec, Target::Times(1.3)),
            row(Ok(1.0), Err("x".into()), Unit::ReqPerSec, Target::None),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|l| l.len() == lines[0].len()));
        assert!(lines[2].contains("2.00 GiB/s") && lines[2].contains("2.00x"));
        assert!(lines[2].contains("pass"));
        assert!(lines[3].contains("ERROR: x"));
    }
}
