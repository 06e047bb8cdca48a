//! `seed serve`: the event bus over HTTP and Server-Sent Events, for agents
//! in any language, and a web console to watch it.
//!
//! The crate depends on the bus and `seed-event` only: the CLI picks the
//! store and hands it over as an `Arc<dyn EventStore>`. The bus stays
//! synchronous; the server bridges it with `spawn_blocking` and, for live
//! streams, one bus subscription per distinct pattern feeding a tokio
//! broadcast channel that every client of that pattern reads (`sse.rs`).
//!
//! Modules: `args.rs` the command line and its checks, `app.rs` the router
//! and the server's life (bind, serve, shut down), `error.rs` the one mapping
//! of errors to HTTP statuses, `auth.rs` the bearer token, `events.rs`
//! publish and history, `resume.rs` the SSE resume token, `sse.rs` live
//! streams and their fan-out, `metrics.rs` the Prometheus text, `console.rs`
//! the web console's files, `openapi.rs` the API description.

mod app;
mod args;
mod auth;
mod console;
mod error;
mod events;
mod metrics;
mod openapi;
mod resume;
mod sse;

pub use app::{run, Server};
pub use args::{Config, ServeArgs};
