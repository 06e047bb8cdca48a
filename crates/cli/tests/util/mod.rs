//! Helpers for black-box tests of the `seed` binary (after ripgrep's tests/util.rs).
//!
//! Every command runs with its own temporary events directory and a clean
//! environment; on failure the helpers print the command, its folder and its
//! output.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{self, Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a test waits for something that should happen soon.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A temporary events directory and the `seed` commands that use it.
pub struct Dir {
    dir: tempfile::TempDir,
    redis: Option<String>,
}

impl Dir {
    /// A new, empty events directory.
    pub fn new() -> Dir {
        let dir = tempfile::Builder::new().prefix("seed-cli-").tempdir().expect("temp dir");
        Dir { dir, redis: None }
    }

    /// Commands of this directory use the Redis store at `url` (given by `SEED_REDIS_URL`).
    pub fn with_redis(url: String) -> Dir {
        Dir { redis: Some(url), ..Dir::new() }
    }

    /// The events directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The store the commands of this directory use, opened in this process.
    pub fn store(&self) -> Arc<dyn seed_event::EventStore> {
        match &self.redis {
            Some(url) => Arc::new(store_redis::RedisStore::open(url).expect("open Redis")),
            None => {
                let dir = self.path().join("events");
                Arc::new(store_file::FileStore::open(dir).expect("open the file store"))
            }
        }
    }

    /// A `seed` command with these arguments, run in the events directory.
    pub fn command(&self, args: &[&str]) -> TestCommand {
        let mut cmd = process::Command::new(env!("CARGO_BIN_EXE_seed"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("SEED_REDIS_URL")
            .env_remove("RUST_LOG")
            .env_remove("SEED_TOKEN")
            .env("SEED_EVENTS_DIR", self.dir.path().join("events"))
            .stdin(Stdio::null());
        if let Some(url) = &self.redis {
            cmd.env("SEED_REDIS_URL", url);
        }
        TestCommand { cmd, dir: self.dir.path().to_path_buf() }
    }

    /// Runs `seed args…`, asserts it succeeded, and returns its stdout.
    pub fn stdout(&self, args: &[&str]) -> String {
        self.command(args).stdout()
    }

    /// Publishes `payload` to `topic` and returns the event's id.
    pub fn publish(&self, topic: &str, payload: &str) -> String {
        let out =
            self.stdout(&["publish", "--topic", topic, "--source", "test", "--payload", payload]);
        let id = out.trim().strip_prefix("Published event ").and_then(|r| r.split(' ').next());
        id.unwrap_or_else(|| panic!("unexpected publish output {out:?}")).to_string()
    }

    /// The stored events as JSON values (`history --json`).
    pub fn history(&self, extra: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec!["history", "--json"];
        args.extend_from_slice(extra);
        let out = self.stdout(&args);
        match serde_json::from_str::<serde_json::Value>(&out) {
            Ok(serde_json::Value::Array(events)) => events,
            other => panic!("history --json printed no array ({other:?}):\n{out}"),
        }
    }

    /// Starts `seed args…` in the background with piped stdio.
    pub fn spawn(&self, args: &[&str]) -> Running {
        self.spawn_env(args, &[])
    }

    /// Starts `seed args…` in the background as the leader of a process
    /// group of its own, as a shell runs a foreground job (see [`Running::signal_group`]).
    pub fn spawn_leader(&self, args: &[&str]) -> Running {
        self.spawn_with(args, &[], true)
    }

    /// Starts `seed args…` in the background with these environment variables set.
    pub fn spawn_env(&self, args: &[&str], env: &[(&str, &str)]) -> Running {
        self.spawn_with(args, env, false)
    }

    fn spawn_with(&self, args: &[&str], env: &[(&str, &str)], leader: bool) -> Running {
        let mut test = self.command(args);
        test.cmd.envs(env.iter().copied());
        if leader {
            std::os::unix::process::CommandExt::process_group(&mut test.cmd, 0);
        }
        test.cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let shown = test.describe();
        let mut child = test.cmd.spawn().unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        let (out_tx, out_rx) = mpsc::channel();
        let (err_tx, err_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let transcript = Arc::new(Mutex::new(String::new()));
        pump(stdout, out_tx, transcript.clone(), "stdout");
        pump(stderr, err_tx, transcript.clone(), "stderr");
        let stdin = child.stdin.take();
        Running { child, stdin, stdout: out_rx, stderr: err_rx, transcript, shown }
    }
}

/// Forwards each line of `from` to `to`, and keeps a transcript for failure messages.
fn pump(
    from: impl std::io::Read + Send + 'static,
    to: mpsc::Sender<String>,
    transcript: Arc<Mutex<String>>,
    name: &'static str,
) {
    thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { return };
            let _ = writeln!(transcript.lock().unwrap(), "[{name}] {line}");
            if to.send(line).is_err() {
                return;
            }
        }
    });
}

/// A `seed` command about to run.
pub struct TestCommand {
    /// The command; tests may add to it.
    pub cmd: process::Command,
    dir: PathBuf,
}

impl TestCommand {
    fn describe(&self) -> String {
        let args: Vec<String> =
            self.cmd.get_args().map(|a| format!("{:?}", a.to_string_lossy())).collect();
        format!("seed {} (in {})", args.join(" "), self.dir.display())
    }

    /// Runs it with `input` on stdin and returns its output, whatever its status.
    pub fn output_with(&mut self, input: &[u8]) -> process::Output {
        let shown = self.describe();
        self.cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = self.cmd.spawn().unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        let mut stdin = child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        let writer = thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let output = child.wait_with_output().unwrap_or_else(|e| panic!("{shown}: {e}"));
        let _ = writer.join();
        output
    }

    /// Runs it and returns its output, whatever its status.
    pub fn output(&mut self) -> process::Output {
        let shown = self.describe();
        self.cmd.output().unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
    }

    /// Runs it, asserts success, and returns stdout.
    pub fn stdout(&mut self) -> String {
        let output = self.output();
        self.expect_status(&output, 0);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Asserts that `output` ended with `code`, printing everything if not.
    pub fn expect_status(&self, output: &process::Output, code: i32) {
        if output.status.code() != Some(code) {
            panic!(
                "\n\n==========\ncommand: {}\nexpected exit status {code}, got {:?}\n\nstdout:\n{}\nstderr:\n{}\n==========\n",
                self.describe(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    /// Runs it, asserts it exits with `code`, and returns stderr.
    pub fn fails_with(&mut self, code: i32) -> String {
        let output = self.output();
        self.expect_status(&output, code);
        String::from_utf8_lossy(&output.stderr).into_owned()
    }
}

/// A `seed` process running in the background; killed when dropped.
pub struct Running {
    child: Child,
    /// Its standard input (dropped to close it).
    pub stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    transcript: Arc<Mutex<String>>,
    shown: String,
}

impl Running {
    fn fail(&self, what: &str) -> ! {
        panic!(
            "\n\n==========\ncommand: {}\n{what}\n\noutput so far:\n{}==========\n",
            self.shown,
            self.transcript.lock().unwrap()
        );
    }

    /// Waits for the `Listening on <pattern>` line on stderr.
    pub fn wait_listening(&self) {
        self.wait_stderr("Listening on ");
    }

    /// Every line it wrote so far, tagged `[stdout]` or `[stderr]`.
    pub fn transcript(&self) -> String {
        self.transcript.lock().unwrap().clone()
    }

    /// Waits for a stderr line starting with `prefix`, and returns it.
    pub fn wait_stderr(&self, prefix: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(_) => self.fail(&format!("no stderr line starting with {prefix:?} in time")),
            }
        }
    }

    /// A stderr line starting with `prefix` if one comes within `wait`.
    pub fn try_stderr(&self, prefix: &str, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// The next stdout line, waiting up to the deadline.
    pub fn line(&self) -> String {
        match self.stdout.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(_) => self.fail("expected another line on stdout"),
        }
    }

    /// The next `n` stdout lines.
    pub fn lines(&self, n: usize) -> Vec<String> {
        (0..n).map(|_| self.line()).collect()
    }

    /// The next `n` stdout lines parsed as events.
    pub fn events(&self, n: usize) -> Vec<serde_json::Value> {
        self.lines(n)
            .into_iter()
            .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| self.fail(&format!("{l:?}: {e}"))))
            .collect()
    }

    /// Whatever stdout lines arrive within `wait`.
    pub fn lines_within(&self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while let Ok(line) =
            self.stdout.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            out.push(line);
        }
        out
    }

    /// Every stdout line still to come, up to the end of the output (call
    /// it once the process exited).
    pub fn rest(&self) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        let mut out = Vec::new();
        loop {
            match self.stdout.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => out.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return out,
                Err(mpsc::RecvTimeoutError::Timeout) => self.fail("its stdout did not close"),
            }
        }
    }

    /// Sends `signal` to the process's whole group, as a terminal sends
    /// Ctrl-C to its foreground job (the process must lead its group: see
    /// [`Dir::spawn_leader`]).
    pub fn signal_group(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: sends a signal to the process group our child leads.
        unsafe {
            libc::kill(-pid, signal);
        }
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) to the process.
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: sends a signal to our own child.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// Waits for the process to exit and returns its status code; fails the
    /// test if it is still running at the deadline.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.code(),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => self.fail("did not exit in time"),
            }
        }
    }

    /// Waits for exit status `code`.
    pub fn expect_exit(&mut self, code: i32) {
        let got = self.wait_exit();
        if got != Some(code) {
            // Let the pumps catch up so the transcript is complete.
            thread::sleep(Duration::from_millis(50));
            self.fail(&format!("expected exit status {code}, got {got:?}"));
        }
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}
