//! `seed`: the command line of the Seed event bus. It only parses and
//! prints; the work is done by the `bus` crate over the file store (or Redis
//! with `--redis`).
//!
//! Exit status: 0 success, 1 runtime failure (a state not found too), 2
//! usage or invalid input, 3 a state conflict.

/// mimalloc, not the system's malloc: `seed serve` allocates on its runtime's
/// threads and frees on others (the publish thread, the blocking pool), where
/// glibc's malloc spent about a fifth of the server's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,bus=info"))
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
    if let Some(line) = bad_value_line(&e) {
        eprintln!("seed: {line}");
        return ExitCode::from(2);
    }
    let status = e.exit_code();
    // Printing help or an error can only fail when stdout or stderr is gone.
    let _ = e.print();
    ExitCode::from(u8::try_from(status).unwrap_or(2))
}

/// The one line for a value clap or one of our parsers refused (naming the
/// argument); `None` for every other clap error.
fn bad_value_line(e: &clap::Error) -> Option<String> {
    if !matches!(e.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue) {
        return None;
    }
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.clone(),
        _ => "argument".to_string(),
    };
    let value = match e.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => Some(value.clone()),
        _ => None,
    };
    let reason = match std::error::Error::source(e) {
        Some(source) => source.to_string(),
        None => match (&value, e.get(ContextKind::ValidValue)) {
            (Some(value), Some(valid)) => format!("{value} is not one of {valid}"),
            (Some(value), None) => format!("{value:?} is not accepted"),
            _ => e.kind().to_string(),
        },
    };
    Some(value_error(&arg, value.as_deref(), &reason))
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every option that takes a value, in a command line that is valid without it:
    /// the words before the value, and the flag the value is given to.
    const VALUE_ARGS: &[(&[&str], &str)] = &[
        (&["subscribe", "--topic", "a"], "--timeout"),
        (&["subscribe", "--topic", "a"], "--give-up-after"),
        (&["subscribe", "--topic", "a"], "--from"),
        (&["subscribe", "--topic", "a"], "--after"),
        (&["subscribe", "--topic", "a"], "--group"),
        (&["subscribe", "--topic", "a", "--group", "g"], "--ack-wait"),
        (&["subscribe", "--topic", "a", "--group", "g"], "--max-deliveries"),
        (&["subscribe", "--topic", "a", "--group", "g"], "--max-in-flight"),
        (&["subscribe", "--topic", "a", "--group", "g"], "--ordered"),
        (&["subscribe", "--topic", "a", "--group", "g"], "--dead-letter"),
        (&["subscribe", "--topic", "a", "--group", "g"], "--backoff"),
        (&["subscribe", "--topic", "a", "--group", "g"], "--exec"),
        (&["subscribe", "--topic", "a", "--group", "g", "--exec", "true"], "--concurrency"),
        (&["subscribe", "--topic", "a", "--group", "g", "--exclusive"], "--lease-ttl"),
        (&["subscribe", "--topic", "a"], "--count"),
        (&["subscribe", "--topic", "a"], "--output"),
        (&["subscribe"], "--topic"),
        (&["history"], "--topic"),
        (&["history"], "--since"),
        (&["history"], "--until"),
        (&["history"], "--limit"),
        (&["history"], "--last"),
        (&["history", "--topic", "a"], "--after"),
        (&["replay", "--topic", "a"], "--since"),
        (&["replay", "--since", "1h"], "--topic"),
        (&["replay", "--topic", "a", "--since", "1h"], "--until"),
        (&["replay", "--topic", "a", "--since", "1h"], "--speed"),
        (&["publish", "--source", "s", "--payload", "{}"], "--topic"),
        (&["publish", "--topic", "a", "--payload", "{}"], "--source"),
        (&["publish", "--topic", "a", "--source", "s"], "--payload"),
        (&["publish", "--topic", "a", "--source", "s", "--payload", "{}"], "--metadata"),
        (&["publish", "--topic", "a", "--source", "s", "--payload", "{}"], "--timestamp"),
        (&["publish", "--topic", "a", "--source", "s", "--payload", "{}"], "--id"),
        (&["stats"], "--topic"),
        (&["clear"], "--topic"),
        (&["clear"], "--before"),
        (&["topics"], "--sync"),
    ];

    /// Values near what each option takes, and past its edges: durations with
    /// huge numbers, times at the ends of the calendar, cursors, names, JSON.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "-?[0-9]{1,25}(\\.[0-9]{0,4})?(ms|s|m|h|d|x|)",
            "[0-9]{4}-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9](\\.[0-9]{1,9})?(Z|[+-][0-2][0-9]:[0-5][0-9])?",
            "[0-9]{0,21}-?[0-9]{0,21}",
            "([a-z*>]{0,3}\\.?){0,4}(=[0-9]{1,3}-[0-9])?",
            "\\{\"[a-z]\": ?[0-9\\[\\]{}]{0,4}\\}?",
            "new|beginning|text|json|ndjson|never|always|batch|inf|NaN|-0|1e400",
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any value of any option parses or is refused with one line naming the option.
        #[test]
        fn every_refused_value_names_its_option(
            which in 0..VALUE_ARGS.len(),
            value in value(),
        ) {
            let (words, flag) = VALUE_ARGS[which];
            let mut argv = vec!["seed".to_string()];
            argv.extend(words.iter().map(|w| w.to_string()));
            argv.push(format!("{flag}={value}"));
            if let Err(e) = args::Cli::try_parse_from(&argv) {
                let line = bad_value_line(&e);
                prop_assert!(line.is_some(), "{argv:?}: not a bad value: {e}");
                let line = line.unwrap();
                prop_assert!(line.contains(flag), "{argv:?}: {line}");
                prop_assert!(!line.contains('\n'), "{argv:?}: {line:?}");
            }
        }
    }

    #[test]
    fn a_duration_past_the_clock_is_accepted_and_times_past_the_calendar_clamp() {
        let cli = args::Cli::try_parse_from([
            "seed",
            "subscribe",
            "--topic",
            "a",
            "--timeout",
            "10000000000000000000s",
        ])
        .unwrap();
        let args::Command::Subscribe(sub) = cli.command else { panic!("a subscribe command") };
        assert_eq!(sub.timeout, Some(std::time::Duration::from_secs(10_000_000_000_000_000_000)));
        let cli = args::Cli::try_parse_from(["seed", "clear", "--before", "99999999999999d"]);
        let args::Command::Clear(clear) = cli.unwrap().command else { panic!("a clear command") };
        assert_eq!(clear.before, Some(seed_event::Timestamp::MIN));
    }
}
