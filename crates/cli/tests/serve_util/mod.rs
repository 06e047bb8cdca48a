//! Helpers for black-box tests of `seed serve`: a running server, plain HTTP
//! requests (ureq), and an SSE client on a raw socket that reads the chunked
//! stream itself (so a test can also connect and not read at all).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{Dir, Running, DEADLINE};

/// A `seed serve` on a free loopback port.
pub struct Served {
    /// The process.
    pub process: Running,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The token requests send, if any.
    pub token: Option<String>,
}

impl Served {
    /// Starts `seed serve --listen 127.0.0.1:0 extra…` and waits for `Serving on`.
    pub fn start(dir: &Dir, extra: &[&str]) -> Served {
        Served::start_env(dir, extra, &[])
    }

    /// As [`Served::start`], with environment variables.
    pub fn start_env(dir: &Dir, extra: &[&str], env: &[(&str, &str)]) -> Served {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let process = dir.spawn_env(&args, env);
        let line = process.wait_stderr("Serving on ");
        let base = line.trim_start_matches("Serving on ").trim().to_string();
        let addr = base.trim_start_matches("http://").to_string();
        let token =
            extra.iter().position(|a| *a == "--token").map(|i| extra[i + 1].to_string()).or_else(
                || env.iter().find(|(k, _)| *k == "SEED_TOKEN").map(|(_, v)| v.to_string()),
            );
        Served { process, base, addr, token }
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(DEADLINE))
            .build()
            .into()
    }

    /// `GET path` with the server's token: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        self.get_with(path, self.token.as_deref())
    }

    /// `GET path` with `token` (or none).
    pub fn get_with(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut request = Self::agent().get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let mut response = request.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        let body = response.body_mut().with_config().limit(1 << 30).read_to_string().expect("body");
        (status, body)
    }

    /// `POST path` with a body of `content_type`: status and body.
    pub fn post(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
        let mut request =
            Self::agent().post(format!("{}{path}", self.base)).header("Content-Type", content_type);
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let mut response = request.send(body).unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().expect("body");
        (status, body)
    }

    /// `method path` with `headers` and a JSON `body` (if any): status,
    /// the `ETag` header (if any) and body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, Option<String>, String) {
        let uri = format!("{}{path}", self.base);
        let mut request = ureq::http::Request::builder().method(method).uri(&uri);
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if body.is_some() {
            request = request.header("Content-Type", "application/json");
        }
        let request =
            request.body(body.unwrap_or("").to_string()).expect("a request of valid parts");
        let mut response =
            Self::agent().run(request).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let etag =
            response.headers().get("etag").map(|v| v.to_str().expect("an ASCII ETag").to_string());
        let body = response.body_mut().read_to_string().expect("body");
        (status, etag, body)
    }

    /// Opens the event stream at `path` (an SSE endpoint other than `/v1/subscribe`).
    pub fn stream_at(&self, path: &str, last_id: Option<&str>) -> Sse {
        Sse::open(&self.addr, path, self.token.as_deref(), last_id)
    }

    /// Publishes one event as JSON and returns the stored event.
    pub fn publish(&self, topic: &str, body: serde_json::Value) -> serde_json::Value {
        let (status, text) = self.post(
            &format!("/v1/topics/{topic}/events"),
            "application/json",
            body.to_string().as_bytes(),
        );
        assert_eq!(status, 201, "publish to {topic}: {text}");
        serde_json::from_str(&text).expect("stored event")
    }

    /// Publishes `payloads` to `topic` as one NDJSON batch.
    pub fn publish_batch(&self, topic: &str, payloads: &[serde_json::Value]) -> serde_json::Value {
        let mut body = String::new();
        for p in payloads {
            body.push_str(&serde_json::json!({"payload": p, "source": "batch"}).to_string());
            body.push('\n');
        }
        let (status, text) = self.post(
            &format!("/v1/topics/{topic}/events"),
            "application/x-ndjson",
            body.as_bytes(),
        );
        assert_eq!(status, 201, "batch to {topic}: {text}");
        serde_json::from_str(&text).expect("batch result")
    }

    /// The history as parsed NDJSON lines.
    pub fn history(&self, query: &str) -> Vec<serde_json::Value> {
        let (status, text) = self.get(&format!("/v1/events?{query}"));
        assert_eq!(status, 200, "history {query}: {text}");
        text.lines().map(|l| serde_json::from_str(l).expect("NDJSON line")).collect()
    }

    /// Opens an event stream of `query` that reads nothing until the returned sender sends.
    pub fn held_stream(&self, query: &str) -> (Sse, mpsc::Sender<()>) {
        let (release, gate) = mpsc::channel();
        let path = format!("/v1/subscribe?{query}");
        (Sse::open_held(&self.addr, &path, self.token.as_deref(), None, Some(gate)), release)
    }

    /// Opens an event stream of `query` (resuming after `last_id`, if given).
    pub fn stream(&self, query: &str, last_id: Option<&str>) -> Sse {
        Sse::open(&self.addr, &format!("/v1/subscribe?{query}"), self.token.as_deref(), last_id)
    }

    /// The value of a metric line that starts with `prefix`, if any.
    pub fn metric(&self, prefix: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

/// What an event stream delivered.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// The `: listening` comment and the stream's first id.
    Listening(String),
    /// An event: its id (resume token) and data.
    Event(String, serde_json::Value),
    /// A final `error` event's data.
    Error(serde_json::Value),
    /// An event of another kind (`event: KIND`): its kind and data.
    Named(String, serde_json::Value),
    /// A comment line other than `: listening` (a keep-alive).
    Comment,
    /// The stream ended.
    End,
}

/// An SSE client on a raw socket.
pub struct Sse {
    /// The status line and headers.
    pub head: String,
    items: mpsc::Receiver<Item>,
    socket: TcpStream,
}

/// Reads one chunk of a chunked body into `out`; false at the end.
fn read_chunk(reader: &mut impl BufRead, out: &mut Vec<u8>) -> bool {
    let mut size = String::new();
    if reader.read_line(&mut size).unwrap_or(0) == 0 {
        return false;
    }
    let Ok(n) = usize::from_str_radix(size.trim(), 16) else { return false };
    if n == 0 {
        return false;
    }
    let mut chunk = vec![0; n + 2];
    if reader.read_exact(&mut chunk).is_err() {
        return false;
    }
    out.extend_from_slice(&chunk[..n]);
    true
}

impl Sse {
    /// Sends the request and starts a thread that parses the stream.
    pub fn open(addr: &str, path: &str, token: Option<&str>, last_id: Option<&str>) -> Sse {
        Sse::open_held(addr, path, token, last_id, None)
    }

    /// As [`Sse::open`], but the body is not read until `gate` receives (or closes).
    pub fn open_held(
        addr: &str,
        path: &str,
        token: Option<&str>,
        last_id: Option<&str>,
        gate: Option<mpsc::Receiver<()>>,
    ) -> Sse {
        let mut socket = TcpStream::connect(addr).expect("connect");
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        if let Some(token) = token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if let Some(id) = last_id {
            request.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        request.push_str("\r\n");
        socket.write_all(request.as_bytes()).expect("send request");
        let mut reader = BufReader::new(socket.try_clone().expect("clone socket"));
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).expect("response head") == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let (tx, items) = mpsc::channel();
        let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
        thread::spawn(move || {
            if let Some(gate) = gate {
                let _ = gate.recv();
            }
            let mut text = Vec::new();
            loop {
                let more = if chunked {
                    read_chunk(&mut reader, &mut text)
                } else {
                    let mut buf = [0; 4096];
                    match reader.read(&mut buf) {
                        Ok(0) | Err(_) => false,
                        Ok(n) => {
                            text.extend_from_slice(&buf[..n]);
                            true
                        }
                    }
                };
                while let Some(end) = text.windows(2).position(|w| w == b"\n\n") {
                    let block: Vec<u8> = text.drain(..end + 2).collect();
                    let block = String::from_utf8_lossy(&block).into_owned();
                    if let Some(item) = parse_block(&block) {
                        if tx.send(item).is_err() {
                            return;
                        }
                    }
                }
                if !more {
                    let _ = tx.send(Item::End);
                    return;
                }
            }
        });
        Sse { head, items, socket }
    }

    /// The HTTP status of the response.
    pub fn status(&self) -> u16 {
        self.head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    /// The next item, waiting up to the deadline.
    pub fn next(&self) -> Item {
        self.items.recv_timeout(DEADLINE).expect("an event stream item in time")
    }

    /// Waits for `: listening` and returns the stream's first id.
    pub fn listening(&self) -> String {
        match self.next() {
            Item::Listening(id) => id,
            other => panic!("expected `: listening`, got {other:?} (response {})", self.head),
        }
    }

    /// The next `n` events: (id, event), failing on anything else.
    pub fn events(&self, n: usize) -> Vec<(String, serde_json::Value)> {
        (0..n)
            .map(|i| match self.next() {
                Item::Event(id, e) => (id, e),
                other => panic!("expected event {i} of {n}, got {other:?}"),
            })
            .collect()
    }

    /// Items until the stream ends (or the deadline passes).
    pub fn until_end(&self) -> Vec<Item> {
        let deadline = Instant::now() + DEADLINE;
        let mut out = Vec::new();
        while let Ok(item) =
            self.items.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if item == Item::End {
                return out;
            }
            out.push(item);
        }
        panic!("the stream did not end in time; got {} items", out.len());
    }

    /// Closes the connection.
    pub fn close(self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

fn parse_block(block: &str) -> Option<Item> {
    let (mut id, mut kind, mut data, mut listening) =
        (None, "message".to_string(), Vec::new(), false);
    for line in block.lines() {
        if line == ":listening" || line == ": listening" {
            listening = true;
        } else if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim_start().to_string());
        } else if let Some(v) = line.strip_prefix("event:") {
            kind = v.trim_start().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
        }
    }
    if listening {
        return Some(Item::Listening(id.unwrap_or_default()));
    }
    if data.is_empty() {
        return block.starts_with(':').then_some(Item::Comment);
    }
    let value: serde_json::Value =
        serde_json::from_str(&data.join("\n")).expect("event data is JSON");
    Some(match kind.as_str() {
        "error" => Item::Error(value),
        "message" => Item::Event(id.unwrap_or_default(), value),
        _ => Item::Named(kind, value),
    })
}

/// Waits until `check` holds, failing with `what` at the deadline.
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}
