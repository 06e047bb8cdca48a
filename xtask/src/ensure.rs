//! Makes sure the programs the tests need are installed.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Finds `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// Ensures `redis-server` and `redis-benchmark` are on PATH, installing
/// Debian's `redis-server` package when running as root with apt available.
///
/// The package's own service is not started (a policy-rc.d denies it while
/// installing): the tests start private servers on free ports.
pub fn redis_server() -> Result<()> {
    if which("redis-server").is_some() && which("redis-benchmark").is_some() {
        return Ok(());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !is_root || which("apt-get").is_none() {
        bail!("redis-server is not on PATH; install it (Debian: sudo apt-get install redis-server) and run again");
    }
    eprintln!("xtask: installing Debian's redis-server (the tests start their own servers)");
    let policy = PathBuf::from("/usr/sbin/policy-rc.d");
    let wrote_policy = !policy.exists();
    if wrote_policy {
        std::fs::write(&policy, "#!/bin/sh\nexit 101\n")
            .context("writing /usr/sbin/policy-rc.d")?;
        make_executable(&policy)?;
    }
    let result = apt(&["update"]).and_then(|()| {
        apt(&["install", "-y", "--no-install-recommends", "redis-server", "redis-tools"])
    });
    if wrote_policy {
        let _ = std::fs::remove_file(&policy);
    }
    result?;
    if which("redis-server").is_none() {
        bail!("redis-server is still not on PATH after installing it");
    }
    Ok(())
}

fn apt(args: &[&str]) -> Result<()> {
    eprintln!("$ apt-get {}", args.join(" "));
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("could not run apt-get")?;
    if !status.success() {
        bail!("`apt-get {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn make_executable(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}
