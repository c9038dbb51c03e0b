//! The terminal of `spool top`: raw mode (keys arrive one by one, without
//! Enter and without echo), the alternate screen, and the promise to put
//! both back on every way out: a normal return, an error, and a panic.
//!
//! Raw mode is set with `tcsetattr` through rustix's safe termios calls;
//! the screen is switched with the xterm escape sequences every terminal
//! emulator in use understands (`ESC [ ? 1049 h/l`, and `ESC [ ? 25 l/h`
//! for the cursor). That is all a refreshing view needs, so no terminal
//! library is pulled in.

use std::io::{self, Read, Write};
use std::sync::Mutex;

use rustix::termios::{self, OptionalActions, Termios};

/// The settings to put back, while the terminal is raw. Global so the
/// panic hook can reach it.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

const ENTER_ALTERNATE_SCREEN: &str = "\x1b[?1049h\x1b[?25l";
const LEAVE_ALTERNATE_SCREEN: &str = "\x1b[?25h\x1b[?1049l";

/// Raw mode and the alternate screen until dropped.
#[derive(Debug)]
pub struct RawTerminal {
    _private: (),
}

impl RawTerminal {
    /// Switches stdin's terminal to raw mode and stdout to the alternate
    /// screen. Fails, changing nothing, when stdin is not a terminal.
    pub fn enter() -> io::Result<RawTerminal> {
        let stdin = io::stdin();
        let original = termios::tcgetattr(&stdin)?;
        let mut raw = original.clone();
        raw.make_raw();
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw)?;
        *SAVED.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(original);
        install_panic_hook();
        let mut stdout = io::stdout().lock();
        stdout.write_all(ENTER_ALTERNATE_SCREEN.as_bytes())?;
        stdout.flush()?;
        Ok(RawTerminal { _private: () })
    }

    /// Rows and columns of the terminal, if it tells.
    pub fn size() -> Option<(usize, usize)> {
        let size = termios::tcgetwinsize(io::stdout()).ok()?;
        (size.ws_row > 0 && size.ws_col > 0).then(|| (usize::from(size.ws_row), usize::from(size.ws_col)))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        restore();
    }
}

/// Puts the terminal back as it was, once; later calls do nothing.
fn restore() {
    let saved = SAVED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    if let Some(original) = saved {
        let _ = termios::tcsetattr(io::stdin(), OptionalActions::Now, &original);
        let mut stdout = io::stdout().lock();
        let _ = stdout.write_all(LEAVE_ALTERNATE_SCREEN.as_bytes());
        let _ = stdout.flush();
    }
}

/// A panic restores the terminal before its message is printed, so the
/// message lands on the normal screen and the shell gets its echo back.
fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// Reads stdin byte by byte on a thread of its own and hands each byte to
/// `keys`; ends at end of input or when the receiver is gone. The thread
/// may stay blocked in a read after the view ends: the process exits
/// without waiting for it.
pub fn spawn_key_reader(keys: tokio::sync::mpsc::UnboundedSender<u8>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("spool-top-keys".into())
        .spawn(move || {
            let mut stdin = io::stdin().lock();
            let mut byte = [0u8; 1];
            while let Ok(1) = stdin.read(&mut byte) {
                if keys.send(byte[0]).is_err() {
                    break;
                }
            }
        })
        .map(drop)
}
