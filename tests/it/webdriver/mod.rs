//! A small WebDriver client for the browser tests: starts Debian's `chromedriver` with headless
//! `chromium`, and speaks the W3C WebDriver protocol (JSON over HTTP on loopback) with a
//! blocking socket. Only what the tests use: navigate, find, click, type, run a script, wait for
//! a condition, take a screenshot, allow downloads.
//!
//! It is ours rather than a crate because the WebDriver crates pull in an async HTTP stack with
//! TLS for what is a handful of JSON requests to a process on 127.0.0.1.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};

/// Where Debian's packages put the browser and its driver.
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Longest wait for chromedriver to answer its status after it starts.
const DRIVER_START_MS: u64 = 20_000;
/// Longest wait for a condition on the page (a bound against hanging, not a timing assertion).
const CONDITION_WAIT_MS: u64 = 20_000;
/// Pause between two checks of a condition.
const POLL_MS: u64 = 50;
/// Longest wait for one WebDriver answer.
const REQUEST_TIMEOUT_MS: u64 = 60_000;
/// The W3C key codes of Enter and Escape, for [`Browser::press`].
pub const KEY_ENTER: &str = "\u{E007}";
pub const KEY_ESCAPE: &str = "\u{E00C}";
/// The W3C key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session through chromedriver; both end when this is dropped.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
    /// Downloads land here.
    pub downloads: tempfile::TempDir,
}

/// A page element found by a CSS selector.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium with the flags the test rig needs (root, no
    /// network but loopback), or says what is missing.
    pub fn start() -> Result<Browser> {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            if !Path::new(path).exists() {
                bail!(
                    "{path} is missing: install the Debian package {package} \
                     (`cargo xtask test` installs it, or `apt-get install chromium chromium-driver fonts-wqy-microhei`)"
                );
            }
        }
        let port = free_port()?;
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {CHROMEDRIVER}"))?;
        let profile = tempfile::tempdir()?;
        let downloads = tempfile::tempdir()?;
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
            downloads,
        };
        let deadline = Instant::now() + Duration::from_millis(DRIVER_START_MS);
        loop {
            match browser.request("GET", "/status", None) {
                Ok(status) if status["ready"] == true => break,
                _ if Instant::now() > deadline => bail!("chromedriver did not become ready"),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--lang=zh-CN",
            "--window-size=1280,860",
        ];
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        ));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let created = browser
            .request("POST", "/session", Some(capabilities))
            .context("creating a Chromium session")?;
        browser.session = created["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no session id in {created}"))?
            .to_owned();
        let download_dir = browser.downloads.path().display().to_string();
        browser.command(
            "POST",
            "/chromium/send_command",
            json!({"cmd": "Page.setDownloadBehavior",
                   "params": {"behavior": "allow", "downloadPath": download_dir}}),
        )?;
        Ok(browser)
    }

    pub fn goto(&self, url: &str) -> Result<()> {
        self.command("POST", "/url", json!({ "url": url }))?;
        Ok(())
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns its value.
    pub fn js(&self, script: &str, args: Value) -> Result<Value> {
        self.command(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
    }

    /// Waits until `script` returns a truthy value and returns it; fails naming `what`, with
    /// the page's text, when it never does.
    pub fn wait(&self, what: &str, script: &str, args: Value) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_millis(CONDITION_WAIT_MS);
        loop {
            let value = self.js(script, args.clone())?;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!("")
                && value != json!(0);
            if truthy {
                return Ok(value);
            }
            if Instant::now() > deadline {
                let page = self
                    .js("return document.body.innerText", json!([]))
                    .unwrap_or_default();
                bail!("waited in vain for {what}; the page says:\n{page}");
            }
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
    }

    /// Waits until the element matching `css` shows text containing `text`; returns its text.
    pub fn wait_text(&self, css: &str, text: &str) -> Result<String> {
        let script = "const e = document.querySelector(arguments[0]); \
                      return e && e.offsetParent !== null && e.innerText.includes(arguments[1]) ? e.innerText : null";
        let found = self.wait(
            &format!("{css} to show {text:?}"),
            script,
            json!([css, text]),
        )?;
        Ok(found.as_str().unwrap_or_default().to_owned())
    }

    /// The visible text of the element matching `css` (empty when there is none).
    pub fn text(&self, css: &str) -> Result<String> {
        let value = self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''",
            json!([css]),
        )?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// The element matching `css`, waiting for it to be there and visible.
    pub fn find(&self, css: &str) -> Result<Element> {
        self.wait(
            &format!("{css} to be visible"),
            "const e = document.querySelector(arguments[0]); return !!e && e.offsetParent !== null",
            json!([css]),
        )?;
        let found = self.command(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        )?;
        let id = found[ELEMENT_KEY]
            .as_str()
            .ok_or_else(|| anyhow!("no element for {css}: {found}"))?;
        Ok(Element(id.to_owned()))
    }

    /// A real click (the browser's own input events) on the element matching `css`.
    pub fn click(&self, css: &str) -> Result<()> {
        let element = self.find(css)?;
        self.command("POST", &format!("/element/{}/click", element.0), json!({}))
            .with_context(|| format!("clicking {css}"))?;
        Ok(())
    }

    /// Clears the input matching `css` and types `text` into it.
    pub fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let element = self.find(css)?;
        self.command("POST", &format!("/element/{}/clear", element.0), json!({}))?;
        self.command(
            "POST",
            &format!("/element/{}/value", element.0),
            json!({ "text": text }),
        )?;
        Ok(())
    }

    /// Presses and releases `key` (a character, or a W3C key such as [`KEY_ENTER`]) on
    /// whatever has the focus, as a person at the keyboard would.
    pub fn press(&self, key: &str) -> Result<()> {
        self.command(
            "POST",
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
                {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]}),
        )?;
        self.command("DELETE", "/actions", Value::Null)?;
        Ok(())
    }

    pub fn set_window(&self, width: u32, height: u32) -> Result<()> {
        self.command(
            "POST",
            "/window/rect",
            json!({"width": width, "height": height}),
        )?;
        Ok(())
    }

    /// Makes the page's viewport exactly `width` × `height` CSS pixels (a kiosk's screen).
    pub fn set_viewport(&self, width: u32, height: u32) -> Result<()> {
        self.command(
            "POST",
            "/chromium/send_command",
            json!({"cmd": "Emulation.setDeviceMetricsOverride",
                   "params": {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}}),
        )?;
        Ok(())
    }

    /// Back to the window's own viewport.
    pub fn reset_viewport(&self) -> Result<()> {
        self.command(
            "POST",
            "/chromium/send_command",
            json!({"cmd": "Emulation.clearDeviceMetricsOverride", "params": {}}),
        )?;
        Ok(())
    }

    /// Words in Latin letters a person can see on the page (text, button labels, placeholders,
    /// titles, input values) that are not on `allowed` and are not part of an identifier (a
    /// token with a digit, `:`, `_`, `@`, `/` or `.` in it: card numbers, record ids, reader
    /// ids, file names, addresses). What tellers, auditors and kiosk customers read is zh-CN:
    /// the tests fail on anything this returns.
    pub fn foreign_words(&self, allowed: &[&str]) -> Result<Vec<String>> {
        let found = self.js(
            r#"
            const seen = new Set();
            const visible = (e) => !!e && e.getClientRects().length > 0 &&
              getComputedStyle(e).visibility !== 'hidden';
            const scan = (text) => {
              for (const token of String(text || '').split(/[^A-Za-z0-9:_@\/.\-]+/)) {
                if (!token || /[0-9:_@\/.]/.test(token)) continue;
                for (const word of token.split('-')) if (/[A-Za-z]/.test(word)) seen.add(word);
              }
            };
            const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
            while (walker.nextNode()) {
              const n = walker.currentNode;
              if (n.parentElement && visible(n.parentElement)) scan(n.textContent);
            }
            for (const e of document.querySelectorAll('input, textarea, select, button, [title]')) {
              if (!visible(e)) continue;
              scan(e.getAttribute('placeholder'));
              scan(e.getAttribute('title'));
              if (e.tagName === 'INPUT' && ['button', 'submit'].includes(e.type)) scan(e.value);
            }
            scan(document.title);
            return [...seen];
            "#,
            json!([]),
        )?;
        let mut words: Vec<String> = found
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        words.retain(|w| !allowed.iter().any(|a| a.eq_ignore_ascii_case(w)));
        words.sort();
        Ok(words)
    }

    /// The visible buttons (and links styled as buttons) that are not wholly inside the
    /// viewport's width (and height, with `whole_screen`: a kiosk screen does not scroll).
    /// Each is described by its label and its box.
    pub fn actions_outside_viewport(&self, whole_screen: bool) -> Result<Vec<String>> {
        let found = self.js(
            r#"
            const out = [];
            const W = document.documentElement.clientWidth, H = window.innerHeight;
            for (const e of document.querySelectorAll('button, a.button, input[type=submit], input[type=button]')) {
              if (e.getClientRects().length === 0 || getComputedStyle(e).visibility === 'hidden') continue;
              if (e.closest('[hidden]')) continue;
              const r = e.getBoundingClientRect();
              const x = r.left + window.scrollX, right = r.right + window.scrollX;
              const outside = x < -0.5 || right > W + 0.5 || (arguments[0] && (r.top < -0.5 || r.bottom > H + 0.5));
              // Also clipped by a scrolling ancestor (a table cut off inside its box).
              let clipped = false;
              for (let p = e.parentElement; p && p !== document.body; p = p.parentElement) {
                const s = getComputedStyle(p);
                if (s.overflowX !== 'visible') {
                  const pr = p.getBoundingClientRect();
                  if (r.right > pr.right + 0.5 || r.left < pr.left - 0.5) { clipped = true; break; }
                }
              }
              if (outside || clipped) out.push((e.innerText || e.value || e.id || e.tagName).trim() +
                ' @ ' + Math.round(r.left) + ',' + Math.round(r.top) + ' ' + Math.round(r.width) + 'x' + Math.round(r.height) +
                ' in ' + W + 'x' + H);
            }
            return out;
            "#,
            json!([whole_screen]),
        )?;
        Ok(found
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) -> Result<()> {
        let data = self.command("GET", "/screenshot", Value::Null)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .context("decoding the screenshot")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// Waits for a downloaded file whose name ends with `suffix` (finished, not `.crdownload`).
    pub fn wait_download(&self, suffix: &str) -> Result<PathBuf> {
        let deadline = Instant::now() + Duration::from_millis(CONDITION_WAIT_MS);
        loop {
            for entry in std::fs::read_dir(self.downloads.path())? {
                let path = entry?.path();
                if path.to_string_lossy().ends_with(suffix) {
                    return Ok(path);
                }
            }
            if Instant::now() > deadline {
                bail!("no download ending in {suffix} arrived");
            }
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
    }

    fn command(&self, method: &str, path: &str, body: Value) -> Result<Value> {
        let body = (!body.is_null()).then_some(body);
        self.request(method, &format!("/session/{}{path}", self.session), body)
    }

    /// One WebDriver request; the answer's `value`, or its error as an error.
    fn request(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_millis(REQUEST_TIMEOUT_MS)))?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        );
        stream.write_all(request.as_bytes())?;
        let (head, payload) = read_reply(&mut stream)
            .with_context(|| format!("reading the WebDriver answer to {method} {path}"))?;
        let payload = if head.contains("transfer-encoding: chunked") {
            dechunk(&payload)
        } else {
            payload
        };
        let payload = String::from_utf8_lossy(&payload);
        let value: Value = serde_json::from_str(&payload)
            .with_context(|| format!("WebDriver answer to {method} {path}: {payload}"))?;
        let value = value["value"].clone();
        if let Some(error) = value.get("error").and_then(Value::as_str) {
            bail!(
                "WebDriver {method} {path}: {error}: {}",
                value["message"].as_str().unwrap_or_default()
            );
        }
        Ok(value)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.request("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Reads one HTTP answer: its head (lower-cased) and its body, by `Content-Length`, to the end
/// of a chunked body, or to the end of the stream (chromedriver may keep the connection open).
fn read_reply(stream: &mut TcpStream) -> Result<(String, Vec<u8>)> {
    let mut reply = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut head: Option<(String, usize)> = None;
    loop {
        if head.is_none() {
            if let Some(split) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&reply[..split]).to_ascii_lowercase();
                head = Some((text, split + 4));
            }
        }
        if let Some((text, start)) = &head {
            let body = &reply[*start..];
            let length = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let complete = match length {
                Some(length) => body.len() >= length,
                None if text.contains("transfer-encoding: chunked") => body.ends_with(b"0\r\n\r\n"),
                None => false,
            };
            if complete {
                return Ok((text.clone(), body.to_vec()));
            }
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            let (text, start) = head.ok_or_else(|| anyhow!("the connection closed early"))?;
            return Ok((text, reply[start..].to_vec()));
        }
        reply.extend_from_slice(&buf[..n]);
    }
}

/// A port nobody listens on right now.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn dechunk(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&rest[..line_end]);
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let after = &rest[line_end + 2..];
        if n == 0 || after.len() < n {
            break;
        }
        out.extend_from_slice(&after[..n]);
        rest = after[n..].strip_prefix(b"\r\n").unwrap_or(&after[n..]);
    }
    out
}
