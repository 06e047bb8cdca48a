//! `seed serve`: the event bus over HTTP and Server-Sent Events, for agents
//! in any language, and a web console to watch it.
//!
//! The crate depends on the bus, `seed-event` and `seed-state` only: the
//! CLI picks the store and hands it over as an `Arc<dyn EventStore>`. The bus stays
//! synchronous; the server bridges it with `spawn_blocking`, a thread that
//! appends concurrent single-event publishes together (`appender.rs`) and, for live
//! streams, one bus subscription per distinct pattern feeding a tokio
//! broadcast channel that every client of that pattern reads (`sse.rs`).
//!
//! Modules: `args.rs` the command line and its checks, `app.rs` the router
//! and the server's life (bind, serve, shut down), `error.rs` the one mapping
//! of errors to HTTP statuses, `auth.rs` the bearer token, `events.rs`
//! publish and history, `groups.rs` work groups for HTTP workers (the server
//! holds a member per group and member label; `ack_token`s name them), `resume.rs` the SSE resume token, `sse.rs` live
//! streams and their fan-out, `states.rs` entity states (`ETag` and
//! `If-Match` carry versions), `metrics.rs` the Prometheus text, `console.rs`
//! the web console's files, `openapi.rs` the API description.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::sync::Arc;
//!
//! let bus = Arc::new(bus::EventBus::new(Arc::new(seed_event::MemoryStore::new())));
//! let args = serve::ServeArgs { listen: "127.0.0.1:0".parse()?, ..serve::ServeArgs::default() };
//! let runtime = tokio::runtime::Runtime::new()?;
//! let server = runtime.block_on(serve::Server::bind(bus, serve::Config::from_args(&args)?))?;
//! let addr = server.local_addr()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let serving = runtime.spawn(server.run(async move {
//!     let _ = stopped.await;
//! }));
//!
//! // Any HTTP client will do; here one request by hand.
//! let mut socket = std::net::TcpStream::connect(addr)?;
//! socket.write_all(b"GET /healthz HTTP/1.1\r\nHost: seed\r\nConnection: close\r\n\r\n")?;
//! let mut answer = String::new();
//! socket.read_to_string(&mut answer)?;
//! assert!(answer.starts_with("HTTP/1.1 200"));
//! assert!(answer.ends_with(r#"{"status":"ok"}"#));
//!
//! let _ = stop.send(());
//! runtime.block_on(serving)??;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod app;
mod appender;
mod args;
mod auth;
mod console;
mod error;
mod events;
mod groups;
mod metrics;
mod openapi;
mod resume;
mod sse;
mod states;

pub use app::{run, Server};
pub use args::{Config, ServeArgs};
