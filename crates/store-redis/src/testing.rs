//! [`RedisServer`]: a throwaway `redis-server` for tests and benchmarks.
//!
//! It runs Debian's `redis-server` from `PATH` on a free loopback port (never
//! 6379) in a temporary directory, waits until it answers `PING`, and kills it
//! on drop. Other crates use it through the `testing` feature:
//!
//! ```
//! use store_redis::testing::{RedisServer, ServerOptions};
//! let mut server = RedisServer::start_with(ServerOptions { persistent: true, ..ServerOptions::default() });
//! assert_ne!(server.port(), 6379);
//! assert!(server.url().starts_with("redis://127.0.0.1:"));
//! server.restart(); // same port, same data directory
//! ```

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use seed_event::StatePut;

use crate::RedisStore;

/// How the test server runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerOptions {
    /// Keep data across [`RedisServer::stop`]/[`RedisServer::restart`]: an
    /// append-only file synced on every write, so even a kill loses nothing acknowledged.
    pub persistent: bool,
    /// Require this password (`requirepass`); the URL then carries it.
    pub password: Option<String>,
}

/// Why a test server could not start: the command, its folder and its log.
#[derive(Debug)]
pub struct ServerError(String);

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServerError {}

/// A `redis-server` process on `127.0.0.1:<port>`, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    options: ServerOptions,
    dir: tempfile::TempDir,
}

/// How long a starting server may take to answer `PING`.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// The path of `redis-server` (or `redis-benchmark`, …) on `PATH`.
pub fn find_program(name: &str) -> Result<PathBuf, ServerError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()).ok_or_else(|| {
        ServerError(format!("{name} not found on PATH; install Debian's redis-server"))
    })
}

fn free_port() -> Result<u16, ServerError> {
    for _ in 0..20 {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| ServerError(format!("cannot bind a loopback port: {e}")))?;
        let port = listener.local_addr().map_err(|e| ServerError(e.to_string()))?.port();
        if port != 6379 {
            return Ok(port);
        }
    }
    Err(ServerError("found no free loopback port".to_string()))
}

/// Whether a server on `port` answers `PING` (with or without a password).
fn answers(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        // `+PONG`, or `-NOAUTH` from a server with a password; `-LOADING` is not ready yet.
        Ok(n) if n > 0 => buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"),
        _ => false,
    }
}

impl RedisServer {
    /// Starts a server without persistence or password; panics with the reason if it cannot.
    pub fn start() -> RedisServer {
        RedisServer::start_with(ServerOptions::default())
    }

    /// Starts a server with `options`; panics with the command, folder and log if it cannot.
    pub fn start_with(options: ServerOptions) -> RedisServer {
        match RedisServer::try_start_with(options) {
            Ok(server) => server,
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts a server with `options`, or says why not.
    pub fn try_start_with(options: ServerOptions) -> Result<RedisServer, ServerError> {
        let mut last = None;
        // Another process may take the port between our probe and the server's bind: retry.
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("seed-redis-")
                .tempdir()
                .map_err(|e| ServerError(format!("cannot make a temporary directory: {e}")))?;
            let port = free_port()?;
            let mut server = RedisServer { child: None, port, options: options.clone(), dir };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ServerError("redis-server did not start".to_string())))
    }

    fn command(&self) -> Result<Command, ServerError> {
        let mut cmd = Command::new(find_program("redis-server")?);
        let dir = self.dir.path();
        cmd.arg("--port").arg(self.port.to_string());
        cmd.args(["--bind", "127.0.0.1", "--daemonize", "no", "--save", ""]);
        cmd.arg("--dir").arg(dir);
        cmd.arg("--logfile").arg(self.log_path());
        if self.options.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        if let Some(p) = &self.options.password {
            cmd.arg("--requirepass").arg(p);
        }
        cmd.current_dir(dir).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        Ok(cmd)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn failure(&self, cmd: &Command, what: &str) -> ServerError {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        ServerError(format!(
            "redis-server {what}\ncommand: {cmd:?}\nfolder: {}\nlog:\n{}",
            self.dir.path().display(),
            tail.join("\n")
        ))
    }

    fn spawn(&mut self) -> Result<(), ServerError> {
        let mut cmd = self.command()?;
        let child = cmd.spawn().map_err(|e| self.failure(&cmd, &format!("did not run: {e}")))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if answers(self.port) {
                return Ok(());
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                return Err(self.failure(&cmd, &format!("exited with {status}")));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(
                    self.failure(&cmd, &format!("did not answer PING within {START_DEADLINE:?}"))
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `redis://[:password@]127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        match &self.options.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's data directory (and `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server (`SIGKILL`: no shutdown save; persistent servers lose nothing acknowledged).
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts the server again on the same port and directory; panics if it cannot.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.spawn() {
            panic!("restarting redis-server on port {}: {e}", self.port);
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisServer(127.0.0.1:{}, {})", self.port, self.dir.path().display())
    }
}

/// The command with which `store` applies `put` (an `EVALSHA` of the
/// script a store has loaded once it changed a state), made ahead of time:
/// a benchmark that sends a batch of these times the update script without
/// any work of the client per update.
pub fn state_put_command(store: &RedisStore, put: &StatePut<'_>) -> seed_event::Result<redis::Cmd> {
    put.validate()?;
    Ok(store.change_command(put))
}
