//! Checks the release artefacts without installing anything: each is unpacked
//! into a temporary folder and what it holds is run there.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::deb::{debian_version, MAINTAINER};
use super::{Artefacts, COMPLETIONS, DOCS, VERSION};
use crate::process::{command, output, raw, report};

/// Unpacks and checks the tarball and the Debian package.
pub fn run(a: &Artefacts) -> Result<()> {
    let scratch = scratch_dir()?;
    let result = tarball(a, &scratch.join("tar")).and_then(|()| deb(a, &scratch.join("deb")));
    let _ = fs::remove_dir_all(&scratch);
    result
}

/// A fresh folder of this check under the system's temporary folder.
fn scratch_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("seed-release-check-{}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The checksum matches, the folder holds every file, and its `seed` runs.
fn tarball(a: &Artefacts, into: &Path) -> Result<()> {
    output(command("sha256sum", &a.dist).args(["--check", "--strict"]).arg(&a.sha256))?;
    fs::create_dir_all(into).with_context(|| format!("creating {}", into.display()))?;
    output(command("tar", into).arg("-xzf").arg(&a.tarball))?;
    let top = into.join(&a.stem);
    let mut expected: Vec<String> = vec!["seed".into(), "doc/seed.1".into()];
    expected.extend(COMPLETIONS.iter().map(|(_, name)| format!("complete/{name}")));
    expected.extend(DOCS.iter().map(|d| d.to_string()));
    for file in &expected {
        let path = top.join(file);
        let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len == 0 {
            bail!("{} has no {file} (or it is empty)", a.tarball.display());
        }
    }
    let binary = top.join("seed");
    let bytes = fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?;
    if bytes.windows(b".symtab".len()).any(|w| w == b".symtab") {
        bail!("{} is not stripped: it has a .symtab", binary.display());
    }
    version(&binary)?;
    man_page(&top.join("doc/seed.1"), &subcommands(&binary)?)
}

/// `dpkg-deb --info` and `--contents` say what they should, and the unpacked `seed` runs.
fn deb(a: &Artefacts, into: &Path) -> Result<()> {
    let info = output(command("dpkg-deb", &a.dist).arg("--info").arg(&a.deb))?;
    let fields = [
        "Package: seed".to_string(),
        format!("Version: {}", debian_version(VERSION)),
        format!("Architecture: {}", a.arch),
        format!("Maintainer: {MAINTAINER}"),
        "Depends: libc6 (>= ".to_string(),
        "Description: ".to_string(),
    ];
    for field in &fields {
        if !info.lines().any(|l| l.trim_start().starts_with(field.as_str())) {
            bail!("`dpkg-deb --info {}` has no {field:?}:\n{info}", a.deb.display());
        }
    }
    let contents = output(command("dpkg-deb", &a.dist).arg("--contents").arg(&a.deb))?;
    let installed = [
        "./usr/bin/seed",
        "./usr/share/bash-completion/completions/seed",
        "./usr/share/zsh/vendor-completions/_seed",
        "./usr/share/fish/vendor_completions.d/seed.fish",
        "./usr/share/man/man1/seed.1.gz",
        "./usr/share/man/man1/seed-publish.1.gz",
        "./usr/share/doc/seed/copyright",
    ];
    for path in installed {
        let line = contents.lines().find(|l| l.ends_with(&format!(" {path}")));
        match line {
            Some(l) if l.starts_with('-') && l.contains(" root/root ") => {}
            Some(l) => bail!("{path} in {} is not a file of root: {l}", a.deb.display()),
            None => bail!("{} does not install {path}:\n{contents}", a.deb.display()),
        }
    }
    fs::create_dir_all(into).with_context(|| format!("creating {}", into.display()))?;
    output(command("dpkg-deb", &a.dist).arg("-x").arg(&a.deb).arg(into))?;
    let binary = into.join("usr/bin/seed");
    version(&binary)?;
    man_page(&into.join("usr/share/man/man1/seed.1.gz"), &subcommands(&binary)?)
}

/// `seed --version` names this version (and, from a git checkout, the commit).
fn version(binary: &Path) -> Result<()> {
    let dir = binary.parent().unwrap_or(Path::new("/"));
    let printed = output(command(binary, dir).arg("--version"))?;
    if !printed.starts_with(&format!("seed {VERSION}")) {
        bail!("`{} --version` printed {printed:?}, not `seed {VERSION} …`", binary.display());
    }
    Ok(())
}

/// The subcommands `seed --help` lists, but `help`.
fn subcommands(binary: &Path) -> Result<Vec<String>> {
    let dir = binary.parent().unwrap_or(Path::new("/"));
    let help = output(command(binary, dir).arg("--help"))?;
    let names: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        bail!("`{} --help` lists no subcommands:\n{help}", binary.display());
    }
    Ok(names)
}

/// `man -l` renders the page, without warnings, naming every one of `subcommands`.
fn man_page(page: &Path, subcommands: &[String]) -> Result<()> {
    let dir = page.parent().unwrap_or(Path::new("/"));
    let mut cmd = command("man", dir);
    cmd.arg("-l").arg(page).env("MANPAGER", "cat").env("MANWIDTH", "80").env("LC_ALL", "C.UTF-8");
    let out = raw(&mut cmd)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !stderr.trim().is_empty() {
        bail!("`man -l` failed or warned{}", report(&cmd, &out));
    }
    for needed in ["SYNOPSIS", "seed"].into_iter().chain(subcommands.iter().map(String::as_str)) {
        if !text.contains(needed) {
            bail!("the man page does not mention {needed:?}{}", report(&cmd, &out));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("seed-check-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_tarball_that_does_not_match_its_checksum_fails_naming_the_command() {
        let dir = scratch("sha");
        let a = Artefacts {
            dist: dir.clone(),
            stem: "seed-x".into(),
            tarball: dir.join("seed-x.tar.gz"),
            sha256: dir.join("seed-x.tar.gz.sha256"),
            deb: dir.join("seed.deb"),
            arch: "amd64".into(),
        };
        fs::write(&a.tarball, "not the packed bytes").unwrap();
        fs::write(&a.sha256, format!("{}  seed-x.tar.gz\n", "0".repeat(64))).unwrap();
        let e = format!("{:#}", tarball(&a, &dir.join("out")).unwrap_err());
        let _ = fs::remove_dir_all(&dir);
        assert!(e.contains("sha256sum") && e.contains("FAILED") && e.contains("folder: "), "{e}");
    }

    #[test]
    fn a_binary_naming_another_version_fails() {
        let dir = scratch("version");
        let fake = dir.join("seed");
        fs::write(&fake, "#!/bin/sh\necho seed 0.0.0-other\n").unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        let e = format!("{:#}", version(&fake).unwrap_err());
        let _ = fs::remove_dir_all(&dir);
        assert!(e.contains("0.0.0-other"), "{e}");
    }

    #[test]
    fn a_man_page_without_the_subcommands_fails_naming_the_missing_one() {
        let dir = scratch("man");
        let page = dir.join("seed.1");
        fs::write(&page, ".TH seed 1\n.SH NAME\nseed \\- events\n.SH SYNOPSIS\nseed publish\n")
            .unwrap();
        let subcommands = ["publish".to_string(), "subscribe".to_string()];
        let e = format!("{:#}", man_page(&page, &subcommands).unwrap_err());
        let _ = fs::remove_dir_all(&dir);
        assert!(e.contains("does not mention \"subscribe\"") && e.contains("stdout:"), "{e}");
    }
}
