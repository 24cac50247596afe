//! Progress. On a terminal: a bar that appears once the total is known, with the step, bytes
//! in the binary units the final log line uses, the rate, and an ETA only once there is enough
//! behind it to mean something; log lines are written above it (`above_bar`, used by the
//! console logger). An unfinished bar (Ctrl-C, an error) ends with a line saying where it
//! stopped. Elsewhere (cron, Kubernetes logs want lines, not carriage returns): one log line
//! when the step ends.

use cairn_repo::pipeline::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The bar on screen, if any: log lines are written above it.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Run `write` (a log line to stderr) with the bar, if one is on screen, lifted out of its way.
pub(crate) fn above_bar<T>(write: impl FnOnce() -> T) -> T {
    let bar = ACTIVE.lock().ok().and_then(|a| a.clone());
    match bar {
        Some(b) => b.suspend(write),
        None => write(),
    }
}

fn set_active(bar: Option<ProgressBar>) {
    if let Ok(mut a) = ACTIVE.lock() {
        *a = bar;
    }
}

/// The ETA to show: none in the first seconds or the first percent, when the rate is still
/// the ramp-up's (an ETA of hours for a job of seconds), nor when nothing has moved.
fn eta_text(elapsed: Duration, done: u64, total: u64) -> Option<String> {
    if total == 0 || done == 0 || elapsed < Duration::from_secs(3) || done * 100 < total {
        return None;
    }
    let rate = done as f64 / elapsed.as_secs_f64();
    let secs = (total.saturating_sub(done) as f64 / rate).round() as u64;
    Some(match secs {
        0..60 => format!("eta {secs}s"),
        60..3600 => format!("eta {}m{:02}s", secs / 60, secs % 60),
        _ => format!("eta {}h{:02}m", secs / 3600, (secs % 3600) / 60),
    })
}

/// The rate as the final log line gives it: binary units per second.
fn rate_text(bytes: u64, secs: f64) -> String {
    format!(
        "{}/s",
        crate::info::human((bytes as f64 / secs.max(1e-3)) as u64)
    )
}

#[derive(Debug)]
pub struct Reporter {
    what: &'static str,
    bar: Option<ProgressBar>,
    done: AtomicU64,
    total: AtomicU64,
    finished: AtomicBool,
    start: Instant,
    /// This command's status file, which `info` reads for its progress.
    status: Option<std::sync::Arc<crate::status_file::StatusFile>>,
}

impl Reporter {
    /// Also record progress in `status` (the command's status file).
    pub fn with_status(
        mut self,
        status: Option<std::sync::Arc<crate::status_file::StatusFile>>,
    ) -> Reporter {
        self.status = status;
        self
    }

    pub fn new(what: &'static str, quiet: bool) -> Reporter {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            // Hidden until the total is known: a bar of 0 bytes means nothing.
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {human_pos}/{human_len} {rate} {eta_shown}",
            ) {
                let style = style
                    .with_key(
                        "human_pos",
                        |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                            let _ = w.write_str(&crate::info::human(s.pos()));
                        },
                    )
                    .with_key(
                        "human_len",
                        |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                            let _ = w.write_str(&crate::info::human(s.len().unwrap_or(0)));
                        },
                    )
                    .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = w.write_str(&rate_text(s.pos(), s.elapsed().as_secs_f64()));
                    })
                    .with_key(
                        "eta_shown",
                        |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                            if let Some(eta) = eta_text(s.elapsed(), s.pos(), s.len().unwrap_or(0))
                            {
                                let _ = w.write_str(&eta);
                            }
                        },
                    );
                b.set_style(style.progress_chars("=> "));
            }
            b.set_message(what);
            b
        });
        Reporter {
            what,
            bar,
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            start: Instant::now(),
            status: None,
        }
    }
}

impl Progress for Reporter {
    fn set_total(&self, bytes: u64) {
        self.total.store(bytes, Ordering::Relaxed);
        if let Some(s) = &self.status {
            s.update(bytes, self.done.load(Ordering::Relaxed));
        }
        if let Some(b) = &self.bar {
            b.set_length(bytes);
            if bytes > 0 && b.is_hidden() {
                b.set_draw_target(ProgressDrawTarget::stderr());
                set_active(Some(b.clone()));
            }
        }
    }

    fn advance(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if let Some(s) = &self.status {
            s.update(self.total.load(Ordering::Relaxed), done);
        }
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
    }

    fn finish(&self) {
        self.finished.store(true, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            set_active(None);
            b.finish_and_clear();
        }
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let bytes = self.done.load(Ordering::Relaxed);
        tracing::info!(
            "{}: {} in {:.1}s ({})",
            self.what,
            crate::info::human(bytes),
            secs,
            rate_text(bytes, secs)
        );
    }
}

impl Drop for Reporter {
    /// A step that did not finish (Ctrl-C, an error): the bar gives way to a line saying how
    /// far it got, above the error that follows.
    fn drop(&mut self) {
        if self.finished.load(Ordering::Relaxed) {
            return;
        }
        if let Some(b) = &self.bar
            && !b.is_hidden()
        {
            set_active(None);
            b.finish_and_clear();
            let total = self.total.load(Ordering::Relaxed);
            eprintln!(
                "{}: stopped after {} of {}",
                self.what,
                crate::info::human(self.done.load(Ordering::Relaxed)),
                crate::info::human(total)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_eta_until_it_means_something() {
        let s = Duration::from_secs;
        assert_eq!(eta_text(s(1), 50, 100), None, "the first seconds");
        assert_eq!(eta_text(s(10), 0, 100), None, "nothing moved");
        assert_eq!(eta_text(s(10), 5, 1000), None, "under one percent");
        assert_eq!(eta_text(s(10), 50, 0), None, "no total");
        assert_eq!(eta_text(s(10), 50, 100).as_deref(), Some("eta 10s"));
        assert_eq!(eta_text(s(60), 10, 100).as_deref(), Some("eta 9m00s"));
        assert_eq!(eta_text(s(3600), 10, 100).as_deref(), Some("eta 9h00m"));
    }

    #[test]
    fn the_rate_uses_the_final_lines_units() {
        assert_eq!(
            rate_text(3 << 20, 1.0),
            format!("{}/s", crate::info::human(3 << 20))
        );
    }
}
