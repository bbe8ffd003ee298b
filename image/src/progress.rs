//! How a long build reports its steps. The library only calls [`Progress`]; the CLI decides
//! how to show it (a spinner on a terminal, plain lines otherwise).

use std::time::{Duration, Instant};

/// A step that has begun.
#[derive(Debug)]
pub struct Step {
    pub what: String,
    pub started: Instant,
}

impl Step {
    pub fn new(what: &str) -> Self {
        Self {
            what: what.to_owned(),
            started: Instant::now(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Receives the steps of a build, in order (steps do not overlap).
pub trait Progress {
    /// A step starts; `what` says what it does ("compressing the initramfs").
    fn begin(&self, what: &str) -> Step;
    /// The step ended; `detail` is its result in a few words ("9.8 MiB").
    fn finish(&self, step: Step, detail: &str);
}

/// Shows nothing (tests, library callers that report themselves).
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Progress for Quiet {
    fn begin(&self, what: &str) -> Step {
        Step::new(what)
    }
    fn finish(&self, _step: Step, _detail: &str) {}
}

/// One plain line per finished step on stderr: `what: detail (1.2 s)`. For logs and
/// terminals that are not TTYs.
#[derive(Debug, Default, Clone, Copy)]
pub struct Lines;

impl Progress for Lines {
    fn begin(&self, what: &str) -> Step {
        Step::new(what)
    }
    fn finish(&self, step: Step, detail: &str) {
        eprintln!(
            "{}: {detail} ({:.1} s)",
            step.what,
            step.elapsed().as_secs_f64()
        );
    }
}
