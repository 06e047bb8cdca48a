//! Single-event publishes racing on several keep-alive connections: each
//! accepted one lands once, in its connection's order; a rejected one
//! writes nothing; an `id` sent on every connection is stored once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use seed_event::{EventStore, MemoryStore, Query, Topic};

/// Sends one POST on `conn` and returns the status code.
fn post(conn: &mut BufReader<TcpStream>, addr: SocketAddr, body: &str) -> u16 {
    let request = format!(
        "POST /v1/topics/race.t/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.get_mut().write_all(request.as_bytes()).unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut length = 0;
    loop {
        line.clear();
        conn.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut answer = vec![0; length];
    conn.read_exact(&mut answer).unwrap();
    status
}

#[test]
fn concurrent_single_publishes_land_once_each_in_connection_order() {
    const CONNECTIONS: usize = 6;
    const EACH: usize = 60;
    const BAD_AT: usize = 30;
    let store = Arc::new(MemoryStore::new());
    let bus = Arc::new(bus::EventBus::new(store.clone()));
    let args = serve::ServeArgs { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime
        .block_on(serve::Server::bind(bus, serve::Config::from_args(&args).unwrap()))
        .unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = runtime.spawn(server.run(async move {
        let _ = stopped.await;
    }));

    let shared_id = "6f1c1d7e-8a51-4d37-9a55-3c1e3b0a9b7d";
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            std::thread::spawn(move || {
                let mut conn = BufReader::new(TcpStream::connect(addr).unwrap());
                for i in 0..EACH {
                    if c == 1 && i == BAD_AT {
                        let bad = r#"{"payload": [1], "source": "racer"}"#;
                        assert_eq!(post(&mut conn, addr, bad), 400);
                        continue;
                    }
                    if i == EACH / 2 {
                        let again = format!(
                            r#"{{"payload": {{"shared": true}}, "source": "racer", "id": "{shared_id}"}}"#
                        );
                        assert_eq!(post(&mut conn, addr, &again), 201);
                    }
                    let body = format!(r#"{{"payload": {{"c": {c}, "i": {i}}}, "source": "racer"}}"#);
                    assert_eq!(post(&mut conn, addr, &body), 201);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }

    let stored = store.query(&Query::topic(&Topic::new("race.t").unwrap())).unwrap();
    let shared = stored.iter().filter(|e| e.event.id.to_string() == shared_id).count();
    assert_eq!(shared, 1, "the event with an id was stored {shared} times");
    let mut seen = vec![Vec::new(); CONNECTIONS];
    for e in stored.iter().filter(|e| e.event.id.to_string() != shared_id) {
        let c = e.event.payload["c"].as_u64().unwrap() as usize;
        seen[c].push(e.event.payload["i"].as_u64().unwrap() as usize);
    }
    for (c, got) in seen.iter().enumerate() {
        let expected: Vec<usize> = (0..EACH).filter(|i| !(c == 1 && *i == BAD_AT)).collect();
        assert_eq!(got, &expected, "connection {c}'s events, in store order");
    }

    let _ = stop.send(());
    runtime.block_on(serving).unwrap().unwrap();
}
