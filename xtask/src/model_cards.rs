//! `cargo xtask model-cards`: renders the Markdown model cards from
//! `model-cards/gemma-4.json`, and the staleness check `cargo xtask test` runs.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use model_cards::render;

/// The data every generated document comes from, relative to the root.
const SOURCE: &str = "model-cards/gemma-4.json";

/// Each generated document (absolute path) with what it must contain.
fn documents(root: &Path) -> Result<Vec<(PathBuf, String)>> {
    let source = root.join(SOURCE);
    let text =
        fs::read_to_string(&source).with_context(|| format!("reading {}", source.display()))?;
    let card = model_cards::parse(&text).map_err(|e| anyhow!("{}: {e}", source.display()))?;
    Ok(vec![
        (root.join("model-cards/gemma-4.md"), render::card_markdown(&card)),
        (root.join("MODEL_CARD.md"), render::overview_markdown(&card)),
    ])
}

/// Writes `model-cards/gemma-4.md` and `MODEL_CARD.md` from the JSON (only those that changed).
pub fn generate(root: &Path) -> Result<()> {
    for (path, content) in documents(root)? {
        if fs::read_to_string(&path).ok().as_deref() == Some(content.as_str()) {
            eprintln!("{} is up to date", path.display());
            continue;
        }
        fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Fails, naming each file, when a generated document differs from what the JSON renders to.
pub fn check(root: &Path) -> Result<()> {
    let mut stale = Vec::new();
    for (path, content) in documents(root)? {
        match fs::read_to_string(&path) {
            Ok(text) if text == content => {}
            Ok(_) => stale.push(format!("{} differs from {SOURCE}", path.display())),
            Err(e) => stale.push(format!("{} cannot be read ({e})", path.display())),
        }
    }
    if !stale.is_empty() {
        bail!(
            "the model cards are stale: {}; run `cargo xtask model-cards` and commit the result",
            stale.join("; ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
    }

    #[test]
    fn the_committed_cards_are_fresh() {
        if let Err(e) = check(&root()) {
            panic!("{e:#}");
        }
    }

    #[test]
    fn a_stale_or_missing_card_is_named_and_generate_fixes_it() {
        let dir = std::env::temp_dir().join(format!("seed-model-cards-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("model-cards")).unwrap();
        fs::copy(root().join(SOURCE), dir.join(SOURCE)).unwrap();

        let err = format!("{:#}", check(&dir).unwrap_err());
        assert!(err.contains("gemma-4.md cannot be read"), "{err}");
        assert!(err.contains("MODEL_CARD.md cannot be read"), "{err}");
        generate(&dir).unwrap();
        check(&dir).unwrap();

        fs::write(dir.join("MODEL_CARD.md"), "hand-edited\n").unwrap();
        let err = format!("{:#}", check(&dir).unwrap_err());
        assert!(err.contains("MODEL_CARD.md differs from model-cards/gemma-4.json"), "{err}");
        assert!(!err.contains("gemma-4.md differs"), "{err}");
        assert!(err.contains("run `cargo xtask model-cards`"), "{err}");

        // A card that contradicts itself is refused before anything is written.
        let json = fs::read_to_string(dir.join(SOURCE)).unwrap();
        fs::write(dir.join(SOURCE), json.replace("\"gb\": 14", "\"gb\": 7")).unwrap();
        let err = format!("{:#}", generate(&dir).unwrap_err());
        assert!(err.contains("cannot hold 25.2B parameters"), "{err}");
        assert_eq!(fs::read_to_string(dir.join("MODEL_CARD.md")).unwrap(), "hand-edited\n");
        let _ = fs::remove_dir_all(&dir);
    }
}
