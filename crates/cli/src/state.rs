//! `seed state …`: versioned entity states, over `seed_state::StateStore`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use seed_event::{parse_json_object, Cursor, ErrorKind, EventStore, JsonObject};
use seed_state::{Change, NewState, StateStore, Status, WatchEvent, WatchFrom};

use crate::signal;

/// The state commands.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Create an entity at version 1 (after a delete: the version after the tombstone's)
    #[command(after_help = "Exit status 3 if it exists (conflict: TYPE/ID already exists).\n\n\
Example:\n  seed state create task t-42 --by fenrir --data '{\"title\": \"index\"}'")]
    Create(CreateArgs),
    /// Print an entity's current state (or one kept version)
    #[command(disable_version_flag = true)]
    Get(GetArgs),
    /// Change an entity if it is at the expected version
    #[command(after_help = "Exit status 3 if it is at another version \
(conflict: TYPE/ID is at version M, expected N): read it again and retry.\n\n\
Example:\n  seed state update task t-42 --expect-version 1 --by odin --status active")]
    Update(UpdateArgs),
    /// Delete an entity at the expected version (a tombstone; its history stays)
    Delete(DeleteArgs),
    /// Print the kept versions of an entity, oldest first, one JSON line each
    History(EntityArgs),
    /// Print the current state of every entity of a type, one JSON line each
    List(ListArgs),
    /// Print the current states, then every change as it happens
    #[command(
        after_help = "Prints the current state of every entity, then `Watching state TYPE` \
on stderr, then each change. With --from-revision R it prints every change after revision R \
(the \"revision\" of a printed state) instead of the current states. Runs until Ctrl-C."
    )]
    Watch(WatchArgs),
}

/// An entity: its type and id.
#[derive(Debug, Args)]
pub struct EntityArgs {
    /// The entity type, e.g. task (one topic token: no `.`, `*` or `>`).
    #[arg(value_name = "TYPE")]
    pub kind: String,
    /// The entity id, e.g. t-42.
    pub id: String,
}

/// `seed state create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub entity: EntityArgs,
    /// Who creates it (written as updated_by).
    #[arg(long, value_name = "NAME")]
    pub by: String,
    /// The entity's data, a JSON object.
    #[arg(long, value_name = "JSON", value_parser = parse_data)]
    pub data: Option<JsonObject>,
    /// The first status [default: pending].
    #[arg(long, value_name = "S", value_parser = parse_status)]
    pub status: Option<Status>,
    /// Free-form metadata, a JSON object.
    #[arg(long, value_name = "JSON", value_parser = parse_metadata)]
    pub metadata: Option<JsonObject>,
}

/// `seed state get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub entity: EntityArgs,
    /// One kept version instead of the current state.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub version: Option<u64>,
}

/// `seed state update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub entity: EntityArgs,
    /// The version the change applies to (the one you read).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub expect_version: u64,
    /// Who makes the change (written as updated_by).
    #[arg(long, value_name = "NAME")]
    pub by: String,
    /// Replace the data with this JSON object.
    #[arg(long, value_name = "JSON", value_parser = parse_data, conflicts_with = "merge")]
    pub data: Option<JsonObject>,
    /// Merge this JSON object into the data (RFC 7386: null removes a key).
    #[arg(long, value_name = "JSON", value_parser = parse_merge)]
    pub merge: Option<JsonObject>,
    /// The new status.
    #[arg(long, value_name = "S", value_parser = parse_status)]
    pub status: Option<Status>,
}

/// `seed state delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub entity: EntityArgs,
    /// The version the delete applies to (the one you read).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub expect_version: u64,
    /// Who deletes it.
    #[arg(long, value_name = "NAME")]
    pub by: String,
}

/// `seed state list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The entity type.
    #[arg(value_name = "TYPE")]
    pub kind: String,
    /// Only entities in this status.
    #[arg(long, value_name = "S", value_parser = parse_status)]
    pub status: Option<Status>,
}

/// `seed state watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The entity type (or a pattern of types, such as `*`, without --from-revision).
    #[arg(value_name = "TYPE")]
    pub kind: String,
    /// Only this entity.
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Every change after this revision (a printed state's "revision") instead of the current states.
    #[arg(long, value_name = "R", value_parser = parse_revision)]
    pub from_revision: Option<Cursor>,
}

fn parse_data(s: &str) -> Result<JsonObject, String> {
    parse_json_object("data", s).map_err(|e| e.to_string())
}

fn parse_merge(s: &str) -> Result<JsonObject, String> {
    parse_json_object("merge", s).map_err(|e| e.to_string())
}

fn parse_metadata(s: &str) -> Result<JsonObject, String> {
    parse_json_object("metadata", s).map_err(|e| e.to_string())
}

fn parse_status(s: &str) -> Result<Status, String> {
    Status::parse(s).map_err(|e| e.to_string())
}

fn parse_revision(s: &str) -> Result<Cursor, String> {
    s.parse::<Cursor>().map_err(|e| e.to_string())
}

/// A failed state command, with the exit status its kind calls for:
/// 3 conflict, 2 invalid input, 1 anything else (not found included).
#[derive(Debug)]
pub struct StateFailure(pub seed_event::Error);

impl std::fmt::Display for StateFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StateFailure {}

impl StateFailure {
    /// The exit status of this failure.
    pub fn status(&self) -> u8 {
        match self.0.kind() {
            ErrorKind::Conflict => 3,
            ErrorKind::InvalidInput => 2,
            _ => 1,
        }
    }
}

/// Runs a state command on `store`, printing to `out`.
pub fn run(store: Arc<dyn EventStore>, command: &StateCommand, out: &mut dyn Write) -> Result<()> {
    let states = StateStore::new(store).map_err(StateFailure)?;
    let print = |out: &mut dyn Write, line: String| -> Result<()> {
        writeln!(out, "{line}")?;
        Ok(())
    };
    match command {
        StateCommand::Create(a) => {
            let mut new = NewState::new(&a.entity.id, &a.entity.kind, &a.by);
            new.data = a.data.clone().unwrap_or_default();
            new.metadata = a.metadata.clone().unwrap_or_default();
            new.status = a.status.unwrap_or(Status::Pending);
            print(out, states.create(new).map_err(StateFailure)?.to_json())
        }
        StateCommand::Get(a) => {
            let (kind, id) = (&a.entity.kind, &a.entity.id);
            let entry = match a.version {
                Some(v) => states.get_version(kind, id, v),
                None => states.get(kind, id),
            };
            print(out, entry.map_err(StateFailure)?.to_json())
        }
        StateCommand::Update(a) => {
            let mut change = Change::by(&a.by);
            if let Some(data) = &a.data {
                change = change.replace_data(data.clone());
            }
            if let Some(patch) = &a.merge {
                change = change.merge_data(patch.clone());
            }
            if let Some(status) = a.status {
                change = change.status(status);
            }
            let entry = states.update(&a.entity.kind, &a.entity.id, a.expect_version, change);
            print(out, entry.map_err(StateFailure)?.to_json())
        }
        StateCommand::Delete(a) => {
            let entry =
                states.delete(&a.entity.kind, &a.entity.id, a.expect_version, Change::by(&a.by));
            print(out, entry.map_err(StateFailure)?.to_json())
        }
        StateCommand::History(a) => {
            for entry in states.history(&a.kind, &a.id).map_err(StateFailure)? {
                print(out, entry.to_json())?;
            }
            Ok(())
        }
        StateCommand::List(a) => {
            for entry in states.list(&a.kind, a.status).map_err(StateFailure)? {
                print(out, entry.map_err(StateFailure)?.to_json())?;
            }
            Ok(())
        }
        StateCommand::Watch(a) => watch(&states, a, out),
    }
}

/// Prints the watch until SIGINT or SIGTERM.
fn watch(states: &StateStore, a: &WatchArgs, out: &mut dyn Write) -> Result<()> {
    signal::catch_stop_signals();
    let from = a.from_revision.map_or(WatchFrom::Now, WatchFrom::After);
    let mut watch = states.watch(&a.kind, a.id.as_deref(), from).map_err(StateFailure)?;
    let mut outage = false;
    while !signal::stop_requested() {
        let next = watch.next(Duration::from_millis(200)).map_err(StateFailure)?;
        match (watch.reconnecting(), outage) {
            (n, false) if n > 0 => {
                outage = true;
                eprintln!("seed: {} is unavailable; retrying", states.events().describe());
            }
            (0, true) => {
                outage = false;
                eprintln!("seed: {} is back", states.events().describe());
            }
            _ => {}
        }
        match next {
            Some(WatchEvent::Entry(entry)) => {
                writeln!(out, "{}", entry.to_json())?;
                out.flush()?;
            }
            Some(WatchEvent::Ready) => eprintln!("Watching state {}", a.kind),
            Some(WatchEvent::Compacted { through }) => eprintln!(
                "seed: changes of state {} up to revision {through} were compacted away; \
                 starting again from the current states",
                a.kind
            ),
            None => {}
        }
    }
    Ok(())
}
