//! The limits of the machine, measured on the file system of the events
//! directory: what plain system calls do per ~390-byte line.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::proc::{mono_ns, say_ready, say_result, ChildProc};

/// The size of one line, newline included, like one stored event.
pub const LINE_BYTES: usize = 390;

fn line() -> Vec<u8> {
    let mut l = vec![b'x'; LINE_BYTES - 1];
    l.push(b'\n');
    l
}

fn fresh(dir: &Path, name: &str) -> Result<(File, PathBuf)> {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    Ok((file, path))
}

/// A fresh file on the file system of the events directory, written in
/// ~390-byte lines by plain system calls; removed on drop. Each method
/// returns how long its `n` steps took.
pub struct Lines {
    file: File,
    path: PathBuf,
    line: Vec<u8>,
}

impl Lines {
    /// Creates (truncating) `dir/name`.
    pub fn create(dir: &Path, name: &str) -> Result<Lines> {
        let (file, path) = fresh(dir, name)?;
        Ok(Lines { file, path, line: line() })
    }

    fn timed(
        &mut self,
        n: usize,
        mut step: impl FnMut(&mut File, &[u8]) -> Result<()>,
    ) -> Result<Duration> {
        let start = Instant::now();
        for _ in 0..n {
            step(&mut self.file, &self.line)?;
        }
        Ok(start.elapsed())
    }

    /// One `write()` per line.
    pub fn write(&mut self, n: usize) -> Result<Duration> {
        self.timed(n, |f, l| Ok(f.write_all(l)?))
    }

    /// `flock(LOCK_EX)`, one `write()`, `flock(LOCK_UN)` per line.
    pub fn flock_write_unlock(&mut self, n: usize) -> Result<Duration> {
        self.timed(n, |f, l| {
            let fd = f.as_raw_fd();
            // SAFETY: flock on a file descriptor this value owns.
            if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
                bail!("flock: {}", std::io::Error::last_os_error());
            }
            f.write_all(l)?;
            // SAFETY: as above.
            if unsafe { libc::flock(fd, libc::LOCK_UN) } != 0 {
                bail!("unlock: {}", std::io::Error::last_os_error());
            }
            Ok(())
        })
    }

    /// `n` lines through a 64 KiB buffer (one `write()` per 64 KiB).
    pub fn buffered_64k(&mut self, n: usize) -> Result<Duration> {
        let start = Instant::now();
        let mut w = BufWriter::with_capacity(64 * 1024, &mut self.file);
        for _ in 0..n {
            w.write_all(&self.line)?;
        }
        w.flush()?;
        Ok(start.elapsed())
    }

    /// One `write()` and one `fdatasync()` per line.
    pub fn write_fdatasync(&mut self, n: usize) -> Result<Duration> {
        self.timed(n, |f, l| {
            f.write_all(l)?;
            Ok(f.sync_data()?)
        })
    }

    /// 1,000 lines in one `write()` then one `fdatasync()`, `batches` times.
    pub fn write_1000_fdatasync(&mut self, batches: usize) -> Result<Duration> {
        let block = self.line.repeat(1000);
        let start = Instant::now();
        for _ in 0..batches {
            self.file.write_all(&block)?;
            self.file.sync_data()?;
        }
        Ok(start.elapsed())
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Units per second of `n` units done in `d`.
pub fn per_second(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[derive(Serialize, Deserialize)]
struct Latencies {
    ns: Vec<u64>,
}

/// Cross-process latency of `count` appends seen by a reader blocked in
/// inotify in another process, one append every `gap`; milliseconds.
pub fn inotify_latency(dir: &Path, count: usize, gap: Duration) -> Result<Vec<f64>> {
    let (mut file, path) = fresh(dir, "limit-inotify")?;
    let mut child = ChildProc::spawn(
        "inotify-reader",
        &json!({"path": path.to_string_lossy(), "count": count}),
    )?;
    child.ready(Duration::from_secs(30))?;
    let pad = vec![b'x'; LINE_BYTES - 22];
    for _ in 0..count {
        let mut l = format!("{:020} ", mono_ns()).into_bytes();
        l.extend_from_slice(&pad);
        l.push(b'\n');
        file.write_all(&l)?;
        std::thread::sleep(gap);
    }
    let got: Latencies = child.result(Duration::from_secs(30))?;
    let _ = std::fs::remove_file(path);
    Ok(got.ns.into_iter().map(|ns| ns as f64 / 1e6).collect())
}

/// The child side of [`inotify_latency`]: block in `read()` on an inotify
/// descriptor watching the file, read the new lines, note when each arrived.
pub fn inotify_reader(args: &serde_json::Value) -> Result<()> {
    let path = args["path"].as_str().context("inotify-reader needs a path")?;
    let count = args["count"].as_u64().context("inotify-reader needs a count")? as usize;
    let mut file = File::open(path).with_context(|| format!("opening {path}"))?;
    // SAFETY: plain system calls; the descriptor is closed below.
    let ifd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if ifd < 0 {
        bail!("inotify_init1: {}", std::io::Error::last_os_error());
    }
    let cpath = std::ffi::CString::new(path)?;
    // SAFETY: `cpath` is a valid C string, `ifd` a valid inotify descriptor.
    if unsafe { libc::inotify_add_watch(ifd, cpath.as_ptr(), libc::IN_MODIFY) } < 0 {
        bail!("inotify_add_watch: {}", std::io::Error::last_os_error());
    }
    say_ready();
    let mut offset = 0u64;
    let mut pending = Vec::new();
    let mut out = Vec::with_capacity(count);
    let mut events = [0u8; 4096];
    let mut chunk = vec![0u8; 1 << 16];
    while out.len() < count {
        // SAFETY: `events` is a writable buffer of the given length.
        let n = unsafe { libc::read(ifd, events.as_mut_ptr().cast(), events.len()) };
        if n < 0 {
            bail!("reading inotify events: {}", std::io::Error::last_os_error());
        }
        file.seek(SeekFrom::Start(offset))?;
        loop {
            let got = file.read(&mut chunk)?;
            if got == 0 {
                break;
            }
            offset += got as u64;
            pending.extend_from_slice(&chunk[..got]);
        }
        let now = mono_ns();
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let sent: u64 = std::str::from_utf8(&pending[..20])?.parse()?;
            out.push(now.saturating_sub(sent));
            pending.drain(..=end);
        }
    }
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(ifd) };
    say_result(&Latencies { ns: out })
}
