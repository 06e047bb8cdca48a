//! The Debian package `seed_<version>_<arch>.deb`, built with `dpkg-deb --build
//! --root-owner-group` from the tarball's staging folder:
//!
//! - `/usr/bin/seed`
//! - `/usr/share/bash-completion/completions/seed`, `/usr/share/zsh/vendor-completions/_seed`,
//!   `/usr/share/fish/vendor_completions.d/seed.fish`
//! - `/usr/share/man/man1/seed.1.gz` and a page per subcommand
//! - `/usr/share/doc/seed/copyright` (machine-readable, both licences in full)
//!
//! `Depends` is what `dpkg-shlibdeps` finds the binary needs (libc6 and
//! libgcc-s1 with their minimum versions).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{copy, fresh_dir, open_dirs, write, VERSION};
use crate::process::{command, output};

/// The `Maintainer` field.
pub const MAINTAINER: &str = "Seed developers <seed@example.invalid>";

/// Where each file of the staging folder goes in the package.
const FILES: [(&str, &str, u32); 4] = [
    ("seed", "usr/bin/seed", 0o755),
    ("complete/seed.bash", "usr/share/bash-completion/completions/seed", 0o644),
    ("complete/_seed", "usr/share/zsh/vendor-completions/_seed", 0o644),
    ("complete/seed.fish", "usr/share/fish/vendor_completions.d/seed.fish", 0o644),
];

/// What the package is built from.
pub struct Package<'a> {
    /// `target/dist`, where the package is written.
    pub dist: &'a Path,
    /// The tarball's staging folder (binary, completions, man pages, licences).
    pub staging: &'a Path,
    /// The Debian architecture (`dpkg --print-architecture`).
    pub arch: &'a str,
    /// The time stamped on the packed files, seconds since the Unix epoch.
    pub source_date: u64,
}

/// The Debian version of a crate version: a pre-release sorts before its release (`1.0.0~rc.1`).
pub fn debian_version(version: &str) -> String {
    version.replacen('-', "~", 1)
}

/// Builds the package; returns its path.
pub fn build(p: &Package<'_>) -> Result<PathBuf> {
    let version = debian_version(VERSION);
    let name = format!("seed_{version}_{}", p.arch);
    let root = p.dist.join("deb").join(&name);
    fresh_dir(&root)?;
    for (from, to, mode) in FILES {
        let to = root.join(to);
        fs::create_dir_all(to.parent().unwrap_or(&root))
            .with_context(|| format!("creating the folder of {}", to.display()))?;
        copy(&p.staging.join(from), &to, mode)?;
    }
    let man1 = root.join("usr/share/man/man1");
    fs::create_dir_all(&man1).with_context(|| format!("creating {}", man1.display()))?;
    let doc = p.staging.join("doc");
    for entry in fs::read_dir(&doc).with_context(|| format!("reading {}", doc.display()))? {
        let page = entry.with_context(|| format!("reading {}", doc.display()))?.path();
        let Some(file) = page.file_name().and_then(|n| n.to_str()) else { continue };
        gzip(&page, &man1.join(format!("{file}.gz")))?;
    }
    let copyright = root.join("usr/share/doc/seed/copyright");
    fs::create_dir_all(copyright.parent().unwrap_or(&root))
        .with_context(|| format!("creating the folder of {}", copyright.display()))?;
    write(&copyright, copyright_file(p.staging)?, 0o644)?;

    let depends = depends(&root.join("usr/bin/seed"), p.dist)?;
    let control = root.join("DEBIAN/control");
    fs::create_dir_all(control.parent().unwrap_or(&root))
        .with_context(|| format!("creating the folder of {}", control.display()))?;
    write(&control, control_file(&version, p.arch, &depends, installed_size_kib(&root)?), 0o644)?;
    open_dirs(&root)?;

    let deb = p.dist.join(format!("{name}.deb"));
    let mut build = command("dpkg-deb", p.dist);
    // dpkg-deb clamps the files' times to it, as tar does with --mtime.
    build.env("SOURCE_DATE_EPOCH", p.source_date.to_string());
    output(build.args(["--build", "--root-owner-group"]).arg(&root).arg(&deb))?;
    Ok(deb)
}

/// Writes `from` gzipped (best compression, no name or time stamp) to `to`.
fn gzip(from: &Path, to: &Path) -> Result<()> {
    let file = fs::File::create(to).with_context(|| format!("creating {}", to.display()))?;
    let mut cmd = command("gzip", from.parent().unwrap_or(Path::new(".")));
    cmd.args(["-9", "-n", "-c", "--"]).arg(from).stdout(file);
    let out = crate::process::raw(&mut cmd)?;
    if !out.status.success() {
        bail!("gzip failed{}", crate::process::report(&cmd, &out));
    }
    super::set_mode(to, 0o644)
}

/// The control file.
pub fn control_file(version: &str, arch: &str, depends: &str, installed_kib: u64) -> String {
    format!(
        "Package: seed
Version: {version}
Architecture: {arch}
Maintainer: {MAINTAINER}
Installed-Size: {installed_kib}
Depends: {depends}
Section: utils
Priority: optional
Description: event bus for cooperating agent processes
 Seed lets cooperating agent processes publish events to topics, subscribe
 to topic patterns, query and replay history, and resume as durable
 consumers. It runs on append-only JSON-lines files on one machine, safe for
 many processes at once, or on Redis Streams across machines.
"
    )
}

/// The packaged binary's `Depends`, from `dpkg-shlibdeps` (which needs a `debian/control` to run in).
fn depends(binary: &Path, dist: &Path) -> Result<String> {
    let scratch = dist.join("deb/shlibdeps");
    fresh_dir(&scratch.join("debian"))?;
    write(
        &scratch.join("debian/control"),
        "Source: seed\n\nPackage: seed\nArchitecture: any\n",
        0o644,
    )?;
    let found = output(command("dpkg-shlibdeps", &scratch).arg("-O").arg(binary))?;
    let _ = fs::remove_dir_all(&scratch);
    match found.lines().find_map(|l| l.strip_prefix("shlibs:Depends=")) {
        Some(depends) if depends.contains("libc6") => Ok(depends.trim().to_string()),
        _ => bail!("dpkg-shlibdeps found no libc6 dependency of {}:\n{found}", binary.display()),
    }
}

/// The size of the installed files in KiB, as `Installed-Size` wants it.
fn installed_size_kib(dir: &Path) -> Result<u64> {
    fn bytes(dir: &Path) -> Result<u64> {
        let mut sum = 0;
        for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry.with_context(|| format!("reading {}", dir.display()))?.path();
            let meta = fs::symlink_metadata(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            sum += if meta.is_dir() { bytes(&path)? } else { meta.len() };
        }
        Ok(sum)
    }
    Ok(bytes(dir)?.div_ceil(1024))
}

/// `/usr/share/doc/seed/copyright` in the machine-readable format, with both licences in full.
fn copyright_file(staging: &Path) -> Result<String> {
    let read = |name: &str| {
        let path = staging.join(name);
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let indent = |text: String| {
        text.lines()
            .map(|l| if l.trim().is_empty() { " .".to_string() } else { format!(" {l}") })
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: seed

Files: *
Copyright: Seed developers
License: MIT or Apache-2.0

License: MIT
{}

License: Apache-2.0
{}
",
        indent(read("LICENSE-MIT")?),
        indent(read("LICENSE-APACHE")?)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pre_release_sorts_before_its_release_in_debian_versions() {
        assert_eq!(debian_version("0.1.0"), "0.1.0");
        assert_eq!(debian_version("1.0.0-rc.1"), "1.0.0~rc.1");
        assert_eq!(debian_version("1.0.0-rc-2"), "1.0.0~rc-2");
    }
}
