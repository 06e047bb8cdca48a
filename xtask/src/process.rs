//! Running the programs a chore needs, with failures that say what ran, where, and what it said
//! (after ripgrep's tests/util.rs).

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

/// Runs `cmd` to completion and returns its stdout; fails with the command,
/// its folder and its output if it cannot start or exits non-zero.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = raw(cmd)?;
    if !out.status.success() {
        bail!("command failed{}", report(cmd, &out));
    }
    String::from_utf8(out.stdout).with_context(|| format!("{cmd:?} printed something not UTF-8"))
}

/// Runs `cmd` to completion and returns what it did, whatever its status.
pub fn raw(cmd: &mut Command) -> Result<Output> {
    cmd.output().with_context(|| format!("could not run {cmd:?} in {}", folder(cmd)))
}

/// What a command did, for the message of a check it failed: the command,
/// its folder, its exit status and both of its outputs.
pub fn report(cmd: &Command, out: &Output) -> String {
    format!(
        "\n\ncommand: {cmd:?}\nfolder: {}\nstatus: {}\n\nstdout:\n{}\nstderr:\n{}\n",
        folder(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    )
}

fn folder(cmd: &Command) -> String {
    match cmd.get_current_dir() {
        Some(dir) => dir.display().to_string(),
        None => std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|_| "(unknown)".to_string()),
    }
}

/// A command for `program` run in `dir`.
pub fn command(program: impl AsRef<std::ffi::OsStr>, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir);
    cmd
}
