//! Progress: a bar with bytes and rate when stderr is a terminal, otherwise one log line when
//! the job ends (cron and Kubernetes logs want lines, not carriage returns).

use cairn_repo::pipeline::Progress;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

#[derive(Debug)]
pub struct Reporter {
    what: &'static str,
    bar: Option<ProgressBar>,
    done: AtomicU64,
    start: Instant,
}

impl Reporter {
    pub fn new(what: &'static str, quiet: bool) -> Reporter {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(0);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_message(what);
            b
        });
        Reporter {
            what,
            bar,
            done: AtomicU64::new(0),
            start: Instant::now(),
        }
    }
}

impl Progress for Reporter {
    fn set_total(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.set_length(bytes);
        }
    }

    fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let bytes = self.done.load(Ordering::Relaxed);
        tracing::info!(
            "{}: {} in {:.1}s ({:.1} MB/s)",
            self.what,
            crate::info::human(bytes),
            secs,
            bytes as f64 / 1e6 / secs
        );
    }
}
