//! A small W3C WebDriver client for the dashboard's browser tests: starts
//! Debian's `chromedriver`, opens a headless `chromium` session and speaks
//! the protocol's JSON over HTTP/1.1 on loopback.
//!
//! Why not `fantoccini` or `thirtyfour`: fantoccini 0.22 brings a second
//! `http` (0.2, through the `webdriver` crate) into Cargo.lock, which the
//! workspace keeps to one copy; the dozen commands these tests need fit in
//! this file over `std::net`.
//!
//! A missing browser or driver fails the test with the command that
//! installs them; it never passes without running.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The key of an element reference in W3C WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(variable: &str, names: &[&str]) -> PathBuf {
    if let Some(path) = std::env::var_os(variable) {
        return PathBuf::from(path);
    }
    for name in names {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "{} is not installed (looked for {names:?} on PATH, or set {variable}): the dashboard's browser \
         tests need Debian's chromium and chromium-driver: `apt-get install chromium chromium-driver` \
         (.ci/run installs them when CI=true)",
        names[0]
    );
}

/// A running `chromedriver` with one browser session.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

/// An element of the page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium
    /// session with a window of `width` x `height`.
    pub fn start(width: u32, height: u32) -> Browser {
        let driver_path = find_program("WEBDRIVER_CHROMEDRIVER", &["chromedriver"]);
        let browser_path = find_program("WEBDRIVER_CHROMIUM", &["chromium", "chromium-browser"]);
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_path.display()));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(status) = browser.call("GET", "/status", None)
                && status["value"]["ready"] == json!(true)
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": browser_path,
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--disable-extensions",
                            format!("--window-size={width},{height}"),
                        ],
                    },
                },
            },
        });
        let session = browser
            .call("POST", "/session", Some(capabilities))
            .unwrap_or_else(|e| panic!("chromedriver could not start {}: {e}", browser_path.display()));
        browser.session = session["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        browser
    }

    /// One WebDriver command; the answer's JSON, or its error message.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream = TcpStream::connect(self.addr).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        // chromedriver keeps the connection open whatever the request
        // says: read the headers, then exactly Content-Length bytes.
        let mut raw = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the driver closed the connection".into());
            }
            raw.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())
                    .flatten()
            })
            .ok_or("an answer without Content-Length")?;
        let body_start = head_end + 4;
        while raw.len() < body_start + length {
            let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the driver closed the connection mid-answer".into());
            }
            raw.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8_lossy(&raw[body_start..body_start + length]).into_owned();
        let body = body.as_str();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or("no status line")?;
        let value: Value = serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?;
        if status != 200 {
            return Err(format!("{status}: {}", value["value"]["message"]));
        }
        Ok(value)
    }

    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        match self.call(method, &path, body) {
            Ok(value) => value["value"].clone(),
            Err(error) => panic!("WebDriver {method} {path}: {error}"),
        }
    }

    /// Opens `url` and waits until the page has drawn its data
    /// (`#main[data-ready=true]`).
    pub fn open(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })));
        self.wait_for("document.getElementById('main').dataset.ready === 'true'", url);
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the
    /// page and returns what it returns.
    pub fn script(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Waits up to 20 s for `expression` to be true in the page.
    pub fn wait_for(&self, expression: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.script(&format!("return Boolean({expression});"), json!([])) == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let text = self.script("return document.body.innerText;", json!([]));
                panic!(
                    "waited 20 s for {what} ({expression}); the page shows:\n{}",
                    text.as_str().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to 20 s for the first element matching `selector` to read
    /// `expected`, or (with `None`) for no element to match.
    pub fn wait_for_text(&self, selector: &str, expected: Option<&str>) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.script(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                json!([selector]),
            );
            if text.as_str() == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited 20 s for {selector} to read {expected:?}; it reads {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The first element matching a CSS selector; panics when none does.
    pub fn find(&self, selector: &str) -> Element {
        let found = self.command(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": selector })),
        );
        match found[ELEMENT_KEY].as_str() {
            Some(reference) => Element(reference.to_owned()),
            None => panic!("no element matches {selector}: {found}"),
        }
    }

    /// The visible text of the first element matching `selector`.
    pub fn text(&self, selector: &str) -> String {
        self.on_element(selector, "GET", "text", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Clicks the first element matching `selector`, as a user would.
    pub fn click(&self, selector: &str) {
        self.on_element(selector, "POST", "click", Some(json!({})));
    }

    /// Runs an element command on the first element matching `selector`.
    /// Live pages redraw their rows every second, so an element found a
    /// moment ago may be gone: then it is found again, as a user's eye
    /// would, up to five times.
    fn on_element(&self, selector: &str, method: &str, action: &str, body: Option<Value>) -> Value {
        let mut tries = 0;
        loop {
            let element = self.find(selector);
            let path = format!("/session/{}/element/{}/{action}", self.session, element.0);
            match self.call(method, &path, body.clone()) {
                Ok(value) => return value["value"].clone(),
                Err(error) if error.contains("stale element") && tries < 5 => tries += 1,
                Err(error) => panic!("WebDriver {method} {path}: {error}"),
            }
        }
    }

    /// Types `text` into the first element matching `selector`.
    pub fn type_into(&self, selector: &str, text: &str) {
        self.on_element(selector, "POST", "clear", Some(json!({})));
        self.on_element(selector, "POST", "value", Some(json!({ "text": text })));
    }

    /// A PNG of the window, written to `path`.
    pub fn screenshot(&self, path: &std::path::Path) {
        let encoded = self.command("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("base64 text"))
            .expect("a base64 screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
