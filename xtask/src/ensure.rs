//! Makes sure the programs the tests and the release need are installed.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Finds `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// A program a chore runs, and the Debian package that provides it.
#[derive(Debug, Clone, Copy)]
pub struct Need {
    /// The program looked for on `PATH`.
    pub program: &'static str,
    /// The Debian package installed when it is missing.
    pub package: &'static str,
}

/// `redis-server` and `redis-benchmark`: the tests start private servers on free ports.
pub const REDIS: [Need; 2] = [
    Need { program: "redis-server", package: "redis-server" },
    Need { program: "redis-benchmark", package: "redis-tools" },
];

/// Headless chromium and its WebDriver: the web console's browser test.
pub const BROWSER: [Need; 2] = [
    Need { program: "chromium", package: "chromium" },
    Need { program: "chromedriver", package: "chromium-driver" },
];

/// What `cargo xtask release` and its check run besides cargo (dpkg-deb, tar,
/// gzip and sha256sum come with every Debian system).
pub const RELEASE: [Need; 3] = [
    Need { program: "strip", package: "binutils" },
    Need { program: "dpkg-shlibdeps", package: "dpkg-dev" },
    Need { program: "man", package: "man-db" },
];

/// Ensures every program of `needs` is on PATH, installing the Debian
/// packages of the missing ones (one `apt-get update`, one `apt-get install
/// -y --no-install-recommends`) when running as root with apt available.
///
/// No package's service is started (a policy-rc.d denies it while installing).
pub fn programs(needs: &[Need]) -> Result<()> {
    let missing: Vec<Need> = needs.iter().copied().filter(|n| which(n.program).is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = missing.iter().map(|n| n.package).collect();
    packages.dedup();
    let programs: Vec<&str> = missing.iter().map(|n| n.program).collect();
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !is_root || which("apt-get").is_none() {
        bail!(
            "{} not on PATH; install {} (Debian: sudo apt-get install {}) and run again",
            programs.join(", "),
            packages.join(", "),
            packages.join(" ")
        );
    }
    eprintln!("xtask: installing Debian's {} for {}", packages.join(", "), programs.join(", "));
    let policy = PathBuf::from("/usr/sbin/policy-rc.d");
    let wrote_policy = !policy.exists();
    if wrote_policy {
        std::fs::write(&policy, "#!/bin/sh\nexit 101\n")
            .context("writing /usr/sbin/policy-rc.d")?;
        make_executable(&policy)?;
    }
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(&packages);
    let result = apt(&["update"]).and_then(|()| apt(&install));
    if wrote_policy {
        let _ = std::fs::remove_file(&policy);
    }
    result?;
    if let Some(still) = missing.iter().find(|n| which(n.program).is_none()) {
        bail!("{} is still not on PATH after installing {}", still.program, still.package);
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
