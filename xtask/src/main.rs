//! `cargo xtask`: the project's chores as code.
//!
//! - `cargo xtask test`: installs what the tests need (redis-server, man-db, dpkg-dev), then
//!   runs `cargo fmt --check`, `cargo clippy -D warnings`, `cargo test --workspace` and
//!   `cargo xtask release`.
//! - `cargo xtask model-cards`: renders the model-card docs from their data.
//! - `cargo xtask bench [--quick] [--only GROUPS]`: measures Seed against its targets and the
//!   machine's limits; prints a table and writes `target/seed-bench/summary.json`; a complete
//!   run also rewrites the README's performance table (`--readme`: from the last complete run).
//! - `cargo xtask release`: builds the tarball, its checksum and the Debian package of `seed`
//!   into `target/dist` and checks them without installing anything (see `release`).

/// The scenario runner hosts `seed serve` in process: it allocates as the `seed` binary does.
#[cfg(feature = "bench-runner")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod ensure;
mod model_cards;
mod process;
mod release;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test        fmt check, clippy -D warnings, every test and the release check (installs redis-server, man-db, dpkg-dev if needed)
  release     build target/dist/seed-<version>-<target>.tar.gz (+ .sha256) and seed_<version>_<arch>.deb, then check them
  bench       [--quick] [--no-criterion] [--only GROUPS] measure Seed against its targets and the machine's limits (target/seed-bench);
              a complete run also rewrites README.md's performance table; --readme rewrites it from the last complete run
  model-cards regenerate model-cards/gemma-4.md and MODEL_CARD.md from the card data";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let root = project_root();
    match args.first().map(String::as_str) {
        Some("test") => test(&root),
        Some("release") => release::run(&root),
        Some("bench") => bench::run(&root, &args[1..]),
        #[cfg(feature = "bench-runner")]
        Some("bench-scenario") => bench::runner::main(&args[1..]),
        Some("model-cards") => model_cards::generate(&root),
        Some("help" | "--help" | "-h") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command {other:?}\n{USAGE}"),
    }
}

/// The workspace root (the parent of this crate's folder).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// `$CARGO_TARGET_DIR` (relative to `root`), else `root/target`.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"))
}

/// Runs `cargo` with `args` in `root`, failing with the command line if it fails.
pub fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("could not run {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn test(root: &Path) -> Result<()> {
    let mut needs = ensure::REDIS.to_vec();
    needs.extend(ensure::RELEASE);
    needs.extend(ensure::BROWSER);
    ensure::programs(&needs)?;
    model_cards::check(root)?;
    cargo(root, &["fmt", "--all", "--", "--check"])?;
    // The bench runner is behind a feature so plain `cargo xtask` stays light; lint it too.
    cargo(
        root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--features",
            "xtask/bench-runner",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    cargo(root, &["test", "--workspace", "--no-fail-fast"])?;
    // What people install: built in release mode, unpacked and run.
    release::run(root)
}
