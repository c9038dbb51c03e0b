//! Where `spool` writes: results to stdout, messages to stderr.
//!
//! `println!` panics when a write fails, and a write to a pipe whose reader
//! has gone (`spool topic list | head -1`) always fails. So results go
//! through [`outln!`] and [`out!`], which return a [`StdoutError`] instead;
//! commands pass it up with `?`, and `main` ends a run whose stdout was
//! closed quietly with status 0: a reader that stopped reading is not a
//! failure of ours. Any other stdout error (a full disk under `>`) is
//! reported like every error. Messages go through [`errln!`], which drops
//! what it cannot write: with stderr closed there is no one left to tell.
//!
//! `main.rs` denies the `print!` family in this crate, so no command can
//! bring the panic back.

use std::io::{self, BufWriter, Stdout, Write};

/// A write to stdout failed.
#[derive(Debug)]
pub struct StdoutError(pub io::Error);

impl StdoutError {
    /// True when the reader of stdout went away (a broken pipe).
    pub fn is_closed(&self) -> bool {
        self.0.kind() == io::ErrorKind::BrokenPipe
    }
}

impl std::fmt::Display for StdoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot write to stdout: {}", self.0)
    }
}

impl std::error::Error for StdoutError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Writes one line to stdout: `outln!("{x}")?`.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        ::std::writeln!(::std::io::stdout().lock(), $($arg)*).map_err($crate::output::StdoutError)
    }};
}

/// Writes to stdout without adding a line break: `out!("{table}")?`.
macro_rules! out {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let mut stdout = ::std::io::stdout().lock();
        ::std::write!(stdout, $($arg)*)
            .and_then(|()| stdout.flush())
            .map_err($crate::output::StdoutError)
    }};
}

/// Writes one line to stderr, dropping it if stderr cannot be written.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr().lock(), $($arg)*);
    }};
}

pub(crate) use {errln, out, outln};

/// Stdout with a buffer of its own, for commands that print records by the
/// thousand. It holds `Stdout`, not a lock of it, so that a command using
/// it can run as a task on any of the runtime's threads; the lock is taken
/// once per full buffer.
#[derive(Debug)]
pub struct RecordsOut {
    writer: BufWriter<Stdout>,
}

impl RecordsOut {
    pub fn new(capacity_bytes: usize) -> Self {
        RecordsOut {
            writer: BufWriter::with_capacity(capacity_bytes, io::stdout()),
        }
    }

    /// Runs `write` against the buffered stdout.
    pub fn write(
        &mut self,
        write: impl FnOnce(&mut BufWriter<Stdout>) -> io::Result<()>,
    ) -> Result<(), StdoutError> {
        write(&mut self.writer).map_err(StdoutError)
    }

    pub fn flush(&mut self) -> Result<(), StdoutError> {
        self.writer.flush().map_err(StdoutError)
    }
}

/// The stdout error in `error`'s chain, if a write to stdout failed.
pub fn stdout_error(error: &anyhow::Error) -> Option<&StdoutError> {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<StdoutError>())
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    #[test]
    fn only_a_broken_stdout_counts_as_a_closed_reader() {
        let closed: anyhow::Result<()> =
            Err(StdoutError(io::ErrorKind::BrokenPipe.into())).context("printing the table");
        let closed = closed.unwrap_err();
        assert!(stdout_error(&closed).is_some_and(StdoutError::is_closed));

        let full: anyhow::Error = StdoutError(io::Error::from_raw_os_error(28)).into();
        assert!(stdout_error(&full).is_some_and(|e| !e.is_closed()));
        assert!(full.to_string().starts_with("cannot write to stdout: "), "{full}");

        // A connection that broke is an error to report, not a closed stdout.
        let socket: anyhow::Error = io::Error::from(io::ErrorKind::BrokenPipe).into();
        assert!(stdout_error(&socket).is_none());
    }
}
