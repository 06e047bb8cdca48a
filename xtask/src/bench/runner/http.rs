//! `seed serve` scenarios: HTTP publish over keep-alive connections, against
//! an in-process server on a file store, driven by plain blocking sockets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Barrier};
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
    vec![
        Spec::with(ONE, "events/s", Target::new(Op::AtLeast, 50_000.0, ">= 50k/s")),
        Spec::with(BATCH, "events/s", Target::new(Op::AtLeast, 500_000.0, ">= 500k/s")),
    ]
}

/// Sends `requests` POSTs of `body` on one keep-alive connection, each answered 201.
fn post_many(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: &[u8],
    requests: usize,
) -> Result<()> {
    let stream = TcpStream::connect(addr).context("connecting to seed serve")?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    let mut line = String::new();
    let mut answer = Vec::new();
    for _ in 0..requests {
        writer.write_all(&request)?;
        line.clear();
        reader.read_line(&mut line)?;
        ensure!(line.starts_with("HTTP/1.1 201"), "seed serve answered {line:?}");
        let mut length = 0;
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse()?;
                }
            }
        }
        answer.resize(length, 0);
        reader.read_exact(&mut answer)?;
    }
    Ok(())
}

/// Events per second of `CONNECTIONS` connections sending `requests` each.
fn drive(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: &[u8],
    requests: usize,
    per_request: usize,
) -> Result<f64> {
    let barrier = Arc::new(Barrier::new(CONNECTIONS + 1));
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (barrier, path, content_type, body) =
                (barrier.clone(), path.to_string(), content_type.to_string(), body.to_vec());
            std::thread::spawn(move || {
                barrier.wait();
                post_many(addr, &path, &content_type, &body, requests)
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    for worker in workers {
        match worker.join() {
            Ok(result) => result?,
            Err(_) => bail!("a publishing connection panicked"),
        }
    }
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
    Ok(())
}
