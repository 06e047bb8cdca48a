//! `seed serve` scenarios: HTTP publish over keep-alive connections, against
//! an in-process server on a file store, driven by one client thread (each
//! connection one request in flight); then the fan-out of event streams
//! ([`super::sse`]), whose publisher and `/metrics` reads use [`Conn`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;

use super::{Plan, Spec};
use crate::bench::report::{Op, Row, Target};

const ONE: &str = "http: publish one per request, 8 connections";
const BATCH: &str = "http: NDJSON batches of 1,000, 8 connections";
/// Connections publishing at once.
const CONNECTIONS: usize = 8;

/// The HTTP scenarios.
pub fn specs() -> Vec<Spec> {
    let mut specs = vec![
        Spec::with(ONE, "events/s", Target::new(Op::AtLeast, 50_000.0, ">= 50k/s")),
        Spec::with(BATCH, "events/s", Target::new(Op::AtLeast, 500_000.0, ">= 500k/s")),
    ];
    specs.extend(super::sse::specs());
    specs
}

/// One keep-alive connection to `seed serve`, used by one thread.
pub struct Conn {
    addr: SocketAddr,
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    line: String,
    answer: Vec<u8>,
}

impl Conn {
    /// Connects to `addr`.
    pub fn open(addr: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect(addr).context("connecting to seed serve")?;
        stream.set_nodelay(true)?;
        let writer = stream.try_clone()?;
        let reader = BufReader::new(stream);
        Ok(Conn { addr, writer, reader, line: String::new(), answer: Vec::new() })
    }

    /// The head of a POST of `length` bytes.
    fn post_head(&self, path: &str, content_type: &str, length: usize) -> Vec<u8> {
        let addr = self.addr;
        format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
        )
        .into_bytes()
    }

    /// Sends `request` whole and reads the answer, which must have `status`.
    fn exchange(&mut self, request: &[u8], status: &str) -> Result<&[u8]> {
        self.writer.write_all(request)?;
        self.line.clear();
        self.reader.read_line(&mut self.line)?;
        ensure!(self.line.starts_with(status), "seed serve answered {:?}", self.line);
        let mut length = 0;
        loop {
            self.line.clear();
            self.reader.read_line(&mut self.line)?;
            if self.line == "\r\n" || self.line.is_empty() {
                break;
            }
            if let Some((name, value)) = self.line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse()?;
                }
            }
        }
        self.answer.resize(length, 0);
        self.reader.read_exact(&mut self.answer)?;
        Ok(&self.answer)
    }

    /// POSTs `body` to `path`, which must answer 201.
    pub fn post(&mut self, path: &str, content_type: &str, body: &[u8]) -> Result<()> {
        let mut request = self.post_head(path, content_type, body.len());
        request.extend_from_slice(body);
        self.exchange(&request, "HTTP/1.1 201").map(|_| ())
    }

    /// GETs `path` (answered 200 with a length) as text.
    pub fn get(&mut self, path: &str) -> Result<String> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr);
        let answer = self.exchange(request.as_bytes(), "HTTP/1.1 200")?;
        Ok(String::from_utf8_lossy(answer).into_owned())
    }
}

/// Sends `requests` POSTs of `request` (head and body) on one keep-alive
/// connection, one at a time, each answered 201.
async fn post_many(addr: SocketAddr, request: Arc<Vec<u8>>, requests: usize) -> Result<()> {
    let socket = tokio::net::TcpStream::connect(addr).await.context("connecting to seed serve")?;
    socket.set_nodelay(true)?;
    let mut answers: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..requests {
        let mut sent = 0;
        while sent < request.len() {
            match socket.try_write(&request[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => socket.writable().await?,
                Err(e) => return Err(e.into()),
            }
        }
        // The answer: a head up to a blank line, then Content-Length bytes.
        let whole = loop {
            if let Some(end) = answers.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&answers[..end])?;
                ensure!(head.starts_with("HTTP/1.1 201"), "seed serve answered {head:?}");
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length").then(|| value.trim())
                    })
                    .context("an answer without Content-Length")?
                    .parse()?;
                if answers.len() >= end + 4 + length {
                    break end + 4 + length;
                }
            }
            match socket.try_read(&mut buf) {
                Ok(0) => bail!("seed serve closed the connection"),
                Ok(n) => answers.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => socket.readable().await?,
                Err(e) => return Err(e.into()),
            }
        };
        answers.drain(..whole);
    }
    Ok(())
}

/// Events per second of `CONNECTIONS` connections sending `requests` each.
///
/// The connections are driven by one thread (each with one request in
/// flight), so the client takes little of the machine the server runs on.
fn drive(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: &[u8],
    requests: usize,
    per_request: usize,
) -> Result<f64> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let request = Arc::new(request);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the connections' runtime")?;
    let started = Instant::now();
    runtime.block_on(async {
        let connections: Vec<_> = (0..CONNECTIONS)
            .map(|_| tokio::spawn(post_many(addr, request.clone(), requests)))
            .collect();
        for c in connections {
            c.await.context("a publishing connection")??;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok((CONNECTIONS * requests * per_request) as f64 / started.elapsed().as_secs_f64())
}

/// Runs both scenarios against one server.
pub fn all(plan: &Plan, work: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let dir = work.join("http");
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(store_file::FileStore::open(&dir)?);
    let bus = Arc::new(bus::EventBus::new(store));
    let args = serve::ServeArgs {
        listen: "127.0.0.1:0".parse()?,
        max_body: 4 << 20,
        ..serve::ServeArgs::default()
    };
    let config = serve::Config::from_args(&args)?;
    let runtime = tokio::runtime::Runtime::new().context("starting a tokio runtime")?;
    let server = runtime.block_on(serve::Server::bind(bus, config))?;
    let addr = server.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = runtime.spawn(server.run(async move {
        let _ = stopped.await;
    }));

    let event = json!({"payload": {"task_id": "abc", "n": 1, "text": "a payload of a typical archon event"}, "source": "bench"});
    let one = event.to_string().into_bytes();
    let mut batch = Vec::new();
    for _ in 0..1000 {
        batch.extend_from_slice(&one);
        batch.push(b'\n');
    }
    let per_conn_one = plan.http_one_n / CONNECTIONS;
    let per_conn_batches = plan.http_batches / CONNECTIONS;
    let mut ones = Vec::new();
    let mut batches = Vec::new();
    for run in 0..plan.runs {
        let path = format!("/v1/topics/bench.one.{run}/events");
        ones.push(drive(addr, &path, "application/json", &one, per_conn_one, 1)?);
        let path = format!("/v1/topics/bench.batch.{run}/events");
        batches.push(drive(addr, &path, "application/x-ndjson", &batch, per_conn_batches, 1000)?);
    }
    let spec = |name| specs().into_iter().find(|s| s.name == name).expect("a spec");
    rows.push(spec(ONE).row_of_runs(&ones));
    rows.push(spec(BATCH).row_of_runs(&batches));
    let _ = stop.send(());
    runtime.block_on(serving).context("the server task")??;
    let _ = std::fs::remove_dir_all(&dir);
    super::sse::fan_out(plan, work, rows)
}
