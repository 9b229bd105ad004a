//! Repeated measurements: every figure of the report keeps all of its
//! samples (one per repeat), is shown as the median with the min–max range,
//! and is compared on the median.
//!
//! Why the median and not the best: on a shared machine one lucky run says
//! little about what a server does; the median is what it does typically,
//! and the range shows how far the runs spread (a wide range means the
//! figure, and any ratio built on it, is not to be trusted much).
//!
//! [`Series`] collects one source's samples (or the first error),
//! [`Samples`] a pair of them (berth and its reference), and [`Stat`] is the
//! finished, never empty, set of samples a table cell shows.

use anyhow::Result;

use crate::bench::{progress_line, short};

/// The samples of one figure: never empty, kept sorted.
#[derive(Debug, Clone, PartialEq)]
pub struct Stat {
    sorted: Vec<f64>,
}

impl Stat {
    /// The samples, or `None` when there are none (or a value is not a
    /// number: a figure computed from nothing is no figure).
    pub fn new(samples: impl IntoIterator<Item = f64>) -> Option<Stat> {
        let mut sorted: Vec<f64> = samples.into_iter().collect();
        if sorted.is_empty() || sorted.iter().any(|v| v.is_nan()) {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        Some(Stat { sorted })
    }

    /// A figure measured once (a set-up, a garbage collection).
    pub fn one(v: f64) -> Stat {
        Stat { sorted: vec![v] }
    }

    /// The middle sample; with an even count, the mean of the two middle ones.
    pub fn median(&self) -> f64 {
        let n = self.sorted.len();
        if n.is_multiple_of(2) {
            (self.sorted[n / 2 - 1] + self.sorted[n / 2]) / 2.0
        } else {
            self.sorted[n / 2]
        }
    }

    pub fn min(&self) -> f64 {
        self.sorted[0]
    }

    pub fn max(&self) -> f64 {
        self.sorted[self.sorted.len() - 1]
    }

    /// How many runs the figure is made of.
    pub fn runs(&self) -> usize {
        self.sorted.len()
    }
}

/// One table cell: the samples, or why there are none.
pub type Cell = Result<Stat, String>;

/// The samples of one source as they come in, or the first error: a
/// source that failed once has no figure (a figure of only the runs that
/// worked would hide the failure).
#[derive(Debug, Default)]
pub struct Series {
    vals: Vec<f64>,
    err: Option<String>,
}

impl Series {
    pub fn failed(&self) -> bool {
        self.err.is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.vals.is_empty()
    }

    /// Keep a sample, or the error (reported on stderr as it happens).
    pub fn record(&mut self, r: Result<f64>) {
        match r {
            Ok(v) => self.vals.push(v),
            Err(e) => {
                progress_line(&format!("  error: {e:#}"));
                self.err.get_or_insert_with(|| short(&format!("{e:#}")));
            }
        }
    }

    /// Mark the source failed with a message already shortened for a cell.
    pub fn fail(&mut self, msg: &str) {
        self.err.get_or_insert_with(|| short(msg));
    }

    pub fn cell(&self) -> Cell {
        if let Some(e) = &self.err {
            return Err(e.clone());
        }
        Stat::new(self.vals.iter().copied()).ok_or_else(|| "no sample".to_string())
    }
}

/// berth's samples (0) and its reference's (1) for one figure.
#[derive(Debug, Default)]
pub struct Samples(pub [Series; 2]);

impl Samples {
    pub fn failed(&self, i: usize) -> bool {
        self.0[i].failed()
    }

    pub fn record(&mut self, i: usize, r: Result<f64>) {
        self.0[i].record(r);
    }

    pub fn cell(&self, i: usize) -> Cell {
        self.0[i].cell()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = Stat::new([5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.min(), s.median(), s.max(), s.runs()), (1.0, 3.0, 5.0, 3));
        let s = Stat::new([4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.min(), s.median(), s.max()), (1.0, 2.5, 4.0));
        // One run (--quick): min = median = max.
        let s = Stat::one(7.0);
        assert_eq!((s.min(), s.median(), s.max(), s.runs()), (7.0, 7.0, 7.0, 1));
        // An outlier moves the mean, not the median.
        let s = Stat::new([10.0, 11.0, 12.0, 13.0, 1000.0]).unwrap();
        assert_eq!(s.median(), 12.0);
        assert_eq!(s.max(), 1000.0);
    }

    #[test]
    fn no_samples_no_figure() {
        assert_eq!(Stat::new([]), None);
        assert_eq!(Stat::new([1.0, f64::NAN]), None);
        let s = Series::default();
        assert!(s.is_empty() && !s.failed());
        assert_eq!(s.cell(), Err("no sample".into()));
    }

    #[test]
    fn one_error_fails_the_series() {
        let mut s = Samples::default();
        s.record(0, Ok(2.0));
        s.record(0, Err(anyhow::anyhow!("connection refused\nmore")));
        s.record(0, Ok(3.0));
        s.record(1, Ok(1.0));
        s.record(1, Ok(3.0));
        assert!(s.failed(0));
        assert_eq!(s.cell(0), Err("connection refused".into()));
        assert_eq!(s.cell(1).map(|c| c.median()), Ok(2.0));
        let mut t = Series::default();
        t.fail("set-up failed");
        t.record(Err(anyhow::anyhow!("later")));
        assert_eq!(t.cell(), Err("set-up failed".into()));
    }
}
