//! The command line: clap definitions and the parsers of its values.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use seed_event::{
    parse_json_object, ConsumerName, Cursor, JsonObject, Timestamp, Topic, TopicPattern,
};

const MAIN_EXAMPLES: &str = "\
Examples:
  seed publish --topic task.completed --source fenrir --payload '{\"task_id\": \"abc\"}'
  seed subscribe --topic 'task.>' --from beginning
  seed history --topic task.completed --last 10
  seed replay --topic task.completed --since 1h --speed 10
  seed topics";

/// Seed: an event bus for cooperating agent processes.
#[derive(Debug, Parser)]
#[command(name = "seed", version = env!("SEED_VERSION"), after_help = MAIN_EXAMPLES, propagate_version = true)]
pub struct Cli {
    /// Events directory of the file store [default: $XDG_DATA_HOME/seed/events]
    #[arg(long, global = true, value_name = "DIR", env = "SEED_EVENTS_DIR")]
    pub events_dir: Option<PathBuf>,

    /// Use the Redis store at this URL instead of the file store (redis://[:password@]host:port/db)
    #[arg(long, global = true, value_name = "URL", env = "SEED_REDIS_URL", hide_env_values = true)]
    pub redis: Option<String>,

    /// When file-store appends reach the disk: never (survives process crashes), batch
    /// (fdatasync per batch), always (fdatasync per append: acknowledged means on disk)
    #[arg(long, global = true, value_enum, value_name = "POLICY", env = "SEED_SYNC", default_value_t = SyncArg::Never)]
    pub sync: SyncArg,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The file store's durability policy, as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncArg {
    /// Never fdatasync.
    Never,
    /// fdatasync once per batch.
    Batch,
    /// fdatasync every append.
    Always,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish an event (or one per line of standard input)
    #[command(after_help = "\
Output (--output):
  text    Published event <id> to topic <T>; with --payload -, one line with the count at the end
  json    an array of the stored events (the count on stderr)
  ndjson  one line per stored event, with its cursor (the count on stderr); --json is this

With --payload -, lines are published in batches as they arrive, so a line that is not a JSON
object stops the command with exit status 2 after every line before it has been published
(the error says how many events) and none after it. Blank lines are skipped.

Examples:
  seed publish --topic task.completed --source fenrir --payload '{\"task_id\": \"abc\"}'
  producer | seed publish --topic metrics.cpu --source probe --payload -")]
    Publish(PublishArgs),

    /// Print events as they are published, one JSON line each
    #[command(after_help = "\
Output (--output):
  text    each event's JSON line, as the original printed it
  json    one array of the events, closed when the subscriber stops
  ndjson  each event's JSON line with its cursor first; resume with --after

--after TOPIC=CURSOR (repeatable) delivers only the events of TOPIC after CURSOR; topics not
named start as --from says, which must then be new or beginning. --after CURSOR alone needs
an exact --topic. Not with --group, which resumes from its own committed positions.

--group NAME shares the events among every subscriber of the group, in any process: each
event goes to one of them and is acked once its line is written; the events a subscriber
held when it died go to the others at once, and an event delivered --max-deliveries times
without being acked goes to the dead-letter topic (dead.<group>). --exclusive makes the
group exclusive (fixed when it is created): one subscriber is active at a time, the others
print `Waiting for group NAME: another subscriber holds it` and stand by; the first to take
over gets the events the active one held unacked, then the rest in order. A standby ends
at --timeout (exit 0) or Ctrl-C. An exclusive group created where an exclusive consumer of
the same name (as --exclusive was before groups had the mode) has committed positions
starts after them.

--exec CMD makes the subscriber a worker in any language: each event's JSON line goes to
`sh -c CMD` on stdin, with SEED_TOPIC, SEED_EVENT_ID, SEED_CURSOR and SEED_DELIVERY (1 for
the first delivery) in its environment; exit 0 acks the event, any other exit fails it (it
comes again after --backoff, and after --max-deliveries its last stderr line is the error
recorded with the dead letter). Up to --concurrency commands run at once. Ctrl-C stops
taking work and waits for the running commands.

Examples:
  seed subscribe --topic 'task.>'
  seed subscribe --topic 'task.*' --from 15m --count 10 --timeout 30s
  seed subscribe --topic orders.created --group billing
  seed subscribe --topic 'task.>' --group workers --ordered per-topic
  seed subscribe --topic task.created --group workers --exec './handle-task' --concurrency 4
  seed subscribe --topic orders.created --group billing --exclusive
  seed subscribe --topic task.completed --after 42-0 --output ndjson")]
    Subscribe(SubscribeArgs),

    /// Query stored events
    #[command(after_help = "\
Output (--output):
  text    [<timestamp>] <topic> from <source>: <payload>, as the original printed it
  json    the original's indented array of events (--json is this)
  ndjson  each event's JSON line with its cursor first; resume with --after

--after TOPIC=CURSOR (repeatable) keeps only the events of TOPIC after CURSOR; topics not
named are read as without it. --after CURSOR alone needs exactly one exact --topic. The
other filters and --limit/--last apply to what is after the cursors.

Examples:
  seed history --topic task.completed --limit 10
  seed history --topic 'task.>' --since 2026-04-16T00:00:00Z --until 2h --json
  seed history --source fenrir --last 5
  seed history --topic 'task.*' --after task.done=42-0 --after task.failed=7-0 --output ndjson")]
    History(HistoryArgs),

    /// Print stored events again, paced as they were published
    #[command(after_help = "\
Output (--output):
  text    [REPLAY] <json> lines, then a blank line and Replayed N events.
  json    one array of the events; Replayed N events. on stderr
  ndjson  each event's JSON line with its cursor first; Replayed N events. on stderr

Examples:
  seed replay --topic task.completed --since 2026-04-16T00:00:00Z
  seed replay --topic 'task.>' --since 1h --speed 0")]
    Replay(ReplayArgs),

    /// List every topic
    #[command(after_help = "\
Output (--output): text prints one name per line; json and ndjson one compact array on one line.

Example:
  seed topics --json")]
    Topics(TopicsArgs),

    /// Show events, bytes and time span per topic, and the position and lag of durable consumers
    #[command(after_help = "\
Output (--output): text prints tables; json and ndjson one compact object on one line.

Examples:
  seed stats
  seed stats --topic task.completed --json")]
    Stats(StatsArgs),

    /// Show work groups: members alive, events in flight and waiting, redelivered, dead-lettered
    #[command(after_help = "\
Output (--output): text prints a table; json and ndjson one compact array on one line, an
object per group with name, pattern, members (one object per live member, with its id),
exclusive (true for a group made by --exclusive), active (of an exclusive group, its active
member's id, else null), in_flight, waiting (events not delivered yet or waiting to be
delivered again), redelivered and dead_lettered. The table's MODE is exclusive or shared;
an exclusive group's standbys are not members until they become active.

Examples:
  seed groups
  seed groups --json
  seed groups delete billing --confirm")]
    Groups(GroupsArgs),

    /// Put dead letters back on their original topics, to be handled again
    #[command(after_help = "\
Each dead letter not redriven yet goes back to its original topic as the original event (same
id, fields and time); a marker event on the dead-letter topic keeps it from being redriven
twice. Output (--output): text says how many; json and ndjson print the events put back, with
their new cursors.

Examples:
  seed redrive --topic dead.billing
  seed redrive --topic dead.billing --id 0199a3c4-5b6e-7f80-9a1b-2c3d4e5f6a7b")]
    Redrive(RedriveArgs),

    /// Remove events (asks first unless --confirm is given)
    #[command(after_help = "\
Examples:
  seed clear --topic task.completed
  seed clear --before 7d --confirm")]
    Clear(ClearArgs),

    /// Print a shell completion script
    #[command(
        after_help = "Example:\n  seed completions bash > ~/.local/share/bash-completion/completions/seed"
    )]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },

    /// Write the man pages (seed.1 and one per subcommand) into DIR, for packagers
    #[command(hide = true)]
    ManPages {
        /// The folder to write them into (created if missing).
        dir: PathBuf,
    },

    /// Import an events directory written by the original Python implementation
    #[command(after_help = "Example:\n  seed import /tmp/electra-events")]
    Import {
        /// The directory of `<topic>.jsonl` files.
        legacy_dir: PathBuf,
    },

    /// Keep versioned entity states: create, get, update with compare-and-set, delete, watch
    #[command(after_help = "\
Exit status: 0 success; 1 runtime failure or not found (naming TYPE/ID); 2 invalid input;
3 conflict (conflict: TYPE/ID is at version M, expected N, or already exists), so scripts
can loop on compare-and-set.

Examples:
  seed state create task t-42 --by fenrir --data '{\"title\": \"index\"}'
  seed state update task t-42 --expect-version 1 --by odin --status active
  seed state watch task")]
    State {
        /// What to do with states.
        #[command(subcommand)]
        command: crate::state::StateCommand,
    },

    /// Look up, compare and pick language models from the built-in model cards
    #[command(
        after_help = "Examples:\n  seed models list\n  seed models pick --needs vision,tools"
    )]
    Models {
        /// What to do with the cards.
        #[command(subcommand)]
        command: model_cards::cli::ModelsCommand,
    },

    /// Serve the bus over HTTP and Server-Sent Events, with a web console at /
    #[command(after_help = "\
Prints Serving on http://HOST:PORT on stderr once it accepts requests; Ctrl-C or SIGTERM
ends the event streams and exits 0. Listening on another address than loopback needs a token.

Examples:
  seed serve
  seed serve --listen 127.0.0.1:0
  SEED_TOKEN=secret seed serve --listen 0.0.0.0:7007")]
    Serve(serve::ServeArgs),
}

/// How a command prints what it found (`--output`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The original implementation's lines, for people and its old scripts
    Text,
    /// One JSON document: an array of events (the original's `history --json`), or one value
    Json,
    /// One JSON value per line: each event with its "cursor" first
    Ndjson,
}

/// `--output FORMAT` and its `--json` alias.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// How to print: text, json (one document on stdout) or ndjson (one JSON value per line);
    /// in json and ndjson, stdout holds only data and summaries go to stderr
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = Format::Text)]
    pub output: Format,
    /// Same as --output json
    #[arg(long, conflicts_with = "output")]
    pub json: bool,
}

impl OutputArgs {
    /// The format asked for.
    pub fn format(&self) -> Format {
        if self.json {
            Format::Json
        } else {
            self.output
        }
    }
}

/// Options of `publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The topic to publish to, e.g. task.completed
    #[arg(long, value_parser = parse_topic)]
    pub topic: Topic,
    /// Who publishes it (an archon or component name)
    #[arg(long)]
    pub source: String,
    /// The payload, a JSON object; `-` reads one object per line from standard input
    /// (a bad line stops it with exit 2, but the lines before it are published)
    #[arg(long, value_parser = parse_payload, allow_hyphen_values = true)]
    pub payload: PayloadArg,
    /// Ties requests and responses together
    #[arg(long, value_name = "ID")]
    pub correlation_id: Option<String>,
    /// Extra data, a JSON object
    #[arg(long, value_name = "JSON", value_parser = parse_metadata)]
    pub metadata: Option<JsonObject>,
    /// How to print: text, json (one document on stdout) or ndjson (one JSON value per line);
    /// in json and ndjson, stdout holds only data and the count goes to stderr
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = Format::Text)]
    pub output: Format,
    /// Same as --output ndjson (one JSON line per stored event)
    #[arg(long, conflicts_with = "output")]
    pub json: bool,
    /// The event's time instead of now (for imports and tests)
    #[arg(long, hide = true, value_parser = parse_time)]
    pub timestamp: Option<Timestamp>,
    /// The event's id; publishing an id the topic already holds does nothing
    #[arg(long, hide = true)]
    pub id: Option<uuid::Uuid>,
}

/// Where `--payload` comes from.
#[derive(Debug, Clone)]
pub enum PayloadArg {
    /// One JSON object per line of standard input.
    Stdin,
    /// This object.
    Json(JsonObject),
}

/// Options of `subscribe`.
#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// The topic or pattern: `task.*` (one token), `task.>` (one or more), or an exact topic
    #[arg(long, value_name = "PATTERN", value_parser = parse_pattern)]
    pub topic: TopicPattern,
    /// Where to start: new, beginning, an RFC 3339 time, or a duration ago such as 15m
    #[arg(long, default_value = "new", value_parser = parse_from)]
    pub from: FromArg,
    /// Share the events with the other subscribers of this work group, in any process (--from applies only when the group is new)
    #[arg(long, value_name = "NAME", value_parser = parse_group)]
    pub group: Option<ConsumerName>,
    /// With --group: an exclusive group, one subscriber active at a time while the others stand by
    #[arg(long, requires = "group")]
    pub exclusive: bool,
    /// With --group: how long an event stays with a subscriber that has not printed it
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_positive_duration, requires = "group")]
    pub ack_wait: Duration,
    /// With --group: deliveries of an event before it goes to the dead-letter topic
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..), requires = "group")]
    pub max_deliveries: u32,
    /// With --group: events this subscriber takes at a time at most (fewer when its handling is slow) [default: 256; with --exec, 1 per command slot]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000), requires = "group")]
    pub max_in_flight: Option<u32>,
    /// With --group: how long a failed event waits before it comes again, doubling per delivery up to --ack-wait
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration, requires = "group")]
    pub backoff: Duration,
    /// With --group: run CMD with sh -c for each event instead of printing it (its JSON line on stdin; SEED_TOPIC, SEED_EVENT_ID, SEED_CURSOR, SEED_DELIVERY set); exit 0 acks, any other exit fails the delivery
    #[arg(long, value_name = "CMD", requires = "group")]
    pub exec: Option<String>,
    /// With --exec: commands run at once
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024), requires = "exec")]
    pub concurrency: u32,
    /// With --group: per-topic keeps one event per topic in flight across the group (each topic in order)
    #[arg(long, value_enum, value_name = "ORDER", requires = "group")]
    pub ordered: Option<Ordered>,
    /// With --group: where events go after their last delivery (default dead.<group>)
    #[arg(long, value_name = "TOPIC", value_parser = parse_topic, requires = "group")]
    pub dead_letter: Option<Topic>,
    /// Exit after this many events
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Exit after this long, e.g. 30s, 500ms, 2m
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// With --group --exclusive: how long the group's lock outlives a holder whose host went silent (Redis)
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_lease_ttl)]
    pub lease_ttl: Duration,
    /// Exit 1 once the store has been unreachable this long (default: keep retrying)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub give_up_after: Option<Duration>,
    /// Only events after this cursor: TOPIC=CURSOR (repeatable), or CURSOR alone with an exact --topic
    #[arg(long, value_name = "[TOPIC=]CURSOR", value_parser = parse_after, conflicts_with = "group")]
    pub after: Vec<AfterArg>,
    /// How to print (see the command's help).
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The ordering of a work group (`--ordered`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ordered {
    /// One event per topic in flight across the group: each topic in order.
    PerTopic,
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromArg {
    /// Only events published from now on.
    New,
    /// Every stored event.
    Beginning,
    /// Events since this time.
    Since(Timestamp),
}

/// Options of `history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only these topics or patterns (repeatable)
    #[arg(long, value_name = "T", value_parser = parse_pattern)]
    pub topic: Vec<TopicPattern>,
    /// Only events from this source
    #[arg(long)]
    pub source: Option<String>,
    /// Only events with this correlation id
    #[arg(long, value_name = "ID")]
    pub correlation_id: Option<String>,
    /// Only events at or after this time (RFC 3339, or a duration ago such as 2h)
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<Timestamp>,
    /// Only events before this time (RFC 3339, or a duration ago such as 2h)
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<Timestamp>,
    /// Keep the first N events
    #[arg(long, value_name = "N", conflicts_with = "last")]
    pub limit: Option<usize>,
    /// Keep the newest N events (still printed oldest first)
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
    /// Only events after this cursor: TOPIC=CURSOR (repeatable), or CURSOR alone with one exact --topic
    #[arg(long, value_name = "[TOPIC=]CURSOR", value_parser = parse_after)]
    pub after: Vec<AfterArg>,
    /// How to print (see the command's help).
    #[command(flatten)]
    pub output: OutputArgs,
}

/// One `--after`: a cursor, in the topic named or in the one exact `--topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterArg {
    /// The topic named before `=`, if any.
    pub topic: Option<Topic>,
    /// The position to continue after.
    pub cursor: Cursor,
}

/// Options of `replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The topic or pattern to replay
    #[arg(long, value_name = "PATTERN", value_parser = parse_pattern)]
    pub topic: TopicPattern,
    /// Replay events at or after this time (RFC 3339, or a duration ago such as 2h)
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Timestamp,
    /// Replay events before this time
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<Timestamp>,
    /// Playback speed: original gaps are divided by it; 0 replays as fast as possible
    #[arg(long, default_value_t = 1.0, value_parser = parse_speed, allow_negative_numbers = true)]
    pub speed: f64,
    /// How to print (see the command's help).
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Options of `topics`.
#[derive(Debug, Args)]
pub struct TopicsArgs {
    /// How to print (see the command's help).
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Options of `stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this topic
    #[arg(long, value_parser = parse_topic)]
    pub topic: Option<Topic>,
    /// How to print (see the command's help).
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Options of `groups`.
#[derive(Debug, Args)]
pub struct GroupsArgs {
    /// What to do (list them when omitted).
    #[command(subcommand)]
    pub action: Option<GroupsAction>,
    /// How to print (see the command's help).
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `groups` subcommands.
#[derive(Debug, Subcommand)]
pub enum GroupsAction {
    /// Delete a group whose members all stopped: its positions and unacked events (asks first unless --confirm)
    Delete {
        /// The group.
        #[arg(value_parser = parse_group)]
        name: ConsumerName,
        /// Do not ask
        #[arg(long)]
        confirm: bool,
    },
}

/// Options of `redrive`.
#[derive(Debug, Args)]
pub struct RedriveArgs {
    /// The dead-letter topic, such as dead.billing
    #[arg(long, value_parser = parse_topic)]
    pub topic: Topic,
    /// Only the dead letter with this event id
    #[arg(long)]
    pub id: Option<uuid::Uuid>,
    /// How to print (see the command's help).
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Options of `clear`.
#[derive(Debug, Args)]
pub struct ClearArgs {
    /// Only this topic (all topics if omitted)
    #[arg(long, value_parser = parse_topic)]
    pub topic: Option<Topic>,
    /// Only events older than this time (RFC 3339, or a duration ago such as 7d)
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub before: Option<Timestamp>,
    /// Do not ask
    #[arg(long)]
    pub confirm: bool,
}

fn parse_topic(s: &str) -> Result<Topic, String> {
    Topic::new(s).map_err(|e| e.to_string())
}

fn parse_pattern(s: &str) -> Result<TopicPattern, String> {
    TopicPattern::new(s).map_err(|e| e.to_string())
}

fn parse_group(s: &str) -> Result<ConsumerName, String> {
    ConsumerName::new(s).map_err(|e| e.to_string().replace("consumer name", "group name"))
}

fn parse_after(s: &str) -> Result<AfterArg, String> {
    let expected = "expected a cursor such as 42-0, or TOPIC=CURSOR such as task.done=42-0";
    // A cursor has no `=`; a topic may.
    let (topic, cursor) = match s.rsplit_once('=') {
        Some((topic, cursor)) => (Some(parse_topic(topic)?), cursor),
        None => (None, s),
    };
    let cursor = cursor.parse::<Cursor>().map_err(|_| expected.to_string())?;
    Ok(AfterArg { topic, cursor })
}

fn parse_payload(s: &str) -> Result<PayloadArg, String> {
    if s == "-" {
        return Ok(PayloadArg::Stdin);
    }
    parse_json_object("payload", s).map(PayloadArg::Json).map_err(|e| e.to_string())
}

fn parse_metadata(s: &str) -> Result<JsonObject, String> {
    parse_json_object("metadata", s).map_err(|e| e.to_string())
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err("expected a number >= 0 (0 = as fast as possible)".to_string()),
    }
}

/// Parses `90s`, `15m`, `2h`, `7d` or `500ms`; a number without a unit is rejected.
/// A lock's time to live: a duration longer than zero.
fn parse_lease_ttl(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d < Duration::from_millis(1) => {
            Err("a lease TTL must be at least 1ms, such as 5s".to_string())
        }
        d => Ok(d),
    }
}

/// A duration longer than zero, such as 30s.
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d < Duration::from_millis(1) => Err("must be at least 1ms, such as 30s".to_string()),
        d => Ok(d),
    }
}

/// A DURATION argument: a number with a unit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    let bad = || "expected a number with a unit such as 500ms, 90s, 15m, 2h or 7d".to_string();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "" => return Err(format!("a number needs a unit ({text}s)")),
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| bad())
}

/// Parses an RFC 3339 time or a duration ago (`90s`, `15m`, `2h`, `7d`); a
/// bare number is neither. A duration ago reaching past year 0000 gives
/// [`Timestamp::MIN`].
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    let text = s.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!(
            "a number needs a unit ({text}s) or write a date (2026-01-01T00:00:00Z)"
        ));
    }
    if text.starts_with(|c: char| c.is_ascii_digit()) && !text.contains('-') {
        let ago = parse_duration(text).map_err(|_| time_error())?;
        // A duration ago past year 0000 is the earliest time.
        let micros = i64::try_from(ago.as_micros()).unwrap_or(i64::MAX);
        return Ok(Timestamp::now().add_micros(-micros));
    }
    Timestamp::parse(text).map_err(|_| time_error())
}

fn time_error() -> String {
    "expected RFC 3339 such as 2026-04-16T00:00:00Z or a duration ago such as 90s, 15m, 2h or 7d"
        .to_string()
}

fn parse_from(s: &str) -> Result<FromArg, String> {
    match s.trim() {
        "new" => Ok(FromArg::New),
        "beginning" => Ok(FromArg::Beginning),
        other => parse_time(other).map(FromArg::Since).map_err(|reason| {
            if reason.starts_with("a number") {
                reason
            } else {
                "expected new, beginning, an RFC 3339 time or a duration ago such as 15m"
                    .to_string()
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("30").unwrap_err().contains("needs a unit (30s)"));
        for bad in ["", "s", "5x", "-1s", "1e400s", "ten", "30"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times() {
        let t = parse_time("2026-04-16T02:00:00+02:00").unwrap();
        assert_eq!(t.to_string(), "2026-04-16T00:00:00.000000+00:00");
        let before = Timestamp::now();
        let ago = parse_time("15m").unwrap();
        let after = Timestamp::now();
        assert!(ago >= before.add_micros(-900_000_000) && ago <= after.add_micros(-900_000_000));
        for bad in ["yesterday", "2026-04-16", "15x", "", "-5m"] {
            let err = parse_time(bad).unwrap_err();
            assert!(err.contains("RFC 3339") && err.contains("duration ago"), "{bad:?}: {err}");
        }
        for bare in ["2026", "0", "1.5"] {
            let err = parse_time(bare).unwrap_err();
            assert_eq!(
                err,
                format!("a number needs a unit ({bare}s) or write a date (2026-01-01T00:00:00Z)")
            );
        }
    }

    #[test]
    fn afters() {
        let bare = parse_after("42-0").unwrap();
        assert_eq!((bare.topic, bare.cursor), (None, Cursor::new(42, 0)));
        let named = parse_after("a=b.c=7-1").unwrap();
        assert_eq!((named.topic.unwrap().as_str(), named.cursor), ("a=b.c", Cursor::new(7, 1)));
        for bad in ["", "x", "a.b=", "=1-0", "a..b=1-0", "a.*=1-0", "1-0-0"] {
            assert!(parse_after(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn starts() {
        assert_eq!(parse_from("new").unwrap(), FromArg::New);
        assert_eq!(parse_from("beginning").unwrap(), FromArg::Beginning);
        assert!(matches!(parse_from("2026-04-16T00:00:00Z").unwrap(), FromArg::Since(_)));
        assert!(matches!(parse_from("1h").unwrap(), FromArg::Since(_)));
        assert!(parse_from("old").unwrap_err().contains("beginning"));
    }
}
