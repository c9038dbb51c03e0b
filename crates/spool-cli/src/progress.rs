//! A one-line progress report on stderr, redrawn with `\r`, shown only when
//! stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::output::errln;
use crate::units::group_thousands;

const REDRAW_INTERVAL: Duration = Duration::from_millis(200);

/// Progress towards a known number of records.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    /// stdout is the same terminal: erase the line before records are
    /// written so that they do not mix with it.
    shares_terminal: bool,
    total_records: u64,
    records: u64,
    bytes: u64,
    started: Instant,
    last_drawn: Option<Instant>,
    shown: bool,
}

impl Progress {
    pub fn new(total_records: u64) -> Self {
        let enabled = std::io::stderr().is_terminal();
        Progress {
            enabled,
            shares_terminal: enabled && std::io::stdout().is_terminal(),
            total_records,
            records: 0,
            bytes: 0,
            started: Instant::now(),
            last_drawn: None,
            shown: false,
        }
    }

    /// Call before writing records to stdout.
    pub fn before_output(&mut self) {
        if self.shares_terminal && self.shown {
            self.erase();
        }
    }

    /// Counts records and bytes done; redraws at most five times a second.
    pub fn advance(&mut self, records: u64, bytes: u64) {
        self.records += records;
        self.bytes += bytes;
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self.last_drawn.is_some_and(|last| now - last < REDRAW_INTERVAL) {
            return;
        }
        self.last_drawn = Some(now);
        let line = render_line(
            self.records,
            self.total_records,
            self.bytes,
            self.started.elapsed(),
        );
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[2K{line}");
        let _ = stderr.flush();
        self.shown = true;
    }

    fn erase(&mut self) {
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[2K");
        let _ = stderr.flush();
        self.shown = false;
    }

    /// Replaces the progress line by a final summary (terminal only).
    pub fn finish(mut self, verb: &str) {
        if !self.enabled {
            return;
        }
        if self.shown {
            self.erase();
        }
        let elapsed = self.started.elapsed();
        errln!(
            "{verb} {} records ({:.1} MB) in {:.2}s, {:.1} MB/s",
            group_thousands(self.records),
            self.bytes as f64 / 1e6,
            elapsed.as_secs_f64(),
            self.bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9),
        );
    }
}

/// `1,200,000 / 5,000,000 records  24%  85.3 MB/s  ETA 0:41`
fn render_line(records: u64, total: u64, bytes: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let rate = records as f64 / seconds;
    let mb_per_second = bytes as f64 / 1e6 / seconds;
    let percent = if total == 0 {
        100.0
    } else {
        (records as f64 * 100.0 / total as f64).min(100.0)
    };
    let eta = if rate > 0.0 && total > records {
        format_eta(Duration::from_secs_f64((total - records) as f64 / rate))
    } else {
        "-".into()
    };
    format!(
        "{} / {} records  {percent:.0}%  {mb_per_second:.1} MB/s  ETA {eta}",
        group_thousands(records),
        group_thousands(total)
    )
}

fn format_eta(eta: Duration) -> String {
    let seconds = eta.as_secs();
    if seconds >= 3600 {
        format!(
            "{}:{:02}:{:02}",
            seconds / 3600,
            seconds % 3600 / 60,
            seconds % 60
        )
    } else {
        format!("{}:{:02}", seconds / 60, seconds % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_count_rate_and_eta() {
        let line = render_line(1_000_000, 4_000_000, 100_000_000, Duration::from_secs(2));
        assert_eq!(line, "1,000,000 / 4,000,000 records  25%  50.0 MB/s  ETA 0:06");
        let done = render_line(10, 10, 1000, Duration::from_secs(1));
        assert!(done.ends_with("ETA -"), "{done}");
        assert_eq!(format_eta(Duration::from_secs(3725)), "1:02:05");
    }
}
