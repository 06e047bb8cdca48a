//! Child processes of the scenario runner: the runner re-executes itself with
//! `bench-scenario child <role> <json>`; a child says `ready`, may wait for
//! `go` on stdin, and ends with one `result <json>` line on stdout.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// A running child of the scenario runner, killed on drop if still running.
pub struct ChildProc {
    role: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl ChildProc {
    /// Starts the runner itself as `role` with `args`.
    pub fn spawn(role: &str, args: &Value) -> Result<ChildProc> {
        let exe = std::env::current_exe().context("finding the runner's own executable")?;
        let mut child = Command::new(&exe)
            .args(["bench-scenario", "child", role, &args.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} as {role}", exe.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("child {role} has no stdout"))?;
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(ChildProc { role: role.to_string(), child, stdin, lines })
    }

    /// Waits up to `timeout` for the line starting with `prefix`; returns the rest of it.
    pub fn expect(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.to_string());
                    }
                    eprintln!("[{}] {line}", self.role);
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!("child {} said no {prefix:?} within {timeout:?}", self.role)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    bail!(
                        "child {} ended ({}) before saying {prefix:?}",
                        self.role,
                        status.map_or("unknown status".to_string(), |s| s.to_string())
                    )
                }
            }
        }
    }

    /// Waits for `ready`.
    pub fn ready(&mut self, timeout: Duration) -> Result<()> {
        self.expect("ready", timeout).map(|_| ())
    }

    /// Sends one line to the child's stdin.
    pub fn send(&mut self, line: &str) -> Result<()> {
        let stdin =
            self.stdin.as_mut().ok_or_else(|| anyhow!("child {} has no stdin", self.role))?;
        writeln!(stdin, "{line}").with_context(|| format!("writing to child {}", self.role))?;
        stdin.flush().with_context(|| format!("writing to child {}", self.role))
    }

    /// Waits for the child's `result` line and parses it; then waits for it to exit.
    pub fn result<T: DeserializeOwned>(mut self, timeout: Duration) -> Result<T> {
        let text = self.expect("result ", timeout)?;
        let value = serde_json::from_str(&text)
            .with_context(|| format!("child {} gave an unreadable result {text:?}", self.role))?;
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("child {} exited with {status} after its result", self.role);
                }
                return Ok(value);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        bail!("child {} did not exit after its result", self.role)
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// In a child: tells the parent it is ready.
pub fn say_ready() {
    println!("ready");
    let _ = std::io::stdout().flush();
}

/// In a child: waits for the parent's `go` on stdin.
pub fn wait_for_go() -> Result<()> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("reading go from stdin")?;
    if line.trim() != "go" {
        bail!("expected go on stdin, got {line:?}");
    }
    Ok(())
}

/// In a child: hands the parent its result.
pub fn say_result(value: &impl Serialize) -> Result<()> {
    println!("result {}", serde_json::to_string(value)?);
    std::io::stdout().flush()?;
    Ok(())
}

/// Nanoseconds of `CLOCK_MONOTONIC`: one clock for every process of the machine.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A field of `/proc/self/status` in KiB (`VmHWM`: peak RSS, `VmRSS`: current RSS).
pub fn proc_status_kib(field: &str) -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("/proc/self/status has no {field}"))
}
