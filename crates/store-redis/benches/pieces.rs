//! Each hand-written piece beside redis-rs against the plain redis-rs
//! equivalent, on a throwaway redis-server in the same run.
//!
//! `cargo bench -p store-redis --bench pieces` compares:
//! - `encode`: a batch of 1,000 `XADD`s (~390-byte events) packed by a bare
//!   RESP encoder and by one reused `redis::Cmd`; `batch`: the same inside
//!   `MULTI`/`EXEC`, sent and answered;
//! - `open`: opening a connection with a raw `PING` on a socket of its own
//!   first, and with `Client::get_connection_with_timeout` alone;
//! - `connection`: one `PING` on a connection from a mutex-guarded list of
//!   idle connections, from an r2d2 pool, and on a new connection per call.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use redis::Value;
use store_redis::testing::RedisServer;

const EVENTS: usize = 1000;
const TIMEOUT: Duration = Duration::from_secs(2);

/// The bare encoder: one command in RESP, straight into `buf`.
fn encode(buf: &mut Vec<u8>, args: &[&[u8]]) {
    let _ = write!(buf, "*{}\r\n", args.len());
    for arg in args {
        let _ = write!(buf, "${}\r\n", arg.len());
        buf.extend_from_slice(arg);
        buf.extend_from_slice(b"\r\n");
    }
}

fn lines() -> Vec<Vec<u8>> {
    (0..EVENTS)
        .map(|i| format!("{{\"id\":\"{i:036}\",\"pad\":\"{}\"}}", "x".repeat(340)).into_bytes())
        .collect()
}

fn pack_bare(packed: &mut Vec<u8>, lines: &[Vec<u8>]) {
    encode(packed, &[b"MULTI"]);
    for line in lines {
        encode(packed, &[b"XADD", b"bench:{t}:s", b"*", b"e", line]);
    }
    encode(packed, &[b"EXEC"]);
}

fn pack_cmd(packed: &mut Vec<u8>, cmd: &mut redis::Cmd, lines: &[Vec<u8>]) {
    cmd.clear();
    cmd.arg("MULTI").write_packed_command(packed);
    for line in lines {
        cmd.clear();
        cmd.arg("XADD").arg("bench:{t}:s").arg("*").arg("e").arg(line.as_slice());
        cmd.write_packed_command(packed);
    }
    cmd.clear();
    cmd.arg("EXEC").write_packed_command(packed);
}

fn encoding(c: &mut Criterion, con: &mut redis::Connection) {
    let lines = lines();
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(EVENTS as u64));
    let mut packed = Vec::with_capacity(512 * 1024);
    group.bench_function("bare", |b| {
        b.iter(|| {
            packed.clear();
            pack_bare(&mut packed, &lines);
            packed.len()
        })
    });
    let mut cmd = redis::Cmd::new();
    group.bench_function("redis_cmd", |b| {
        b.iter(|| {
            packed.clear();
            pack_cmd(&mut packed, &mut cmd, &lines);
            packed.len()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("batch");
    group.throughput(Throughput::Elements(EVENTS as u64));
    let send = |con: &mut redis::Connection, packed: &[u8]| {
        con.send_packed_command(packed).unwrap();
        for _ in 0..EVENTS + 1 {
            con.recv_response().unwrap();
        }
        match con.recv_response().unwrap() {
            Value::Array(ids) => assert_eq!(ids.len(), EVENTS),
            other => panic!("EXEC answered {other:?}"),
        }
    };
    let mut timed =
        |con: &mut redis::Connection, iters: u64, pack: &mut dyn FnMut(&mut Vec<u8>)| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                redis::cmd("DEL").arg("bench:{t}:s").exec(con).unwrap();
                let start = Instant::now();
                packed.clear();
                pack(&mut packed);
                send(con, &packed);
                total += start.elapsed();
            }
            total
        };
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| timed(con, iters, &mut |p| pack_bare(p, &lines)))
    });
    group.bench_function("redis_cmd", |b| {
        b.iter_custom(|iters| timed(con, iters, &mut |p| pack_cmd(p, &mut cmd, &lines)))
    });
    group.finish();
}

/// The raw probe: connect, send `PING`, wait for the first byte of any answer.
fn probe(port: u16) {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), TIMEOUT).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(s.read(&mut byte).unwrap(), 1);
}

fn opening(c: &mut Criterion, client: &redis::Client, port: u16) {
    let mut group = c.benchmark_group("open");
    group.bench_function("raw_ping_then_connect", |b| {
        b.iter(|| {
            probe(port);
            client.get_connection_with_timeout(TIMEOUT).unwrap()
        })
    });
    group.bench_function("connect_with_timeout", |b| {
        b.iter(|| client.get_connection_with_timeout(TIMEOUT).unwrap())
    });
    group.finish();
}

fn ping(con: &mut redis::Connection) {
    let pong: String = redis::cmd("PING").query(con).unwrap();
    assert_eq!(pong, "PONG");
}

/// `iters` pings spread over `threads` threads, each running `one`.
fn spread(threads: usize, iters: u64, one: &(dyn Fn() + Sync)) -> Duration {
    let per = iters.div_ceil(threads as u64);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| (0..per).for_each(|_| one()));
        }
    });
    start.elapsed()
}

fn connections(c: &mut Criterion, client: &redis::Client) {
    let idle: Mutex<Vec<redis::Connection>> = Mutex::new(Vec::new());
    let listed = || {
        let taken = idle.lock().unwrap().pop();
        let mut con = taken.unwrap_or_else(|| client.get_connection_with_timeout(TIMEOUT).unwrap());
        ping(&mut con);
        let mut list = idle.lock().unwrap();
        if list.len() < 16 {
            list.push(con);
        }
    };
    let pool =
        r2d2::Pool::builder().max_size(64).test_on_check_out(false).build(client.clone()).unwrap();
    let pooled = || ping(&mut pool.get().unwrap());
    let fresh = || ping(&mut client.get_connection_with_timeout(TIMEOUT).unwrap());
    let mut group = c.benchmark_group("connection");
    for threads in [1usize, 8] {
        let variants: [(&str, &(dyn Fn() + Sync)); 3] =
            [("idle_list", &listed), ("r2d2", &pooled), ("new_per_call", &fresh)];
        for (name, one) in variants {
            group.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, &threads| {
                b.iter_custom(|iters| spread(threads, iters, one))
            });
        }
    }
    group.finish();
}

fn main() {
    let server = RedisServer::start();
    let info = redis::IntoConnectionInfo::into_connection_info(server.url()).unwrap();
    let nodelay = redis::io::tcp::TcpSettings::default().set_nodelay(true);
    let client = redis::Client::open(info.set_tcp_settings(nodelay)).unwrap();
    let mut con = client.get_connection_with_timeout(TIMEOUT).unwrap();
    let mut c = Criterion::default().configure_from_args();
    encoding(&mut c, &mut con);
    opening(&mut c, &client, server.port());
    connections(&mut c, &client);
    c.final_summary();
}
