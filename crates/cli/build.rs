//! Build script of `seed`: puts the commit the binary is built from into
//! `seed --version` (`seed 0.1.0 (abc1234 2026-12-05)`, `abc1234-dirty` when
//! the sources differ from that commit).
//!
//! It asks `git`; outside a git checkout of this workspace (a source tarball),
//! or when git is missing or fails, the version is the bare crate version. It
//! never fails the build.
//!
//! It reruns when HEAD moves (`HEAD`, the branch's ref, `packed-refs`) and when
//! the sources of the build change (`crates/`, `model-cards/`, `Cargo.toml`,
//! `Cargo.lock`, the paths the `-dirty` check looks at), and at no other time.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The paths, relative to the workspace root, whose changes make a build `-dirty`.
const SOURCES: [&str; 4] = ["crates", "model-cards", "Cargo.toml", "Cargo.lock"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let full = match commit(&manifest_dir) {
        Some(commit) => format!("{version} ({commit})"),
        None => version,
    };
    println!("cargo:rustc-env=SEED_VERSION={full}");
}

/// `abc1234 2026-12-05` (with `-dirty` after the hash when the sources
/// differ from it), or `None` outside a git checkout of this workspace.
fn commit(manifest_dir: &Path) -> Option<String> {
    // crates/cli → the workspace root.
    let root = manifest_dir.parent()?.parent()?.canonicalize().ok()?;
    let paths = git(
        &root,
        &[
            "rev-parse",
            "--path-format=absolute",
            "--git-dir",
            "--git-common-dir",
            "--show-toplevel",
        ],
    )?;
    let mut lines = paths.lines().map(PathBuf::from);
    let (git_dir, common_dir, top) = (lines.next()?, lines.next()?, lines.next()?);
    // A source tarball unpacked inside some other repository is not a checkout of ours.
    if top.canonicalize().ok()? != root {
        return None;
    }
    watch(&git_dir.join("HEAD"));
    if let Some(branch) = git(&root, &["symbolic-ref", "-q", "HEAD"]) {
        let loose = common_dir.join(branch.trim());
        if loose.exists() {
            watch(&loose);
        } else if let Some(parent) = loose.parent().filter(|p| p.exists()) {
            // A packed ref becomes a loose one when the branch moves.
            watch(parent);
        }
    }
    for shared in ["packed-refs", "reftable"] {
        let path = common_dir.join(shared);
        if path.exists() {
            watch(&path);
        }
    }
    for source in SOURCES {
        let path = root.join(source);
        if path.exists() {
            watch(&path);
        }
    }
    let described = git(&root, &["log", "-1", "--format=%h %cs", "HEAD"])?;
    let (hash, date) = described.trim().split_once(' ')?;
    let mut status = vec!["status", "--porcelain", "--"];
    status.extend(SOURCES);
    let dirty = !git(&root, &status)?.trim().is_empty();
    Some(format!("{hash}{} {date}", if dirty { "-dirty" } else { "" }))
}

fn watch(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}

/// The stdout of `git args…` run in `dir`, or `None` if git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        // `git status` would otherwise refresh the index as a side effect.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8(output.stdout).ok()
}
