//! Black-box tests of `seed serve`: the real binary on a free loopback port,
//! on the file store (and on Redis where it is cheap), driven over HTTP.

mod serve_util;
mod util;

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{json, Value};
use serve_util::{wait_until, Item, Served};
use store_redis::testing::{RedisServer, ServerOptions};
use util::Dir;

/// The `ids` of events, in order.
fn ids(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["id"].as_str().expect("id").to_string()).collect()
}

/// The event ids per topic, in delivery order.
fn per_topic(events: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events {
        out.entry(e["topic"].as_str().unwrap().to_string())
            .or_default()
            .push(e["id"].as_str().unwrap().to_string());
    }
    out
}

/// Publish, history, topics, stats and every error code, on any store.
fn api_round_trip(dir: &Dir) {
    let s = Served::start(dir, &["--max-body", "4KiB"]);
    let (status, body) = s.get("/healthz");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));

    let one = s.publish("task.done", json!({"payload": {"n": 1}, "source": "fenrir", "correlation_id": "c1", "metadata": {"m": true}}));
    assert_eq!(
        (one["topic"].as_str(), one["correlation_id"].as_str()),
        (Some("task.done"), Some("c1"))
    );
    assert!(one["cursor"].is_string(), "{one}");
    // Idempotent with an id: the second publish returns the stored event and writes nothing.
    let id = "01890a5d-ac96-774b-bcce-b302099a8057";
    let first = s.publish("task.done", json!({"payload": {"n": 2}, "source": "fenrir", "id": id}));
    let again = s.publish("task.done", json!({"payload": {"n": 2}, "source": "fenrir", "id": id}));
    assert_eq!(first, again);
    let batch =
        s.publish_batch("task.failed", &[json!({"n": 3}), json!({"n": 4}), json!({"n": 5})]);
    assert_eq!(batch["published"], 3);
    assert_ne!(batch["first_cursor"], batch["last_cursor"]);
    let all = s.history("topic=task.%3E");
    assert_eq!(all.len(), 5);
    assert_eq!(all[1]["id"], id);

    // History mirrors `seed history --output ndjson` for the same filters, line for line.
    for (http, cli) in [
        ("topic=task.*", vec!["--topic", "task.*"]),
        (
            "topic=task.done&topic=task.failed&last=2",
            vec!["--topic", "task.done", "--topic", "task.failed", "--last", "2"],
        ),
        ("source=batch&limit=2", vec!["--source", "batch", "--limit", "2"]),
        ("correlation_id=c1", vec!["--correlation-id", "c1"]),
        (
            "topic=task.*&after=task.failed%3D0-0&limit=4",
            vec!["--topic", "task.*", "--after", "task.failed=0-0", "--limit", "4"],
        ),
    ] {
        let (status, text) = s.get(&format!("/v1/events?{http}"));
        assert_eq!(status, 200, "{http}: {text}");
        let mut args = vec!["history", "--output", "ndjson"];
        args.extend(cli);
        assert_eq!(text, dir.stdout(&args), "{http}");
    }
    let since = all[2]["timestamp"].as_str().unwrap().replace('+', "%2B");
    assert_eq!(ids(&s.history(&format!("since={since}"))), ids(&all[2..]));
    assert_eq!(ids(&s.history(&format!("until={since}"))), ids(&all[..2]));

    let (status, topics) = s.get("/v1/topics");
    assert_eq!((status, topics.trim()), (200, dir.stdout(&["topics", "--json"]).trim()));
    let (status, stats) = s.get("/v1/stats");
    assert_eq!(status, 200);
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["topics"][0]["topic"], "task.done");
    assert_eq!(stats["topics"][0]["events"], 2);
    let (status, one_topic) = s.get("/v1/stats?topic=task.failed");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&one_topic).unwrap()["topics"].as_array().unwrap().len(),
        1
    );

    // Bad input: 400 with one line naming the problem, and nothing written.
    let big = format!(r#"{{"payload": {{"x": "{}"}}, "source": "s"}}"#, "y".repeat(5000));
    for (topic, content_type, body, status, expected) in [
        ("t.bad", "application/json", "not json".to_string(), 400, "not JSON"),
        ("t.bad", "application/json", "[1, 2]".to_string(), 400, "expected a JSON object"),
        ("t.bad", "application/json", r#"{"source": "s"}"#.to_string(), 400, "payload is missing"),
        (
            "t.bad",
            "application/json",
            r#"{"payload": [], "source": "s"}"#.to_string(),
            400,
            "payload must be a JSON object",
        ),
        (
            "t.bad",
            "application/json",
            r#"{"payload": {}, "source": ""}"#.to_string(),
            400,
            "source",
        ),
        (
            "t.bad",
            "application/json",
            r#"{"payload": {}, "source": "s", "extra": 1}"#.to_string(),
            400,
            "unknown field",
        ),
        (
            "t..bad",
            "application/json",
            r#"{"payload": {}, "source": "s"}"#.to_string(),
            400,
            "empty token",
        ),
        (
            "t.*",
            "application/json",
            r#"{"payload": {}, "source": "s"}"#.to_string(),
            400,
            "reserved for patterns",
        ),
        (
            "t.bad",
            "application/x-ndjson",
            "{\"payload\": {}, \"source\": \"s\"}\n{\"payload\": 1, \"source\": \"s\"}\n"
                .to_string(),
            400,
            "line 2: payload",
        ),
        ("t.bad", "application/x-ndjson", "\n\n".to_string(), 400, "no events"),
        (
            "t.bad",
            "application/x-ndjson",
            format!("{{\"payload\": {{}}, \"source\": \"s\", \"id\": \"{id}\"}}\n"),
            400,
            "fresh id",
        ),
        ("t.bad", "application/json", big, 413, "larger than"),
    ] {
        let (got, text) =
            s.post(&format!("/v1/topics/{topic}/events"), content_type, body.as_bytes());
        assert_eq!(got, status, "{topic} {body:.60}: {text}");
        let error: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not a JSON error: {text}"));
        let message = error["error"].as_str().expect("an error field");
        assert!(
            message.contains(expected) && !message.contains('\n'),
            "{message:?} lacks {expected:?}"
        );
    }
    assert_eq!(s.history("").len(), 5, "a rejected publish wrote something");
    for (path, status) in [
        ("/v1/events?limit=1&last=1", 400),
        ("/v1/events?since=yesterday", 400),
        ("/v1/events?after=1-0", 400),
        ("/v1/events?bogus=1", 400),
        ("/v1/subscribe", 400),
        ("/v1/subscribe?topic=a&from=later", 400),
        ("/v1/stats?topic=a..b", 400),
        ("/v1/nothing", 404),
    ] {
        let (got, text) = s.get(path);
        assert_eq!(got, status, "{path}: {text}");
        assert!(
            serde_json::from_str::<Value>(&text).unwrap()["error"].is_string(),
            "{path}: {text}"
        );
    }
    let (status, text) = s.post("/v1/topics", "application/json", b"{}");
    assert_eq!(
        (status, serde_json::from_str::<Value>(&text).unwrap()["error"].is_string()),
        (405, true)
    );

    let published = s.metric("seed_events_published_total{topic=\"task.failed\"}");
    assert_eq!(published, Some(3.0));
    assert!(
        s.metric("seed_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/events\"}")
            .unwrap()
            >= 1.0
    );
    let (status, doc) = s.get("/v1/openapi.json");
    assert_eq!(status, 200);
    assert!(serde_json::from_str::<Value>(&doc).unwrap()["paths"]["/v1/subscribe"].is_object());
}

#[test]
fn every_endpoint_and_error_code_on_the_file_store() {
    api_round_trip(&Dir::new());
}

#[test]
fn every_endpoint_and_error_code_on_redis() {
    let redis = RedisServer::start();
    api_round_trip(&Dir::with_redis(redis.url()));
}

#[test]
fn a_store_that_cannot_be_reached_answers_503_and_streams_wait_it_out() {
    let options = ServerOptions { password: Some("redis-pa55".into()), persistent: true };
    let mut redis = RedisServer::start_with(options);
    let dir = Dir::with_redis(redis.url());
    let mut s = Served::start_env(&dir, &[], &[("RUST_LOG", "debug")]);
    s.publish("a", json!({"payload": {"n": 0}, "source": "s"}));
    let stream = s.stream("topic=a", None);
    stream.listening();
    redis.stop();
    let (status, text) =
        s.post("/v1/topics/a/events", "application/json", br#"{"payload": {}, "source": "s"}"#);
    assert_eq!(status, 503, "{text}");
    let (status, text) = s.get("/v1/events?topic=a");
    assert_eq!(status, 503, "{text}");
    assert!(!text.contains("redis-pa55"), "{text}");
    // The publish, the history and this /metrics request's own listing of
    // the work groups (Redis has them) each met the stopped server.
    assert_eq!(s.metric("seed_store_errors_total"), Some(3.0));
    // The pattern's subscription waits the outage out: the open stream goes on
    // with what is published once the server is back, nothing lost or repeated.
    redis.restart();
    wait_until("the store to be back", || {
        let (status, _) = s.post(
            "/v1/topics/a/events",
            "application/json",
            br#"{"payload": {"n": 1}, "source": "s"}"#,
        );
        status == 201
    });
    s.publish("a", json!({"payload": {"n": 2}, "source": "s"}));
    let got: Vec<u64> =
        stream.events(2).iter().map(|(_, e)| e["payload"]["n"].as_u64().unwrap()).collect();
    assert_eq!(got, [1, 2]);
    s.process.signal(libc::SIGTERM);
    s.process.expect_exit(0);
    assert!(!s.process.transcript().contains("redis-pa55"), "{}", s.process.transcript());
}

#[test]
fn the_token_is_required_checked_and_never_printed() {
    let dir = Dir::new();
    let mut cmd = dir.command(&["serve", "--listen", "0.0.0.0:0"]);
    let err = cmd.fails_with(2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("needs --token"), "{err}");
    let mut open = dir.spawn(&["serve", "--listen", "0.0.0.0:0", "--token", "t"]);
    open.wait_stderr("Serving on http://0.0.0.0:");
    open.signal(libc::SIGTERM);
    open.expect_exit(0);

    let mut s = Served::start(&dir, &["--token", "s3cr3t-token"]);
    assert_eq!(s.get_with("/healthz", None).0, 200);
    assert_eq!(s.get_with("/", None).0, 200, "the console's page holds no data");
    let (status, text) = s.get_with("/v1/topics", None);
    assert_eq!(status, 401);
    assert!(text.contains("Authorization: Bearer"), "{text}");
    assert_eq!(s.get_with("/v1/topics", Some("s3cr3t-tokeN")).0, 401);
    assert_eq!(s.get_with("/v1/topics", Some("s3cr3t")).0, 401);
    assert_eq!(s.get_with("/metrics", None).0, 401);
    assert_eq!(s.get("/v1/topics").0, 200);
    s.publish("a", json!({"payload": {}, "source": "s"}));
    let stream = serve_util::Sse::open(&s.addr, "/v1/subscribe?topic=a", None, None);
    assert_eq!(stream.status(), 401);
    s.process.signal(libc::SIGTERM);
    s.process.expect_exit(0);
}

#[test]
fn a_token_from_the_environment_is_not_logged() {
    let dir = Dir::new();
    let env = [("SEED_TOKEN", "env-s3cr3t"), ("RUST_LOG", "trace")];
    let mut s = Served::start_env(&dir, &[], &env);
    assert_eq!(s.get_with("/v1/topics", None).0, 401);
    s.publish("a", json!({"payload": {}, "source": "s"}));
    let (status, text) = s.get_with("/v1/topics", Some("wrong"));
    assert!(status == 401 && !text.contains("env-s3cr3t"), "{text}");
    s.process.signal(libc::SIGINT);
    s.process.expect_exit(0);
    let log = s.process.transcript();
    assert!(log.contains("/v1/topics"), "request logging was off:\n{log}");
    assert!(!log.contains("env-s3cr3t"), "the token was logged:\n{log}");
}

/// Collects `n` events from an SSE stream.
fn stream_events(stream: &serve_util::Sse, n: usize) -> Vec<Value> {
    stream.events(n).into_iter().map(|(_, e)| e).collect()
}

fn resume_loses_and_repeats_nothing(dir: &Dir) {
    let s = Served::start(dir, &[]);
    let mut published = Vec::new();
    for i in 0..6 {
        let topic = ["r.a", "r.b"][i % 2];
        published.push(s.publish(topic, json!({"payload": {"n": i}, "source": "s"})));
    }
    let first = s.stream("topic=r.*&from=beginning", None);
    first.listening();
    let got = first.events(4);
    let last_id = got.last().unwrap().0.clone();
    first.close();
    for i in 6..12 {
        let topic = ["r.a", "r.b", "r.c"][i % 3];
        published.push(s.publish(topic, json!({"payload": {"n": i}, "source": "s"})));
    }
    let second = s.stream("topic=r.*&from=beginning", Some(&last_id));
    second.listening();
    let rest = stream_events(&second, published.len() - 4);
    let mut delivered: Vec<Value> = got.into_iter().map(|(_, e)| e).collect();
    delivered.extend(rest);
    assert_eq!(per_topic(&delivered), per_topic(&published), "lost or repeated an event");
    // And live events keep coming after the resumed history, each once.
    let live = s.publish("r.b", json!({"payload": {"n": 99}, "source": "s"}));
    assert_eq!(stream_events(&second, 1)[0]["id"], live["id"]);

    // An id this server did not give is refused.
    assert_eq!(s.stream("topic=r.*", Some("no-token")).status(), 400);
    assert_eq!(s.stream("topic=x.*", Some(&last_id)).status(), 400, "a token of other topics");

    // A stream that dropped before any event resumes from the id of its `: listening`.
    let idle = s.stream("topic=q.*", None);
    let start_id = idle.listening();
    idle.close();
    let missed = s.publish("q.x", json!({"payload": {}, "source": "s"}));
    let back = s.stream("topic=q.*", Some(&start_id));
    back.listening();
    assert_eq!(stream_events(&back, 1)[0]["id"], missed["id"]);
}

#[test]
fn last_event_id_resume_loses_and_repeats_nothing() {
    resume_loses_and_repeats_nothing(&Dir::new());
}

#[test]
fn last_event_id_resume_loses_and_repeats_nothing_on_redis() {
    let redis = RedisServer::start();
    resume_loses_and_repeats_nothing(&Dir::with_redis(redis.url()));
}

/// A Python subscriber with the client: prints `ready`, then each event as JSON.
const PY_SUBSCRIBER: &str = r#"
import json, sys, threading
sys.path.insert(0, sys.argv[1])
from seed_client import EventBus
bus = EventBus(sys.argv[2])
done = threading.Event()
count = [0]
def on_event(e):
    print(json.dumps({"id": e.id, "topic": e.topic, "cursor": e.cursor}), flush=True)
    count[0] += 1
    if count[0] == int(sys.argv[4]):
        done.set()
unsubscribe = bus.subscribe(sys.argv[3], on_event)
print("ready", flush=True)
done.wait(60)
unsubscribe()
"#;

fn python_dir() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../clients/python").to_string()
}

#[test]
fn sse_clients_and_a_python_subscriber_get_what_seed_subscribe_gets() {
    let dir = Dir::new();
    let s = Served::start(&dir, &[]);
    let total = 60;
    let mut seed = dir.spawn(&[
        "subscribe",
        "--topic",
        "f.>",
        "--output",
        "ndjson",
        "--count",
        &total.to_string(),
    ]);
    seed.wait_listening();
    let a = s.stream("topic=f.%3E", None);
    let b = s.stream("topic=f.%3E", None);
    a.listening();
    b.listening();
    let mut py = Command::new("python3");
    py.args(["-c", PY_SUBSCRIBER, &python_dir(), &s.base, "f.>", &total.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    let mut py = py.spawn().expect("python3");
    let (py_tx, py_rx) = std::sync::mpsc::channel();
    let out = py.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = py_tx.send(line);
        }
    });
    assert_eq!(py_rx.recv_timeout(util::DEADLINE).expect("python ready"), "ready");
    // One store follower for the one pattern, however many streams read it.
    assert_eq!(s.metric("seed_stream_followers"), Some(1.0));
    assert_eq!(s.metric("seed_subscribers"), Some(3.0));

    for i in 0..total / 2 {
        s.publish(["f.a", "f.b.c", "f.d"][i % 3], json!({"payload": {"n": i}, "source": "s"}));
    }
    s.publish_batch("f.a", &(0..total / 2).map(|n| json!({"n": n})).collect::<Vec<_>>());
    dir.publish("g.other", "{}");

    let expected: Vec<Value> = seed.events(total);
    seed.expect_exit(0);
    let from_a = stream_events(&a, total);
    let from_b = stream_events(&b, total);
    let from_py: Vec<Value> = (0..total)
        .map(|_| {
            serde_json::from_str(&py_rx.recv_timeout(util::DEADLINE).expect("python event"))
                .unwrap()
        })
        .collect();
    assert_eq!(py.wait().unwrap().code(), Some(0));
    for (who, got) in [("sse a", &from_a), ("sse b", &from_b), ("python", &from_py)] {
        assert_eq!(
            per_topic(got),
            per_topic(&expected),
            "{who} got other events than seed subscribe"
        );
    }
    let cursors: BTreeMap<String, Value> =
        expected.iter().map(|e| (e["id"].to_string(), e["cursor"].clone())).collect();
    for e in from_a.iter().chain(&from_py) {
        assert_eq!(Some(&e["cursor"]), cursors.get(&e["id"].to_string()), "{e}");
    }
    let delivered = s.metric("seed_events_delivered_total{topic=\"f.a\"}").unwrap();
    assert!(delivered >= 2.0 * 45.0, "{delivered}");
}

#[test]
fn a_slow_stream_is_cut_off_without_delaying_the_others() {
    let dir = Dir::new();
    let s = Served::start(&dir, &["--stream-buffer", "2000", "--max-body", "4MiB"]);
    // Connects, and then does not read a byte of the stream until the end.
    let (slow, release) = s.held_stream("topic=s.%3E");
    let fast = s.stream("topic=s.%3E", None);
    fast.listening();
    wait_until("two streams", || s.metric("seed_subscribers") == Some(2.0));
    let filler = "x".repeat(2000);
    let batches = 12;
    for b in 0..batches {
        let payloads: Vec<Value> =
            (0..1000).map(|i| json!({"n": b * 1000 + i, "fill": filler})).collect();
        s.publish_batch("s.x", &payloads);
        // The fast stream gets each batch while the slow one holds on to its connection.
        let got = stream_events(&fast, 1000);
        assert_eq!(got.last().unwrap()["payload"]["n"], json!(b * 1000 + 999));
    }
    release.send(()).unwrap();
    // The slow one gets what fit in the buffers, then a final error event, then the end.
    let items = slow.until_end();
    let Some(Item::Error(error)) = items.last() else {
        panic!("the slow stream did not end with an error event: {:?}", items.last())
    };
    assert!(error["error"].as_str().unwrap().contains("behind"), "{error}");
    assert!(items.len() < batches * 1000);
    assert_eq!(s.metric("seed_streams_lagged_total"), Some(1.0));
}

#[test]
fn idle_streams_get_keep_alive_comments_and_cors_is_off_unless_asked() {
    let dir = Dir::new();
    let s = Served::start(&dir, &["--keep-alive-ms", "50"]);
    let stream = s.stream("topic=a", None);
    stream.listening();
    assert_eq!(stream.next(), Item::Comment);
    assert_eq!(stream.next(), Item::Comment);

    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let allowed = |s: &Served| {
        let response = agent
            .get(format!("{}/v1/topics", s.base))
            .header("Origin", "https://app.example")
            .call()
            .unwrap();
        response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(allowed(&s), None);
    let with_cors = Served::start(&dir, &["--cors", "https://app.example"]);
    assert_eq!(allowed(&with_cors).as_deref(), Some("https://app.example"));

    // History is compressed for clients that accept gzip.
    s.publish("a", json!({"payload": {}, "source": "s"}));
    let response = agent
        .get(format!("{}/v1/events", s.base))
        .header("Accept-Encoding", "gzip")
        .call()
        .unwrap();
    assert_eq!(
        response.headers().get("content-encoding").map(|v| v.to_str().unwrap()),
        Some("gzip")
    );
}

/// A Python subscriber whose callback waits on stdin at its first event.
const PY_STALLED: &str = r#"
import json, sys, threading
sys.path.insert(0, sys.argv[1])
from seed_client import EventBus
bus = EventBus(sys.argv[2])
done = threading.Event()
seen = []
def on_event(e):
    if not seen:
        sys.stdin.readline()
    seen.append(e.payload["n"])
    if len(seen) == int(sys.argv[3]):
        done.set()
unsubscribe = bus.subscribe("p.>", on_event)
print("ready", flush=True)
done.wait(120)
unsubscribe()
print(json.dumps(seen), flush=True)
"#;

#[test]
fn a_python_subscriber_cut_off_for_lagging_resumes_without_loss_or_repeats() {
    let dir = Dir::new();
    let s = Served::start(&dir, &["--stream-buffer", "100", "--max-body", "4MiB"]);
    let total = 12_000;
    let mut py = Command::new("python3")
        .args(["-c", PY_STALLED, &python_dir(), &s.base, &total.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut out = std::io::BufReader::new(py.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let filler = "x".repeat(2000);
    for b in 0..total / 1000 {
        let payloads: Vec<Value> =
            (0..1000).map(|i| json!({"n": b * 1000 + i, "fill": filler})).collect();
        s.publish_batch("p.x", &payloads);
    }
    // More than the socket buffers and the channel hold is waiting: let the callback go.
    std::io::Write::write_all(py.stdin.as_mut().unwrap(), b"go\n").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let seen: Vec<u64> = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(seen, (0..total as u64).collect::<Vec<_>>(), "lost or repeated events");
    assert_eq!(py.wait().unwrap().code(), Some(0));
    assert_eq!(s.metric("seed_streams_lagged_total"), Some(1.0), "the stream was never cut off");
}

#[test]
fn a_stop_signal_ends_the_streams_and_exits_0() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let dir = Dir::new();
        let mut s = Served::start(&dir, &[]);
        let stream = s.stream("topic=a", None);
        stream.listening();
        let from_start = s.stream("topic=a&from=beginning", None);
        from_start.listening();
        s.process.signal(signal);
        assert!(stream.until_end().is_empty());
        assert!(from_start.until_end().is_empty());
        s.process.expect_exit(0);
    }
}

#[test]
fn the_python_client_works_against_a_real_server() {
    let dir = Dir::new();
    let s = Served::start(&dir, &["--token", "py-token"]);
    let status = Command::new("python3")
        .args(["-m", "unittest", "-v", "test_seed_client"])
        .current_dir(python_dir())
        .env("SEED_TEST_URL", &s.base)
        .env("SEED_TEST_TOKEN", "py-token")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .status()
        .expect("python3");
    assert!(status.success(), "the Python client's tests failed");
}

/// Every state endpoint and its error codes, on any store: versions travel
/// in ETag and If-Match, a lost race is 412 naming the current version, a
/// create of an existing entity 409, and nothing is written on a rejected call.
fn states_round_trip(dir: &Dir) {
    let s = Served::start(dir, &["--keep-alive-ms", "200"]);
    let json_of = |text: &str| -> Value { serde_json::from_str(text).expect("a JSON body") };
    let lines = |text: &str| -> Vec<Value> { text.lines().map(&json_of).collect() };
    let create = r#"{"entity_id": "t-1", "updated_by": "fenrir", "data": {"title": "index"}}"#;
    let (status, etag, text) = s.call("POST", "/v1/state/task", &[], Some(create));
    assert_eq!((status, etag.as_deref()), (201, Some("\"1\"")), "{text}");
    let first = json_of(&text);
    assert_eq!(
        (first["entity_id"].as_str(), first["version"].as_u64(), first["status"].as_str()),
        (Some("t-1"), Some(1), Some("pending"))
    );
    assert_eq!(first["data"], json!({"title": "index"}));
    assert!(first["revision"].is_string(), "{first}");
    let (status, _, text) = s.call("POST", "/v1/state/task", &[], Some(create));
    assert_eq!(status, 409, "{text}");
    assert!(json_of(&text)["error"].as_str().unwrap().contains("already exists"), "{text}");

    // Rejected creates write nothing.
    for (body, says) in [
        ("nope", "not JSON"),
        ("[1]", "expected a JSON object"),
        (r#"{"entity_id": "t-9"}"#, "updated_by is missing"),
        (r#"{"entity_id": "t-9", "updated_by": "f", "status": "later"}"#, "not one of"),
        (r#"{"entity_id": "t-9", "updated_by": "f", "colour": 1}"#, "unknown field"),
        (r#"{"entity_id": "t-9", "updated_by": "f", "data": [1]}"#, "data must be a JSON object"),
        (r#"{"entity_id": "t-9", "updated_by": "f", "caused_by": "x"}"#, "caused_by"),
    ] {
        let (status, _, text) = s.call("POST", "/v1/state/task", &[], Some(body));
        assert_eq!(status, 400, "{body}: {text}");
        assert!(json_of(&text)["error"].as_str().unwrap().contains(says), "{body}: {text}");
    }
    let (status, _, text) =
        s.call("POST", "/v1/state/a.b", &[], Some(r#"{"entity_id": "x", "updated_by": "f"}"#));
    assert_eq!(status, 400, "{text}");
    let (status, _, text) = s.call("GET", "/v1/state/task/t-9", &[], None);
    assert_eq!(status, 404, "{text}");
    assert!(json_of(&text)["error"].as_str().unwrap().contains("task/t-9"), "{text}");

    // Compare-and-set updates.
    let (status, etag, text) = s.call("GET", "/v1/state/task/t-1", &[], None);
    assert_eq!((status, etag.as_deref()), (200, Some("\"1\"")), "{text}");
    let change = r#"{"updated_by": "odin", "status": "active", "merge": {"n": 1}}"#;
    let (status, _, text) = s.call("PUT", "/v1/state/task/t-1", &[], Some(change));
    assert_eq!(status, 428, "{text}");
    let (status, etag, text) =
        s.call("PUT", "/v1/state/task/t-1", &[("If-Match", "\"1\"")], Some(change));
    assert_eq!((status, etag.as_deref()), (200, Some("\"2\"")), "{text}");
    let second = json_of(&text);
    assert_eq!(second["data"], json!({"title": "index", "n": 1}));
    assert_eq!(
        (second["status"].as_str(), second["updated_by"].as_str()),
        (Some("active"), Some("odin"))
    );
    let (status, _, text) =
        s.call("PUT", "/v1/state/task/t-1", &[("If-Match", "\"1\"")], Some(change));
    assert_eq!(status, 412, "{text}");
    let message = json_of(&text)["error"].as_str().unwrap().to_string();
    assert!(message.contains("version 2") && message.contains("expected 1"), "{message}");
    for (headers, body, code) in [
        (&[("If-Match", "\"2\"")][..], r#"{"updated_by": "o", "data": {}, "merge": {}}"#, 400),
        (&[("If-Match", "\"2\"")][..], r#"{"status": "done"}"#, 400),
        (&[("If-Match", "\"2\"")][..], r#"{"updated_by": "o", "status": "later"}"#, 400),
        (&[("If-Match", "\"two\"")][..], r#"{"updated_by": "o"}"#, 400),
        (&[("If-Match", "\"2\"")][..], "{", 400),
    ] {
        let (status, _, text) = s.call("PUT", "/v1/state/task/t-1", headers, Some(body));
        assert_eq!(status, code, "{body}: {text}");
    }
    let (status, _, text) =
        s.call("PUT", "/v1/state/task/t-404", &[("If-Match", "\"1\"")], Some(change));
    assert_eq!(status, 404, "{text}");
    let (_, etag, text) = s.call("GET", "/v1/state/task/t-1", &[], None);
    assert_eq!(etag.as_deref(), Some("\"2\""), "the rejected changes wrote nothing: {text}");
    let (status, etag, text) = s.call("GET", "/v1/state/task/t-1?version=1", &[], None);
    assert_eq!((status, etag.as_deref()), (200, Some("\"1\"")), "{text}");
    assert_eq!(json_of(&text)["data"], json!({"title": "index"}));
    for bad in ["?version=0", "?version=x", "?colour=red"] {
        let (status, _, text) = s.call("GET", &format!("/v1/state/task/t-1{bad}"), &[], None);
        assert_eq!(status, 400, "{bad}: {text}");
    }

    // Lists by status, streamed as NDJSON.
    let other = r#"{"entity_id": "t-2", "updated_by": "fenrir", "status": "paused"}"#;
    assert_eq!(s.call("POST", "/v1/state/task", &[], Some(other)).0, 201);
    let (status, _, text) = s.call("GET", "/v1/state/task", &[], None);
    assert_eq!(status, 200, "{text}");
    let mut ids: Vec<String> =
        lines(&text).iter().map(|e| e["entity_id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    assert_eq!(ids, ["t-1", "t-2"]);
    let (_, _, text) = s.call("GET", "/v1/state/task?status=paused", &[], None);
    assert_eq!(lines(&text).len(), 1, "{text}");
    assert_eq!(lines(&text)[0]["entity_id"], "t-2");
    let (status, _, text) = s.call("GET", "/v1/state/task?status=later", &[], None);
    assert_eq!(status, 400, "{text}");
    let (_, _, text) = s.call("GET", "/v1/state/nothing", &[], None);
    assert_eq!(text, "", "a type without entities lists nothing");

    // A watch: the current states, `ready`, then each change as it happens.
    let watch = s.stream_at("/v1/state/task/watch", None);
    assert_eq!(watch.status(), 200, "{}", watch.head);
    assert!(watch.head.contains("text/event-stream"), "{}", watch.head);
    assert_eq!(watch.next(), Item::Comment);
    let mut initial = BTreeMap::new();
    for _ in 0..2 {
        match watch.next() {
            Item::Event(id, state) => {
                assert_eq!(Some(id.as_str()), state["revision"].as_str());
                initial.insert(
                    state["entity_id"].as_str().unwrap().to_string(),
                    state["version"].as_u64(),
                );
            }
            other => panic!("expected a current state, got {other:?}"),
        }
    }
    assert_eq!(initial, BTreeMap::from([("t-1".into(), Some(2)), ("t-2".into(), Some(1))]));
    assert!(matches!(watch.next(), Item::Named(kind, _) if kind == "ready"));
    let (status, _, _) = s.call(
        "PUT",
        "/v1/state/task/t-2",
        &[("If-Match", "\"1\"")],
        Some(r#"{"updated_by": "odin", "status": "active"}"#),
    );
    assert_eq!(status, 200);
    let changed = match watch.next() {
        Item::Event(id, state) => {
            assert_eq!(
                (state["entity_id"].as_str(), state["version"].as_u64()),
                (Some("t-2"), Some(2))
            );
            id
        }
        other => panic!("expected the change, got {other:?}"),
    };
    watch.close();

    // Deletes leave a tombstone; the history stays and versions continue on re-create.
    let (status, _, text) = s.call("DELETE", "/v1/state/task/t-1?updated_by=odin", &[], None);
    assert_eq!(status, 428, "{text}");
    let (status, _, text) = s.call("DELETE", "/v1/state/task/t-1", &[("If-Match", "\"2\"")], None);
    assert_eq!(status, 400, "who deletes is required: {text}");
    let (status, _, text) =
        s.call("DELETE", "/v1/state/task/t-1?updated_by=odin", &[("If-Match", "\"1\"")], None);
    assert_eq!(status, 412, "{text}");
    let (status, etag, text) = s.call(
        "DELETE",
        "/v1/state/task/t-1",
        &[("If-Match", "\"2\"")],
        Some(r#"{"updated_by": "odin"}"#),
    );
    assert_eq!((status, etag.as_deref()), (200, Some("\"3\"")), "{text}");
    assert_eq!(json_of(&text)["deleted"], json!(true));
    let (status, _, text) = s.call("GET", "/v1/state/task/t-1", &[], None);
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("deleted at version 3"), "{text}");
    let (status, _, text) = s.call("GET", "/v1/state/task/t-1/history", &[], None);
    assert_eq!(status, 200, "{text}");
    let versions: Vec<u64> = lines(&text).iter().map(|e| e["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, [1, 2, 3]);
    let (status, _, text) = s.call("GET", "/v1/state/task/t-404/history", &[], None);
    assert_eq!(status, 404, "{text}");
    let (status, etag, text) = s.call("POST", "/v1/state/task", &[], Some(create));
    assert_eq!((status, etag.as_deref()), (201, Some("\"4\"")), "{text}");

    // A watch from a revision gets the changes after it, with no current states first.
    let watch = s.stream_at(&format!("/v1/state/task/watch?from_revision={changed}"), None);
    assert_eq!(watch.next(), Item::Comment);
    let versions: Vec<(String, u64)> = (0..2)
        .map(|_| match watch.next() {
            Item::Event(_, state) => (
                state["entity_id"].as_str().unwrap().to_string(),
                state["version"].as_u64().unwrap(),
            ),
            other => panic!("expected a change, got {other:?}"),
        })
        .collect();
    assert_eq!(versions, [("t-1".to_string(), 3), ("t-1".to_string(), 4)]);
    watch.close();
    let (status, _, text) = s.call("GET", "/v1/state/task/watch?from_revision=soon", &[], None);
    assert_eq!(status, 400, "{text}");

    // Every change is an event on state.task, and counted as published.
    let changes = s.history("topic=state.task");
    assert_eq!(changes.len(), 6, "{changes:?}");
    assert_eq!(s.metric("seed_events_published_total{topic=\"state.task\"}"), Some(6.0));
}

#[test]
fn every_state_endpoint_and_error_code_on_the_file_store() {
    states_round_trip(&Dir::new());
}

#[test]
fn every_state_endpoint_and_error_code_on_redis() {
    let redis = RedisServer::start();
    states_round_trip(&Dir::with_redis(redis.url()));
}

/// `POST /v1/groups/{group}/fetch` as `name`: the events and their ack tokens.
fn group_fetch(s: &Served, group: &str, body: Value) -> Vec<Value> {
    let (status, _, text) =
        s.call("POST", &format!("/v1/groups/{group}/fetch"), &[], Some(&body.to_string()));
    assert_eq!(status, 200, "fetch {body}: {text}");
    let answer: Value = serde_json::from_str(&text).expect("a fetch answer");
    answer["events"].as_array().expect("events").clone()
}

fn group_call(s: &Served, group: &str, what: &str, body: Value) -> (u16, String) {
    let (status, _, text) =
        s.call("POST", &format!("/v1/groups/{group}/{what}"), &[], Some(&body.to_string()));
    (status, text)
}

#[test]
fn http_workers_share_a_group_with_acks_nacks_dead_letters_and_redrive() {
    http_workers(&Dir::new());
}

#[test]
fn http_workers_share_a_group_on_redis() {
    let redis = RedisServer::start();
    http_workers(&Dir::with_redis(redis.url()));
}

/// Two HTTP workers share a group; acks, nacks, in-progress, a poison event
/// dead-lettered and redriven, bad bodies, and a member let go after its ack wait.
fn http_workers(dir: &Dir) {
    let s = Served::start(dir, &[]);
    for n in 0..30 {
        s.publish(&format!("job.{}", n % 3), json!({"payload": {"n": n}, "source": "s"}));
    }
    let join = |member: &str, max: u64| json!({"topic": "job.>", "member": member, "max": max, "wait_ms": 2000, "start": "beginning"});
    // Two workers split what is there; nobody gets an event twice.
    let first = group_fetch(&s, "jobs", join("w1", 10));
    let second = group_fetch(&s, "jobs", join("w2", 10));
    assert_eq!((first.len(), second.len()), (10, 10));
    let number = |e: &Value| e["payload"]["n"].as_u64().unwrap();
    let token = |e: &Value| e["ack_token"].as_str().unwrap().to_string();
    let mut seen: Vec<u64> = first.iter().chain(&second).map(number).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 20, "no event went to both workers");
    assert!(first.iter().all(|e| e["deliveries"] == 1 && e["cursor"].is_string()));

    // Acks in one call; a nack comes back with its count; in-progress extends.
    let tokens: Vec<String> = first.iter().map(token).collect();
    let (status, text) = group_call(&s, "jobs", "ack", json!({ "ack_tokens": tokens }));
    assert_eq!((status, text.as_str()), (200, r#"{"acked":10}"#));
    let nacked = &second[0];
    let (status, text) = group_call(
        &s,
        "jobs",
        "nack",
        json!({"ack_token": token(nacked), "delay_ms": 0, "error": "try again"}),
    );
    assert_eq!(status, 200, "{text}");
    let (status, text) =
        group_call(&s, "jobs", "in-progress", json!({"ack_token": token(&second[1])}));
    assert_eq!(status, 200, "{text}");
    let rest: Vec<String> = second[1..].iter().map(token).collect();
    assert_eq!(group_call(&s, "jobs", "ack", json!({ "ack_tokens": rest })).0, 200);
    let mut handled: Vec<u64> = first.iter().chain(&second[1..]).map(number).collect();
    let mut redelivered = 0;
    wait_until("every event handled once", || {
        for e in group_fetch(&s, "jobs", join("w1", 50)) {
            if e["deliveries"].as_u64() > Some(1) {
                assert_eq!(number(&e), number(nacked));
                redelivered += 1;
            }
            handled.push(number(&e));
            assert_eq!(group_call(&s, "jobs", "ack", json!({"ack_token": token(&e)})).0, 200);
        }
        handled.len() >= 30
    });
    handled.sort();
    assert_eq!(handled, (0..30).collect::<Vec<_>>(), "each event handled exactly once");
    assert_eq!(redelivered, 1);
    let (_, groups) = s.get("/v1/groups");
    let groups: Value = serde_json::from_str(&groups).unwrap();
    let jobs = groups.as_array().unwrap().iter().find(|g| g["name"] == "jobs").expect("the group");
    assert_eq!(
        (jobs["in_flight"].as_u64(), jobs["waiting"].as_u64()),
        (Some(0), Some(0)),
        "{jobs}"
    );
    assert_eq!(jobs["redelivered"].as_u64(), Some(1), "{jobs}");
    assert_eq!(s.metric("seed_group_in_flight{group=\"jobs\"}"), Some(0.0));
    assert_eq!(s.metric("seed_group_acked_total{group=\"jobs\"}"), Some(30.0));
    assert_eq!(s.metric("seed_group_fetched_total{group=\"jobs\"}"), Some(31.0));
    assert_eq!(s.metric("seed_group_waiting{group=\"jobs\"}"), Some(0.0));
    assert_eq!(s.metric("seed_group_redelivered_total{group=\"jobs\"}"), Some(1.0));
    assert_eq!(s.metric("seed_group_members{group=\"jobs\"}"), Some(2.0), "w1 and w2 held");

    // A poison event is dead-lettered after its last delivery, then redriven.
    s.publish("poison.a", json!({"payload": {"bad": true}, "source": "s"}));
    let poison = json!({"topic": "poison.>", "member": "p", "max": 1, "wait_ms": 2000,
        "start": "beginning", "max_deliveries": 2, "backoff_ms": 0});
    for delivery in 1..=2 {
        let got = group_fetch(&s, "cleanup", poison.clone());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["deliveries"].as_u64(), Some(delivery));
        let nack = json!({"ack_token": token(&got[0]), "delay_ms": 0, "error": "bad payload"});
        assert_eq!(group_call(&s, "cleanup", "nack", nack).0, 200);
    }
    let letters = s.history("topic=dead.cleanup");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0]["payload"];
    assert_eq!(
        (letter["deliveries"].as_u64(), letter["error"].as_str(), letter["group"].as_str()),
        (Some(2), Some("bad payload"), Some("cleanup"))
    );
    assert_eq!(letter["topic"], "poison.a");
    assert_eq!(s.metric("seed_group_dead_lettered_total{group=\"cleanup\"}"), Some(1.0));
    let (status, text) = group_call(&s, "cleanup", "redrive", json!({}));
    assert_eq!(status, 200, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["redriven"], 1);
    let again = group_fetch(&s, "cleanup", poison.clone());
    assert_eq!(again.len(), 1, "the redriven event is handled again");
    assert_eq!(again[0]["payload"], json!({"bad": true}));

    // Bad input is refused and names what is wrong.
    for (group, what, body, says) in [
        ("cleanup", "fetch", json!({"member": "x"}), "topic is missing"),
        ("cleanup", "fetch", json!({"topic": "job.>", "max": 0}), "max must be"),
        ("jobs", "fetch", json!({"topic": "other.>", "member": "w1"}), "follows job.>"),
        ("cleanup", "ack", json!({}), "ack_token is missing"),
        ("cleanup", "ack", json!({"ack_token": "nonsense"}), "not a token"),
        (
            "cleanup",
            "nack",
            json!({"ack_token": token(&again[0]), "delay_ms": -1}),
            "delay_ms must be",
        ),
    ] {
        let (status, text) = group_call(&s, group, what, body.clone());
        assert_eq!(status, 400, "{what} {body}: {text}");
        assert!(text.contains(says), "{what} {body}: {text}");
    }
    // A member unused for its ack wait is let go: its token is refused with 409
    // and its event goes to the others.
    s.publish("short.a", json!({"payload": {"n": 1}, "source": "s"}));
    let short = |member: &str| {
        json!({"topic": "short.>", "member": member, "max": 1, "wait_ms": 2000,
            "start": "beginning", "ack_wait_ms": 300})
    };
    let held = group_fetch(&s, "brief", short("slow"));
    assert_eq!(held.len(), 1);
    let mut taken_over = Vec::new();
    wait_until("the slow member's event to go to another", || {
        taken_over = group_fetch(&s, "brief", short("fast"));
        !taken_over.is_empty()
    });
    assert_eq!(taken_over[0]["id"], held[0]["id"]);
    let (status, text) = group_call(&s, "brief", "ack", json!({"ack_token": token(&held[0])}));
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("member slow of group brief is gone"), "{text}");
}

#[test]
fn http_workers_share_an_exclusive_group_one_active_at_a_time() {
    http_exclusive(&Dir::new(), None);
}

#[test]
fn http_workers_share_an_exclusive_group_on_redis() {
    let redis = RedisServer::start();
    http_exclusive(&Dir::with_redis(redis.url()), Some(&redis));
}

/// Exclusive groups over HTTP: one member active, the other standing by
/// (no events, `active: false`); the standby takes over the events the
/// active one left unacked once it is let go; the group is exclusive in
/// `GET /v1/groups`; a shared fetch of it is refused. On Redis, a member
/// whose lock was taken over is let go with 409.
fn http_exclusive(dir: &Dir, redis: Option<&RedisServer>) {
    let s = Served::start(dir, &[]);
    for n in 0..10 {
        s.publish("ex.a", json!({"payload": {"n": n}, "source": "s"}));
    }
    let join = |member: &str, max: u64, wait_ms: u64| {
        json!({"topic": "ex.>", "member": member, "max": max, "wait_ms": wait_ms,
            "start": "beginning", "exclusive": true, "ack_wait_ms": 2000})
    };
    let fetch = |body: Value| -> (u16, Value) {
        let (status, _, text) =
            s.call("POST", "/v1/groups/solo/fetch", &[], Some(&body.to_string()));
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    };
    let (status, first) = fetch(join("w1", 4, 2000));
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["active"], true, "{first}");
    let first = first["events"].as_array().unwrap().clone();
    assert_eq!(first.len(), 4, "{first:?}");
    // w1 acks two at once (before its ack wait can pass) and keeps two.
    let number = |e: &Value| e["payload"]["n"].as_u64().unwrap();
    let token = |e: &Value| e["ack_token"].as_str().unwrap().to_string();
    let acked: Vec<String> = first[..2].iter().map(token).collect();
    assert_eq!(group_call(&s, "solo", "ack", json!({ "ack_tokens": acked })).0, 200);
    let (status, standby) = fetch(join("w2", 4, 200));
    assert_eq!(status, 200, "{standby}");
    assert_eq!((standby["active"].clone(), standby["events"].clone()), (json!(false), json!([])));
    let (_, groups) = s.get("/v1/groups");
    let groups: Value = serde_json::from_str(&groups).unwrap();
    let solo = groups.as_array().unwrap().iter().find(|g| g["name"] == "solo").expect("the group");
    assert_eq!(solo["exclusive"], true, "{solo}");
    assert!(solo["active"].as_str().is_some_and(|a| a.starts_with("w1")), "{solo}");
    let shared = json!({"topic": "ex.>", "member": "w3", "max": 1});
    let (status, refused) = fetch(shared);
    assert_eq!(status, 400, "{refused}");
    assert!(refused.to_string().contains("exclusive"), "{refused}");

    // w1 goes quiet: after its ack wait w2 becomes active and gets
    // everything w1 did not ack, the two it held first.
    let mut handled: Vec<u64> = first[..2].iter().map(number).collect();
    let mut again = Vec::new();
    wait_until("w2 to take over and handle the rest", || {
        let (status, answer) = fetch(join("w2", 10, 200));
        assert_eq!(status, 200, "{answer}");
        for e in answer["events"].as_array().unwrap() {
            if e["deliveries"].as_u64() > Some(1) {
                again.push(number(e));
            }
            handled.push(number(e));
            assert_eq!(group_call(&s, "solo", "ack", json!({"ack_token": token(e)})).0, 200);
        }
        handled.len() >= 10
    });
    handled.sort();
    assert_eq!(handled, (0..10).collect::<Vec<_>>(), "each event handled exactly once");
    again.sort();
    assert_eq!(again, first[2..].iter().map(number).collect::<Vec<_>>(), "w1's unacked ones");
    let (status, text) = group_call(&s, "solo", "ack", json!({"ack_token": token(&first[2])}));
    assert_eq!(status, 409, "{text}");

    let Some(redis) = redis else { return };
    // On Redis the lock has a time to live: once it is gone (as when its
    // holder's host goes silent), another member takes the group and the
    // old one is let go at its next fetch.
    let (status, idle) = fetch(join("w2", 1, 0));
    assert_eq!((status, idle["active"].clone()), (200, json!(true)), "{idle}");
    let cli = store_redis::testing::find_program("redis-cli").expect("redis-cli");
    let port = redis.port().to_string();
    // (w2's renewer may set the key again before w3 tries: then delete it again.)
    wait_until("w3 to take the group", || {
        Command::new(&cli)
            .args(["-p", &port, "DEL", "seed:lock:solo"])
            .output()
            .expect("running redis-cli");
        fetch(join("w3", 1, 200)).1["active"] == true
    });
    // w2 has not learnt of it yet (its lock's renewal comes every third of
    // the lock's time to live), but a fetch that gets events confirms the
    // lock first: the event goes back, w2 is let go, w3 gets it.
    s.publish("ex.a", json!({"payload": {"n": 10}, "source": "s"}));
    let (status, lost) = fetch(join("w2", 1, 2000));
    assert_eq!(status, 409, "{lost}");
    assert!(lost.to_string().contains("member w2 of group solo lost the group's lock"), "{lost}");
    let (status, standby) = fetch(join("w2", 1, 100));
    assert_eq!((status, standby["active"].clone()), (200, json!(false)), "{standby}");
    let (status, got) = fetch(join("w3", 1, 2000));
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["events"].as_array().map(Vec::len), Some(1), "{got}");
    assert_eq!(got["events"][0]["payload"]["n"], 10, "{got}");
    assert_eq!(got["events"][0]["deliveries"], 2, "w2's unconfirmed delivery counts: {got}");
}

#[test]
fn state_watches_are_bounded_and_a_closed_one_frees_its_place() {
    let dir = Dir::new();
    let s = Served::start(&dir, &["--max-state-watches", "1"]);
    let first = s.stream_at("/v1/state/task/watch", None);
    assert_eq!(first.status(), 200, "{}", first.head);
    let (status, _, text) = s.call("GET", "/v1/state/task/watch", &[], None);
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("--max-state-watches"), "{text}");
    first.close();
    wait_until("the closed watch's place to be free", || {
        let second = s.stream_at("/v1/state/task/watch", None);
        let ok = second.status() == 200;
        second.close();
        ok
    });
}
