//! `seed serve` fan-out: 1,000 Server-Sent Events streams of one pattern fed
//! at 1,000 events/s. The server runs as a child process (so its RSS, threads
//! and descriptors are its own); the streams are raw sockets of one tokio
//! thread here, and an event's delivery latency is its arrival time minus the
//! `CLOCK_MONOTONIC` time its publisher wrote into its payload.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::http::Conn;
use super::proc::{mono_ns, proc_status_kib, say_ready, say_result, wait_for_go, ChildProc};
use super::{Plan, Spec};
use crate::bench::report::{Op, Row, Target};

const LATENCY: &str = "http: SSE delivery, 1,000 streams at 1,000 events/s";
const RSS: &str = "http: SSE server peak RSS, 1,000 streams";
const FOLLOWERS: &str = "http: SSE store followers, 1,000 streams of one pattern";
const THREADS: &str = "http: SSE server threads, 1,000 streams";
const FDS: &str = "http: SSE server open files, 1,000 streams";
const FLOOR: &str =
    "limit: SSE delivery from a bare writer thread, 1,000 streams at 1,000 events/s";
/// Streams reading at once.
const STREAMS: usize = 1000;
/// The pattern every stream follows, and the topic the events go to.
const PATTERN_QUERY: &str = "bench.sse.%3E";
const TOPIC: &str = "bench.sse.feed";
/// Width of a latency histogram bucket, and how many there are (up to 1 s).
const BUCKET_NS: u64 = 10_000;
const BUCKETS: usize = 100_000;

/// The fan-out scenarios.
pub fn specs() -> Vec<Spec> {
    vec![
        Spec::with(LATENCY, "ms", Target::latency(5.0, 5.0, "p99 < 5 ms")),
        Spec::with(RSS, "MiB", Target::new(Op::Below, 150.0, "< 150 MiB")),
        Spec::with(FOLLOWERS, "followers", Target::new(Op::AtMost, 1.0, "1 per pattern")),
        Spec::info(THREADS, "threads"),
        Spec::info(FDS, "fds"),
        Spec::info(FLOOR, "ms"),
    ]
}

/// What the server child reports while every stream is still open.
#[derive(Serialize, Deserialize)]
struct ServerUse {
    hwm_kib: u64,
    threads: u64,
    fds: u64,
}

/// Child `sse-server`: `seed serve` over the file store in `dir`; says
/// `addr HOST:PORT`, and on `go` reports its peak RSS, threads and descriptors.
pub fn server(args: &serde_json::Value) -> Result<()> {
    let dir = args["dir"].as_str().context("sse-server needs a dir")?;
    let store = Arc::new(store_file::FileStore::open(dir)?);
    let bus = Arc::new(bus::EventBus::new(store));
    let serve_args =
        serve::ServeArgs { listen: "127.0.0.1:0".parse()?, ..serve::ServeArgs::default() };
    let config = serve::Config::from_args(&serve_args)?;
    let runtime = tokio::runtime::Runtime::new().context("starting a tokio runtime")?;
    let server = runtime.block_on(serve::Server::bind(bus, config))?;
    println!("addr {}", server.local_addr()?);
    runtime.spawn(server.run(std::future::pending()));
    say_ready();
    wait_for_go()?;
    let fds = std::fs::read_dir("/proc/self/fd").context("listing /proc/self/fd")?.count();
    say_result(&ServerUse {
        hwm_kib: proc_status_kib("VmHWM")?,
        threads: proc_status_kib("Threads")?,
        fds: fds as u64,
    })?;
    // The streams are the parent's to close; nothing here needs a clean stop.
    std::process::exit(0)
}

/// Delivery latencies of every stream, by 10 µs bucket.
struct Histogram(Vec<u64>);

impl Histogram {
    fn add(&mut self, ns: u64) {
        let i = usize::try_from(ns / BUCKET_NS).unwrap_or(usize::MAX).min(BUCKETS - 1);
        self.0[i] += 1;
    }

    /// The `p`th percentile in ms (the upper edge of its bucket).
    fn percentile_ms(&self, p: f64) -> f64 {
        let total: u64 = self.0.iter().sum();
        let rank = ((total as f64) * p / 100.0).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.0.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return ((i as u64 + 1) * BUCKET_NS) as f64 / 1e6;
            }
        }
        f64::NAN
    }
}

/// One stream: subscribes, says it is listening, then reads `events`
/// events, adding each one's latency to `latencies`.
async fn stream(
    addr: SocketAddr,
    events: usize,
    counts: Arc<Counts>,
    latencies: Arc<Mutex<Histogram>>,
    mut release: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let socket = tokio::net::TcpStream::connect(addr).await.context("connecting a stream")?;
    let request =
        format!("GET /v1/subscribe?topic={PATTERN_QUERY} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut sent = 0;
    while sent < request.len() {
        socket.writable().await?;
        match socket.try_write(&request.as_bytes()[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The streams share two cores with the server: a read is scanned for
    // the marks alone (SIMD), so the reader adds little delay of its own.
    let mark = memchr::memmem::Finder::new(b"\"sent_ns\":");
    let failed = memchr::memmem::Finder::new(b"event: error");
    let listening = memchr::memmem::Finder::new(b": listening");
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let (mut answered, mut started) = (false, false);
    let mut seen = 0;
    let mut samples = Vec::new();
    while seen < events {
        socket.readable().await?;
        // A short read has drained the socket: answering WouldBlock from
        // try_io then clears tokio's readiness, so the next wait goes to
        // epoll instead of into a read that finds nothing.
        let mut got = None;
        let read = socket.try_io(tokio::io::Interest::READABLE, || {
            let n = socket.try_read(&mut buf)?;
            got = Some(n);
            match n > 0 && n < buf.len() {
                true => Err(std::io::ErrorKind::WouldBlock.into()),
                false => Ok(()),
            }
        });
        let n = match (got, read) {
            (Some(0), _) => bail!("a stream ended after {seen} of {events} events"),
            (Some(n), _) => n,
            (None, Err(e)) if e.kind() != std::io::ErrorKind::WouldBlock => return Err(e.into()),
            (None, _) => continue,
        };
        let now = mono_ns();
        pending.extend_from_slice(&buf[..n]);
        let Some(end) = memchr::memrchr(b'\n', &pending) else { continue };
        let complete = &pending[..=end];
        if !answered {
            ensure!(complete.starts_with(b"HTTP/1.1 200"), "the stream was refused");
            answered = true;
        }
        if !started && listening.find(complete).is_some() {
            started = true;
            counts.listening.fetch_add(1, Ordering::SeqCst);
        }
        ensure!(failed.find(complete).is_none(), "the server ended a stream with an error event");
        // Whole lines only, so every mark has its digits. Each event's
        // `data:` line holds its send time once (the `id:` line does not).
        samples.clear();
        for at in mark.find_iter(complete) {
            let digits = &complete[at + mark.needle().len()..];
            let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
            let sent: u64 = std::str::from_utf8(&digits[..len])?
                .parse()
                .context("an event without its send time")?;
            samples.push(now.saturating_sub(sent));
        }
        seen += samples.len();
        if !samples.is_empty() {
            let mut histogram = latencies.lock().unwrap_or_else(|p| p.into_inner());
            for ns in &samples {
                histogram.add(*ns);
            }
        }
        pending.drain(..=end);
    }
    counts.done.fetch_add(1, Ordering::SeqCst);
    // Open until the server has been measured.
    let _ = release.wait_for(|r| *r).await;
    drop(socket);
    Ok(())
}

/// How many streams are listening, and how many have read every event.
#[derive(Default)]
struct Counts {
    listening: AtomicUsize,
    done: AtomicUsize,
}

/// Waits until `count` reaches `STREAMS`, or fails if the streams ended or `limit` passed.
fn wait_for_streams<T>(
    count: &AtomicUsize,
    what: &str,
    readers: &std::thread::JoinHandle<T>,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    while count.load(Ordering::SeqCst) < STREAMS {
        if readers.is_finished() || Instant::now() > deadline {
            bail!("only {} of {STREAMS} streams were {what}", count.load(Ordering::SeqCst));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Publishes `events` events to `addr`, one per millisecond, each carrying its send time.
fn publish_paced(addr: SocketAddr, events: usize) -> Result<()> {
    let mut conn = Conn::open(addr)?;
    let path = format!("/v1/topics/{TOPIC}/events");
    let started = Instant::now();
    for i in 0..events {
        let due = started + Duration::from_millis(i as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let body = json!({"payload": {"sent_ns": mono_ns(), "i": i}, "source": "bench"});
        conn.post(&path, "application/json", body.to_string().as_bytes())?;
    }
    Ok(())
}

/// The value of an unlabelled metric in the Prometheus text of `/metrics`.
fn metric(addr: SocketAddr, name: &str) -> Result<f64> {
    let text = Conn::open(addr)?.get("/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("/metrics has no {name}"))
}

/// The [`STREAMS`] streams to `addr`, read on one thread of their own.
struct Streams {
    counts: Arc<Counts>,
    latencies: Arc<Mutex<Histogram>>,
    /// Lets the streams close (they stay open until then).
    release: tokio::sync::watch::Sender<bool>,
    readers: std::thread::JoinHandle<Result<()>>,
}

impl Streams {
    /// Starts the streams, each reading `events` events.
    fn open(addr: SocketAddr, events: usize) -> Result<Streams> {
        let counts = Arc::new(Counts::default());
        let latencies = Arc::new(Mutex::new(Histogram(vec![0; BUCKETS])));
        let (release, released) = tokio::sync::watch::channel(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the streams' runtime")?;
        let streams: Vec<_> = (0..STREAMS)
            .map(|_| {
                let task =
                    stream(addr, events, counts.clone(), latencies.clone(), released.clone());
                runtime.spawn(task)
            })
            .collect();
        let readers = std::thread::spawn(move || {
            runtime.block_on(async {
                for s in streams {
                    s.await.context("a stream task")??;
                }
                Ok::<_, anyhow::Error>(())
            })
        });
        Ok(Streams { counts, latencies, release, readers })
    }
}

/// The machine's floor under [`fan_out`]: the same 1,000 streams read by
/// the same reader, fed at the same pace by one plain thread instead of
/// `seed serve`: no HTTP, no runtime, no store; each round one blocking
/// `write` per stream of every event due that the stream has not had.
fn floor(plan: &Plan, rows: &mut Vec<Row>) -> Result<()> {
    use std::io::{Read, Write};
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("binding the floor's socket")?;
    let addr = listener.local_addr()?;
    let events = plan.sse_events;
    let Streams { counts, latencies, release, readers } = Streams::open(addr, events)?;
    let fed = (|| {
        let mut sockets = Vec::with_capacity(STREAMS);
        let mut request = [0u8; 1024];
        for _ in 0..STREAMS {
            let (mut socket, _) = listener.accept().context("accepting a stream")?;
            socket.set_nodelay(true)?;
            // The request fits one read; its content does not matter here.
            let _ = socket.read(&mut request)?;
            socket.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n: listening\n\n",
            )?;
            sockets.push(socket);
        }
        wait_for_streams(&counts.listening, "listening", &readers, Duration::from_secs(60))?;
        // Each event as the server writes it, ~330 bytes: an id and the data line.
        let frame = |i: usize, sent: u64| {
            format!(
                "id: s~bench.sse.feed={i}-0\ndata: {{\"id\":\"00000000-0000-4000-8000-000000000000\",\"topic\":\"{TOPIC}\",\"payload\":{{\"sent_ns\":{sent},\"i\":{i}}},\"timestamp\":\"2026-12-05T00:00:00.000000Z\",\"source\":\"bench\",\"correlation_id\":null,\"metadata\":{{}},\"cursor\":\"{i}-0\"}}\n\n"
            )
        };
        let mut frames: Vec<String> = Vec::with_capacity(events);
        let mut sent = vec![0usize; STREAMS];
        let mut out = Vec::new();
        let started = mono_ns();
        loop {
            let due = ((mono_ns() - started) / 1_000_000 + 1).min(events as u64) as usize;
            while frames.len() < due {
                // Sent when it was due, as a paced publisher would have sent it.
                let i = frames.len();
                frames.push(frame(i, started + i as u64 * 1_000_000));
            }
            let mut wrote = false;
            for (socket, had) in sockets.iter_mut().zip(sent.iter_mut()) {
                if *had < due {
                    out.clear();
                    frames[*had..due].iter().for_each(|f| out.extend_from_slice(f.as_bytes()));
                    socket.write_all(&out)?;
                    *had = due;
                    wrote = true;
                }
            }
            if !wrote {
                if due == events {
                    break;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        wait_for_streams(&counts.done, "done", &readers, Duration::from_secs(60))?;
        Ok::<_, anyhow::Error>(sockets)
    })();
    let _ = release.send(true);
    let streamed = readers.join().map_err(|_| anyhow::anyhow!("the streams panicked"))?;
    match (fed, streamed) {
        (Ok(_), Ok(())) => {}
        (Err(e), Err(streams)) => return Err(e.context(format!("the streams failed: {streams:#}"))),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    }
    let histogram = latencies.lock().unwrap_or_else(|p| p.into_inner());
    let spec = specs().into_iter().find(|s| s.name == FLOOR).expect("a spec");
    rows.push(
        spec.row(histogram.percentile_ms(50.0), Some(histogram.percentile_ms(99.0)), 1).with_note(
            "what the SSE row's 1,000 streams get from one thread writing each stream its due \
             events in one write per round (no HTTP server): the floor of this machine"
                .to_string(),
        ),
    );
    Ok(())
}

/// Runs the fan-out scenario.
pub fn fan_out(plan: &Plan, work: &std::path::Path, rows: &mut Vec<Row>) -> Result<()> {
    let dir = work.join("sse");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut server = ChildProc::spawn("sse-server", &json!({"dir": dir}))?;
    let addr: SocketAddr = server.expect("addr ", Duration::from_secs(30))?.trim().parse()?;
    server.ready(Duration::from_secs(30))?;

    let events = plan.sse_events;
    let Streams { counts, latencies, release, readers } = Streams::open(addr, events)?;
    let measured = (|| {
        wait_for_streams(&counts.listening, "listening", &readers, Duration::from_secs(60))?;
        let subscribers = metric(addr, "seed_subscribers")?;
        ensure!(subscribers as usize == STREAMS, "/metrics counts {subscribers} subscribers");
        publish_paced(addr, events)?;
        wait_for_streams(&counts.done, "done", &readers, Duration::from_secs(60))?;
        let followers = metric(addr, "seed_stream_followers")?;
        server.send("go")?;
        let usage: ServerUse = server.result(Duration::from_secs(30))?;
        Ok((followers, usage))
    })();
    let _ = release.send(true);
    let streamed = readers.join().map_err(|_| anyhow::anyhow!("the streams panicked"))?;
    let (followers, usage) = match (measured, streamed) {
        (Ok(m), Ok(())) => m,
        (Err(e), Err(streams)) => return Err(e.context(format!("the streams failed: {streams:#}"))),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };

    let histogram = latencies.lock().unwrap_or_else(|p| p.into_inner());
    let total: u64 = histogram.0.iter().sum();
    ensure!(total as usize == STREAMS * events, "{total} deliveries of {}", STREAMS * events);
    let spec = |name| specs().into_iter().find(|s| s.name == name).expect("a spec");
    rows.push(spec(LATENCY).row(
        histogram.percentile_ms(50.0),
        Some(histogram.percentile_ms(99.0)),
        1,
    ));
    rows.push(spec(RSS).row(usage.hwm_kib as f64 / 1024.0, None, 1));
    rows.push(spec(FOLLOWERS).row(followers, None, 1));
    rows.push(spec(THREADS).row(usage.threads as f64, None, 1));
    rows.push(spec(FDS).row(usage.fds as f64, None, 1));
    let _ = std::fs::remove_dir_all(&dir);
    drop(histogram);
    floor(plan, rows)
}
