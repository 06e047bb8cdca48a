//! `seed`: the command line of the Seed event bus. It only parses and
//! prints; the work is done by the `bus` crate over the file store (or Redis
//! with `--redis`).
//!
//! Exit status: 0 success, 1 runtime failure (a state not found too), 2
//! usage or invalid input, 3 a state conflict.

mod args;
mod commands;
mod man;
mod output;
mod signal;
mod state;

use std::io;
use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::Parser;

use crate::args::Cli;
use crate::commands::Usage;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .format_target(false)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    match commands::run(cli) {
        Ok(status) => ExitCode::from(status),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seed: {}", one_line(&e));
            ExitCode::from(exit_status(&e))
        }
    }
}

/// Clap's own output for help, version and most usage errors; one line for a bad value.
fn clap_error(e: clap::Error) -> ExitCode {
    if matches!(e.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue) {
        let arg = match e.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(arg)) => arg.clone(),
            _ => "argument".to_string(),
        };
        let value = match e.get(ContextKind::InvalidValue) {
            Some(ContextValue::String(value)) => Some(value.clone()),
            _ => None,
        };
        let reason = match std::error::Error::source(&e) {
            Some(source) => source.to_string(),
            None => match (&value, e.get(ContextKind::ValidValue)) {
                (Some(value), Some(valid)) => format!("{value} is not one of {valid}"),
                (Some(value), None) => format!("{value:?} is not accepted"),
                _ => e.kind().to_string(),
            },
        };
        eprintln!("seed: {}", value_error(&arg, value.as_deref(), &reason));
        return ExitCode::from(2);
    }
    let status = e.exit_code();
    // Printing help or an error can only fail when stdout or stderr is gone.
    let _ = e.print();
    ExitCode::from(u8::try_from(status).unwrap_or(2))
}

/// `invalid --since "2026": <reason>`, or `--topic <T>: <reason>` when the reason quotes the value.
fn value_error(arg: &str, value: Option<&str>, reason: &str) -> String {
    match value {
        Some(value) if !reason.contains(&format!("{value:?}")) => {
            // `--since <TIME>` is shown as `--since`.
            let flag =
                if arg.starts_with("--") { arg.split(' ').next().unwrap_or(arg) } else { arg };
            format!("invalid {flag} {value:?}: {reason}")
        }
        _ => format!("{arg}: {reason}"),
    }
}

/// 3 for a state conflict, 2 for invalid input (ours, the bus's or the store's), 1 for everything else.
fn exit_status(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(failure) = cause.downcast_ref::<state::StateFailure>() {
            return failure.status();
        }
        if cause.downcast_ref::<Usage>().is_some() {
            return 2;
        }
        if cause.downcast_ref::<bus::Error>().is_some_and(bus::Error::is_invalid_input) {
            return 2;
        }
        // An unknown model id is a usage error of `seed models`.
        if cause.downcast_ref::<seed_event::Error>().is_some_and(|s| {
            matches!(
                s.kind(),
                seed_event::ErrorKind::InvalidInput | seed_event::ErrorKind::NotFound
            )
        }) {
            return 2;
        }
    }
    1
}

/// The error and its causes on one line, each said once (some errors repeat their cause).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}
