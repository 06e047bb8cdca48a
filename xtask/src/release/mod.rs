//! `cargo xtask release`: the artefacts people install, built into `target/dist` and checked.
//!
//! - `seed-<version>-<target>.tar.gz`: one folder `seed-<version>-<target>/` with
//!   the stripped `seed`, `complete/` (bash, zsh, fish), `doc/` (`seed.1` and a
//!   page per subcommand, from the clap definitions), README.md and the licences;
//!   beside it `seed-<version>-<target>.tar.gz.sha256` in `sha256sum` format.
//! - `seed_<version>_<arch>.deb` (see [`deb`]).
//!
//! Then [`check`] unpacks both into temporary folders, installing nothing, and
//! runs what they hold. `cargo xtask test` ends with all of it.

mod check;
mod deb;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::process::{command, output};

/// The workspace version, which `seed --version` also names.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The completion scripts: the shell given to `seed completions`, and the file name.
const COMPLETIONS: [(&str, &str); 3] =
    [("bash", "seed.bash"), ("zsh", "_seed"), ("fish", "seed.fish")];

/// Files of the workspace root shipped as they are.
const DOCS: [&str; 3] = ["README.md", "LICENSE-MIT", "LICENSE-APACHE"];

/// Where the release artefacts of a build are.
#[derive(Debug)]
pub struct Artefacts {
    /// `target/dist`.
    pub dist: PathBuf,
    /// `seed-<version>-<target>`, the tarball's name without `.tar.gz` and its top folder.
    pub stem: String,
    /// The tarball.
    pub tarball: PathBuf,
    /// The `.sha256` file beside the tarball.
    pub sha256: PathBuf,
    /// The Debian package.
    pub deb: PathBuf,
    /// The Debian architecture of the package.
    pub arch: String,
}

/// `cargo xtask release`: builds the artefacts, then checks them.
pub fn run(root: &Path) -> Result<()> {
    crate::ensure::programs(&crate::ensure::RELEASE)?;
    let started = Instant::now();
    let artefacts = build(root)?;
    eprintln!("release: built in {:.1}s", started.elapsed().as_secs_f64());
    let checked = Instant::now();
    check::run(&artefacts)?;
    eprintln!("release: checked in {:.1}s", checked.elapsed().as_secs_f64());
    for path in [&artefacts.tarball, &artefacts.sha256, &artefacts.deb] {
        println!("{}", path.display());
    }
    Ok(())
}

/// Builds the release binary and packs the tarball, its checksum and the Debian package.
fn build(root: &Path) -> Result<Artefacts> {
    crate::cargo(root, &["build", "--release", "--package", "cli", "--bin", "seed"])?;
    let target = host_triple(root)?;
    let arch = output(command("dpkg", root).arg("--print-architecture"))?.trim().to_string();
    let dist = crate::target_dir(root).join("dist");
    let stem = format!("seed-{VERSION}-{target}");
    let staging = dist.join(&stem);
    fresh_dir(&staging)?;

    let binary = staging.join("seed");
    copy(&crate::target_dir(root).join("release/seed"), &binary, 0o755)?;
    output(command("strip", &staging).arg(&binary))?;
    let complete = staging.join("complete");
    fs::create_dir(&complete).with_context(|| format!("creating {}", complete.display()))?;
    for (shell, name) in COMPLETIONS {
        let script = output(command(&binary, &staging).args(["completions", shell]))?;
        write(&complete.join(name), &script, 0o644)?;
    }
    let doc = staging.join("doc");
    output(command(&binary, &staging).arg("man-pages").arg(&doc))?;
    for name in DOCS {
        copy(&root.join(name), &staging.join(name), 0o644)?;
    }
    open_dirs(&staging)?;

    let tarball = dist.join(format!("{stem}.tar.gz"));
    let source_date = source_date(root);
    let mtime = format!("@{source_date}");
    output(
        command("tar", &dist)
            .args([
                "--sort=name",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--mtime",
                &mtime,
                "-czf",
            ])
            .arg(&tarball)
            .arg(&stem),
    )?;
    let sha256 = dist.join(format!("{stem}.tar.gz.sha256"));
    let sum = output(command("sha256sum", &dist).arg(format!("{stem}.tar.gz")))?;
    write(&sha256, &sum, 0o644)?;

    let deb =
        deb::build(&deb::Package { dist: &dist, staging: &staging, arch: &arch, source_date })?;
    Ok(Artefacts { dist, stem, tarball, sha256, deb, arch })
}

/// The host's target triple, from `rustc -vV`.
fn host_triple(root: &Path) -> Result<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let info = output(command(rustc, root).arg("-vV"))?;
    match info.lines().find_map(|l| l.strip_prefix("host: ")) {
        Some(host) => Ok(host.trim().to_string()),
        None => bail!("`rustc -vV` names no host:\n{info}"),
    }
}

/// The time stamped on packed files: `SOURCE_DATE_EPOCH`, else the commit's time, else now.
fn source_date(root: &Path) -> u64 {
    let from_env = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.trim().parse().ok());
    let from_git = || {
        output(command("git", root).args(["log", "-1", "--format=%ct"]))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    };
    from_env.or_else(from_git).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    })
}

/// Removes `dir` if it exists and creates it empty.
fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Gives every folder under `dir` (and `dir`) mode 0755, whatever the umask made them.
fn open_dirs(dir: &Path) -> Result<()> {
    set_mode(dir, 0o755)?;
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry.with_context(|| format!("reading {}", dir.display()))?.path();
        if path.is_dir() && !path.is_symlink() {
            open_dirs(&path)?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// Copies `from` to `to` and gives it `mode`.
fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    set_mode(to, mode)
}

/// Writes `to` and gives it `mode`.
fn write(to: &Path, contents: impl AsRef<[u8]>, mode: u32) -> Result<()> {
    fs::write(to, contents).with_context(|| format!("writing {}", to.display()))?;
    set_mode(to, mode)
}
