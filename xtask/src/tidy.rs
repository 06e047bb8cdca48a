//! Repository rules, checked by ordinary `#[test]`s so `cargo test` enforces them.

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};

    use crate::project_root;

    /// Every file under `dir` whose name ends with `ext`, skipping `target` and hidden folders.
    fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(dir) else { return out };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if name == "target" || name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                out.extend(files(&path, ext));
            } else if name.ends_with(ext) {
                out.push(path);
            }
        }
        out
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    fn manifests() -> Vec<PathBuf> {
        let root = project_root();
        files(&root, "Cargo.toml").into_iter().filter(|p| p != &root.join("Cargo.toml")).collect()
    }

    #[test]
    fn every_crate_opts_into_workspace_lints() {
        for manifest in manifests() {
            let text = read(&manifest);
            assert!(
                text.contains("[lints]\nworkspace = true"),
                "{} must opt into the workspace lints with `[lints] workspace = true`",
                manifest.display()
            );
        }
    }

    /// ARCHITECTURE.md promises that public error enums and configuration
    /// structs are `#[non_exhaustive]`, so adding a field or variant is not a
    /// breaking change.
    #[test]
    fn public_errors_and_configs_are_non_exhaustive() {
        let root = project_root();
        let mut checked = 0;
        for file in files(&root.join("crates"), ".rs") {
            if file.components().any(|c| c.as_os_str() == "tests" || c.as_os_str() == "benches") {
                continue;
            }
            let text = read(&file);
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let Some(name) = line
                    .strip_prefix("pub struct ")
                    .or_else(|| line.strip_prefix("pub enum "))
                    .and_then(|rest| rest.split([' ', '<', '{', '(']).next())
                else {
                    continue;
                };
                if !(name.ends_with("Config") || name == "Error" || name == "ErrorKind") {
                    continue;
                }
                checked += 1;
                let attributes = lines[..i]
                    .iter()
                    .rev()
                    .take_while(|l| l.starts_with("#[") || l.starts_with("///"));
                assert!(
                    attributes.clone().any(|l| l.trim() == "#[non_exhaustive]"),
                    "{}:{}: `{name}` must be #[non_exhaustive]",
                    file.display(),
                    i + 1
                );
            }
        }
        assert!(checked >= 9, "found only {checked} public errors and configurations");
    }

    #[test]
    fn no_stubs_or_hidden_tests() {
        let banned = [
            concat!("todo", "!("),
            concat!("unimplemented", "!("),
            concat!("#[", "ignore", "]"),
            concat!("#[", "should_panic"),
            concat!("dbg", "!("),
        ];
        for file in files(&project_root(), ".rs") {
            let text = read(&file);
            for needle in banned {
                assert!(!text.contains(needle), "{} contains {needle}", file.display());
            }
        }
    }

    #[test]
    fn every_library_opens_with_docs_and_an_example() {
        for manifest in manifests() {
            let dir = manifest.parent().unwrap();
            let lib = [dir.join("src/lib.rs"), dir.join("lib.rs")].into_iter().find(|p| p.exists());
            let Some(lib) = lib else { continue };
            let text = read(&lib);
            assert!(
                text.starts_with("//!"),
                "{} must open with a `//!` doc saying what it is for",
                lib.display()
            );
            let docs: String =
                text.lines().take_while(|l| l.starts_with("//!")).collect::<Vec<_>>().join("\n");
            assert!(docs.contains("```"), "{} must open with an example that runs", lib.display());
        }
    }

    #[test]
    fn readme_opens_with_the_two_commands_and_ci_runs_the_test_one() {
        let root = project_root();
        let readme = read(&root.join("README.md"));
        let head: String = readme.lines().take(40).collect::<Vec<_>>().join("\n");
        assert!(
            head.contains("cargo run -p cli --"),
            "README must open with the command that runs Seed on the file store"
        );
        assert!(head.contains("cargo xtask test"), "README must open with `cargo xtask test`");
        let ci = read(&root.join(".ci/run"));
        assert!(ci.contains("cargo xtask test"), ".ci/run must call the README's test command");
    }

    #[test]
    fn readme_performance_table_has_the_lines_cargo_xtask_bench_writes() {
        use crate::bench::readme::{is_generic, labels, END, START};
        let readme = read(&project_root().join("README.md"));
        let (Some(start), Some(end)) = (readme.find(START), readme.find(END)) else {
            panic!("README.md must hold {START} and {END} around its performance table");
        };
        assert!(start < end, "README.md has {END} before {START}");
        let found: Vec<&str> = readme[start..end]
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| scenario |"))
            .filter_map(|l| l.strip_prefix("| ")?.split(" | ").next())
            // The lines of a run's `groups: ...` rows come with the run.
            .filter(|label| !is_generic(label))
            .collect();
        assert_eq!(
            found,
            labels(),
            "README.md's performance table and xtask/src/bench/readme.rs differ"
        );
    }

    #[test]
    fn architecture_names_every_crate() {
        let root = project_root();
        let arch = read(&root.join("ARCHITECTURE.md"));
        for manifest in manifests() {
            let dir = manifest
                .parent()
                .unwrap()
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .to_string();
            assert!(
                arch.contains(&format!("`{dir}`")),
                "ARCHITECTURE.md must describe `{dir}` in its code map"
            );
        }
    }
}
