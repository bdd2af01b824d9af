//! A time budget for a sweep (`attn bench --max-seconds`), for machines slower than the sweep was sized
//! for: the bench ends near the budget with the smallest shapes measured, instead of running for hours.
//!
//! The shapes run cheapest first ([`Sweep::validate`](super::sweep::Sweep::validate)). Before a record
//! runs, the time of one launch is predicted from the first launch of the last record of the same kernel
//! and dtype (and, for a decode step, the same split-KV choice: split and unsplit launches of one shape
//! differ by an order of magnitude on a GPU), scaled by the ratio of FLOPs; a record whose check and one
//! timed run are predicted not to fit in what is left of the budget is skipped, with the prediction as
//! its reason. The first record of each kernel and dtype (and split choice) has nothing to predict from:
//! it always runs, so every kernel gets a measurement even when that one record overruns the budget.
//! Within a record, the first (checking) launch is timed on the wall clock and the warm-up and timed runs
//! are cut to what fits in the time left, keeping at least one timed run. The time left for them keeps
//! room for the first records still to come ([`Budget::expect`]): a check and one timed run each,
//! predicted at the time of this launch (first records run the cheapest shapes: the same shape, or one
//! close to it), so that the sweep as a whole ends near its budget.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::results::SplitKv;
use super::sweep::Case;
use crate::cli::runner::Runner;
use crate::DType;

/// Longest time budget (`--max-seconds`): a week.
pub const MAX_SECONDS: f64 = 7.0 * 24.0 * 3600.0;
/// The time budget of `--quick` unless `--max-seconds` says otherwise: the minute `--quick` promises.
pub const QUICK_SECONDS: f64 = 60.0;

/// One timed launch, the source of predictions for its kernel and dtype.
#[derive(Debug, Clone)]
struct Launch {
    /// The shape in words ([`Case::words`]).
    shape: String,
    flops: f64,
    seconds: f64,
}

/// What predictions are kept per: the kernel, the dtype and a decode step's split-KV choice.
type Key = (Runner, DType, Option<SplitKv>);

/// The budget of one sweep and the launches measured so far.
#[derive(Debug)]
pub struct Budget {
    seconds: Option<f64>,
    started: Instant,
    launches: HashMap<Key, Launch>,
    /// Kernels (with dtype and split choice) expected to run whose first record has not run yet.
    pending: HashSet<Key>,
}

/// Untimed and timed runs one record makes after its checking launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runs {
    pub warmup: usize,
    pub timed: usize,
}

impl Runs {
    /// The runs that fit in `left` seconds when one launch takes `launch` seconds: `warmup` and `iters` when
    /// all fit; otherwise the timed runs are cut first, down to one, then the warm-up runs.
    pub fn fitting(warmup: usize, iters: usize, launch: f64, left: f64) -> Runs {
        let asked = Runs {
            warmup,
            timed: iters,
        };
        if launch <= 0.0 || (warmup + iters) as f64 * launch <= left {
            return asked;
        }
        // Both are finite and positive here; a negative `left` fits nothing.
        let fit = (left.max(0.0) / launch).floor() as usize;
        let timed = iters.min(fit.saturating_sub(warmup).max(1));
        Runs {
            warmup: warmup.min(fit.saturating_sub(timed)),
            timed,
        }
    }

    /// What the budget cut, in words, or `None` when the runs are those asked for.
    pub fn note(&self, warmup: usize, iters: usize) -> Option<String> {
        (self.warmup < warmup || self.timed < iters).then(|| {
            format!(
                "runs cut to fit the time budget: {} of {warmup} warm-up, at most {} of {iters} timed",
                self.warmup, self.timed
            )
        })
    }
}

impl Budget {
    /// A budget of `seconds` (none: unlimited), counted from now.
    pub fn new(seconds: Option<f64>) -> Budget {
        Budget {
            seconds,
            started: Instant::now(),
            launches: HashMap::new(),
            pending: HashSet::new(),
        }
    }

    /// Says that `kernel` will run `case`: until its kernel (with the dtype and split choice) has run a
    /// first record, [`Budget::left_for_runs`] keeps room for that record.
    pub fn expect(&mut self, kernel: Runner, case: &Case) {
        let key = (kernel, case.dtype, case.split());
        if !self.launches.contains_key(&key) {
            self.pending.insert(key);
        }
    }

    /// Seconds left for the warm-up and timed runs of a record whose launch took `seconds`: what is
    /// left, less a check and one timed run at that time for each expected kernel whose first record has
    /// not run yet.
    pub fn left_for_runs(&self, seconds: f64) -> f64 {
        self.left() - self.pending.len() as f64 * 2.0 * seconds.max(0.0)
    }

    /// Seconds since the budget started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Seconds left (negative once overrun; infinite without a budget).
    pub fn left(&self) -> f64 {
        self.seconds
            .map_or(f64::INFINITY, |seconds| seconds - self.elapsed())
    }

    /// Keeps the first launch of `kernel` on `case`, which took `seconds`, as the source of its
    /// predictions.
    pub fn observe(&mut self, kernel: Runner, case: &Case, seconds: f64) {
        let key = (kernel, case.dtype, case.split());
        self.pending.remove(&key);
        self.launches.insert(
            key,
            Launch {
                shape: case.words(),
                flops: case.work_flops(kernel),
                seconds,
            },
        );
    }

    /// The launch `kernel` on `case` is predicted from: the last measured one of the kernel in the dtype
    /// (with the same split-KV choice).
    fn source(&self, kernel: Runner, case: &Case) -> Option<&Launch> {
        self.launches
            .get(&(kernel, case.dtype, case.split()))
            .filter(|launch| launch.flops > 0.0)
    }

    /// Predicted seconds of one launch of `kernel` on `case`, when the kernel has run in this dtype.
    pub fn predict(&self, kernel: Runner, case: &Case) -> Option<f64> {
        self.source(kernel, case)
            .map(|launch| launch.seconds * case.work_flops(kernel) / launch.flops)
    }

    /// Why `kernel` on `case` is skipped when `left` seconds are left, or `None` to run it.
    pub fn skip(&self, kernel: Runner, case: &Case, left: f64) -> Option<String> {
        let budget = self.seconds?;
        let launch = self.source(kernel, case)?;
        let one = launch.seconds * case.work_flops(kernel) / launch.flops;
        // The least a record does: the checking launch and one timed run.
        let least = 2.0 * one;
        if least <= left {
            return None;
        }
        let from = format!(
            "scaled by FLOPs from {} at {}",
            duration(launch.seconds),
            launch.shape
        );
        Some(if left > 0.0 {
            format!(
                "over the time budget: a check and one timed run predicted at {} ({from}), {} left of \
                 --max-seconds {budget}",
                duration(least),
                duration(left)
            )
        } else {
            format!(
                "over the time budget: --max-seconds {budget} spent {} ago (one launch predicted at {}, \
                 {from})",
                duration(-left),
                duration(one)
            )
        })
    }
}

/// Seconds in words with a unit that keeps about two significant digits: `1.5 s`, `20 ms`, `3.1 us`.
fn duration(seconds: f64) -> String {
    let (value, unit) = if seconds >= 1.0 {
        (seconds, "s")
    } else if seconds >= 1e-3 {
        (seconds * 1e3, "ms")
    } else {
        (seconds * 1e6, "us")
    };
    if value >= 10.0 {
        format!("{value:.0} {unit}")
    } else {
        format!("{value:.1} {unit}")
    }
}
