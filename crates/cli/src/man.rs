//! The man pages, generated from the clap definitions (`seed man-pages DIR`, hidden: for packagers).

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::args::Cli;

/// Writes `seed.1` and a `seed-<subcommand>.1` for every visible subcommand into `dir`.
pub fn write_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))
}
