//! What each command does: parse, call the libraries, print.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bus::{
    BusConfig, EventBus, HandlerResult, PublishOptions, ReplayConfig, StartAt, SubscribeConfig,
    WorkerConfig,
};
use clap::CommandFactory;
use seed_event::{
    parse_json_object, Clear, ConsumerName, Cursor, Delivery, Event, EventStore, GroupConfig,
    GroupOrdering, Limit, Query, Start, StoredEvent, Topic, TopicPattern,
};

use crate::args::{
    AfterArg, ClearArgs, Cli, Command, Format, FromArg, GroupsAction, GroupsArgs, HistoryArgs,
    Ordered, PayloadArg, PublishArgs, RedriveArgs, ReplayArgs, StatsArgs, SubscribeArgs, SyncArg,
};
use crate::output::{count, history_line, python_isoformat, EventPrinter};
use crate::signal;

/// Invalid input found by the command itself: exit status 2.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// How many stdin lines go into one batch at most.
const STDIN_BATCH: usize = 1000;

/// Runs the parsed command line; returns the exit status of a run that did not fail.
pub fn run(cli: Cli) -> Result<u8> {
    // Not locked here: a subscription's handler thread prints too.
    let out = &mut io::stdout();
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "seed", out);
            Ok(0)
        }
        Command::ManPages { dir } => crate::man::write_pages(dir).map(|()| 0),
        Command::Import { legacy_dir } => import(&cli, legacy_dir, out).map(|()| 0),
        Command::State { command } => {
            crate::state::run(open_store(&cli)?, command, out).map(|()| 0)
        }
        Command::Models { command } => {
            let result = command.run(out);
            let status = model_cards::cli::exit_code(&result);
            result?;
            Ok(status)
        }
        command => {
            let mut config = BusConfig::default();
            if let Command::Subscribe(args) = command {
                config = config.lease_ttl(args.lease_ttl);
            }
            let bus = EventBus::with_config(open_store(&cli)?, config);
            match command {
                Command::Publish(args) => publish(&bus, args, out),
                Command::Subscribe(args) => subscribe(&bus, args),
                Command::History(args) => history(&bus, args, out),
                Command::Replay(args) => replay(&bus, args, out),
                Command::Topics(args) => topics(&bus, args.output.format(), out),
                Command::Stats(args) => stats(&bus, args, out),
                Command::Clear(args) => return clear(&bus, args, out),
                Command::Groups(args) => return groups(&bus, args, out),
                Command::Redrive(args) => redrive(&bus, args, out),
                Command::Serve(args) => serve::run(bus.store().clone(), args).map_err(Into::into),
                Command::Completions { .. }
                | Command::ManPages { .. }
                | Command::Import { .. }
                | Command::State { .. }
                | Command::Models { .. } => Ok(()),
            }
            .map(|()| 0)
        }
    }
}

/// `--events-dir`, else the default; an empty value (e.g. `SEED_EVENTS_DIR=`) counts as none.
fn events_dir(cli: &Cli) -> std::path::PathBuf {
    let given = cli.events_dir.clone().filter(|d| !d.as_os_str().is_empty());
    given.unwrap_or_else(store_file::default_events_dir)
}

/// `--redis`; an empty value (e.g. `SEED_REDIS_URL=`) counts as none.
fn redis_url(cli: &Cli) -> Option<&str> {
    cli.redis.as_deref().filter(|url| !url.is_empty())
}

/// The Redis store if `--redis` is given (never falling back to files), else the file store.
fn open_store(cli: &Cli) -> Result<Arc<dyn EventStore>> {
    if let Some(url) = redis_url(cli) {
        let store = store_redis::RedisStore::open(url)
            .with_context(|| format!("cannot use Redis at {}", store_redis::redact_url(url)))?;
        return Ok(Arc::new(store));
    }
    // The store's errors name the directory.
    Ok(Arc::new(open_file_store(cli)?))
}

/// The file store at `--events-dir` with the `--sync` policy.
fn open_file_store(cli: &Cli) -> seed_event::Result<store_file::FileStore> {
    let sync = match cli.sync {
        SyncArg::Never => store_file::SyncPolicy::Never,
        SyncArg::Batch => store_file::SyncPolicy::Batch,
        SyncArg::Always => store_file::SyncPolicy::Always,
    };
    let config = store_file::FileStoreConfig::default().sync(sync);
    store_file::FileStore::open_with(events_dir(cli), config)
}

/// The format `publish` prints in: `--json` is `--output ndjson`, the line per event it printed before.
fn publish_format(args: &PublishArgs) -> Format {
    if args.json {
        Format::Ndjson
    } else {
        args.output
    }
}

/// The text line of a single publish, as the original printed it.
fn published_line(e: &Event) -> String {
    format!("Published event {} to topic {}", e.id, e.topic)
}

fn publish(bus: &EventBus, args: &PublishArgs, out: &mut dyn Write) -> Result<()> {
    let options = PublishOptions {
        correlation_id: args.correlation_id.clone(),
        metadata: args.metadata.clone().unwrap_or_default(),
        id: args.id,
        timestamp: args.timestamp,
    };
    let mut printer = EventPrinter::new(out, publish_format(args), published_line);
    let payload = match &args.payload {
        PayloadArg::Json(payload) => payload.clone(),
        PayloadArg::Stdin => return publish_stdin(bus, args, &options, &mut printer),
    };
    let stored = bus.publish(&args.topic, &args.source, payload, options)?;
    printer.push(&stored)?;
    printer.finish()?;
    Ok(())
}

/// Reads stdin on a thread of its own, so every line that has arrived can be
/// published at once while the next one is still on its way.
fn stdin_lines() -> mpsc::Receiver<(u64, io::Result<Vec<u8>>)> {
    let (tx, rx) = mpsc::sync_channel(4 * STDIN_BATCH);
    thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        for number in 1.. {
            let mut line = Vec::new();
            let read = stdin.read_until(b'\n', &mut line);
            let item = match read {
                Ok(0) => return,
                Ok(_) => Ok(line),
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.send((number, item)).is_err() || failed {
                return;
            }
        }
    });
    rx
}

fn publish_stdin(
    bus: &EventBus,
    args: &PublishArgs,
    options: &PublishOptions,
    printer: &mut EventPrinter<&mut dyn Write>,
) -> Result<()> {
    if options.id.is_some() {
        return Err(Usage("--id needs a single --payload, not -".to_string()).into());
    }
    // Checks the topic and source before reading anything.
    bus.publish_batch(&args.topic, &args.source, Vec::new(), options)?;
    let format = publish_format(args);
    let lines = stdin_lines();
    let mut total = 0u64;
    let mut bad = None;
    while bad.is_none() {
        let Ok(first) = lines.recv() else { break };
        let mut batch = vec![first];
        while batch.len() < STDIN_BATCH {
            match lines.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let mut payloads = Vec::with_capacity(batch.len());
        for (number, line) in batch {
            let parsed = line
                .map_err(|e| format!("unreadable ({e})"))
                .and_then(|bytes| {
                    String::from_utf8(bytes).map_err(|_| "not valid UTF-8".to_string())
                })
                .and_then(|text| {
                    if text.trim().is_empty() {
                        return Ok(None);
                    }
                    parse_json_object("payload", text.trim_end_matches(['\n', '\r']))
                        .map(Some)
                        .map_err(|e| e.to_string())
                });
            match parsed {
                Ok(Some(payload)) => payloads.push(payload),
                Ok(None) => {}
                Err(reason) => {
                    bad = Some(format!("line {number} of standard input: {reason}"));
                    break;
                }
            }
        }
        if payloads.is_empty() {
            continue;
        }
        let stored = bus.publish_batch(&args.topic, &args.source, payloads, options)?;
        total += stored.len() as u64;
        if format != Format::Text {
            for e in &stored {
                printer.push(e)?;
            }
            printer.flush()?;
        }
    }
    // Also after a bad line: the JSON array lists what was published.
    printer.finish()?;
    let summary = format!("Published {} to topic {}", count(total, "event"), args.topic);
    summarize(format, printer, &summary)?;
    match bad {
        Some(message) => Err(Usage(format!(
            "{message}; the {} before it {} published, none after it",
            count(total, "event"),
            if total == 1 { "was" } else { "were" }
        ))
        .into()),
        None => Ok(()),
    }
}

/// The `--after` options as one cursor per topic, checked against the `--topic`
/// patterns (empty: every topic) so that resuming after them is exact.
fn after_positions(
    patterns: &[TopicPattern],
    after: &[AfterArg],
) -> Result<BTreeMap<Topic, Cursor>, Usage> {
    let mut positions = BTreeMap::new();
    for a in after {
        let only = match (patterns, after.len()) {
            ([only], 1) => only.exact(),
            _ => None,
        };
        let topic = a.topic.clone().or(only).ok_or_else(|| {
            Usage(format!(
                "--after {} needs exactly one --topic without wildcards, as a cursor is a position in one topic; otherwise write --after TOPIC={}",
                a.cursor, a.cursor
            ))
        })?;
        if !patterns.is_empty() && !patterns.iter().any(|p| p.matches(&topic)) {
            return Err(Usage(format!(
                "--after names topic {topic}, which no --topic selects; expected a topic the command reads"
            )));
        }
        if positions.insert(topic.clone(), a.cursor).is_some() {
            return Err(Usage(format!(
                "--after names topic {topic} twice; expected one cursor per topic"
            )));
        }
    }
    Ok(positions)
}

fn start_of(from: FromArg) -> StartAt {
    match from {
        FromArg::New => StartAt::New,
        FromArg::Beginning => StartAt::Beginning,
        FromArg::Since(t) => StartAt::Since(t),
    }
}

/// Where a subscription or a replay prints, shared with its handler thread.
type SharedPrinter = Arc<Mutex<EventPrinter<io::Stdout>>>;

/// Prints one event and flushes it.
fn print_now(printer: &SharedPrinter, e: &StoredEvent) -> io::Result<()> {
    let mut printer = printer.lock().unwrap_or_else(PoisonError::into_inner);
    printer.push(e).and_then(|()| printer.flush())
}

/// Ends the output of a shared printer (closes a JSON array).
fn finish_shared(printer: &SharedPrinter) -> io::Result<()> {
    printer.lock().unwrap_or_else(PoisonError::into_inner).finish()
}

/// A summary line: on stdout after text, on stderr after json or ndjson (stdout holds only data).
fn summarize<W: Write>(
    format: Format,
    printer: &mut EventPrinter<W>,
    line: &str,
) -> io::Result<()> {
    if format == Format::Text {
        printer.line(line)?;
        printer.flush()
    } else {
        eprintln!("{line}");
        Ok(())
    }
}

/// A handler that prints each event, flushed.
fn printer(
    printer: SharedPrinter,
    broken: Arc<AtomicBool>,
) -> impl FnMut(&StoredEvent) -> HandlerResult + Send + 'static {
    move |e: &StoredEvent| {
        if let Err(err) = print_now(&printer, e) {
            if err.kind() == io::ErrorKind::BrokenPipe {
                broken.store(true, Ordering::SeqCst);
            }
            return Err(err.into());
        }
        Ok(())
    }
}

/// The text line of `subscribe`: the event's JSON line, as the original printed it.
fn json_line(e: &Event) -> String {
    e.to_json_line()
}

/// The text line of `replay`, as the original printed it.
fn replay_line(e: &Event) -> String {
    format!("[REPLAY] {}", e.to_json_line())
}

/// Joins the group with `join`; a member of an exclusive group that another
/// subscriber holds says so on stderr and stands by until the holder goes
/// (then it joins), the deadline passes or Ctrl-C (then `None`).
fn join_or_stand_by(
    config: WorkerConfig,
    deadline: Option<Instant>,
    join: impl Fn(WorkerConfig) -> bus::Result<bus::Subscription>,
) -> Result<Option<bus::Subscription>> {
    let name = match join(config.clone()) {
        Err(bus::Error::ConsumerBusy { name }) => name,
        other => return Ok(Some(other?)),
    };
    eprintln!("Waiting for group {name}: another subscriber holds it");
    // The wait ends when the holder lets go (or dies), at the deadline, or
    // at Ctrl-C, which a watcher turns into a cancel.
    let cancel = seed_event::Cancel::new();
    let watcher = {
        let cancel = cancel.clone();
        thread::spawn(move || {
            while !cancel.sleep(Duration::from_millis(20)) {
                if signal::stop_requested() {
                    cancel.cancel();
                }
            }
        })
    };
    let wait = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
    let result = join(config.standby(wait, cancel.clone()));
    cancel.cancel();
    let _ = watcher.join();
    match result {
        Err(bus::Error::ConsumerBusy { .. }) if signal::stop_requested() => Ok(None),
        Err(bus::Error::ConsumerBusy { .. }) => {
            // A standby that never became active: its --timeout ended it,
            // as it ends any subscriber.
            eprintln!("Group {name} is still held by another subscriber; --timeout reached");
            Ok(None)
        }
        other => Ok(Some(other?)),
    }
}

/// `subscribe --group NAME`: a member of the work group that prints each
/// event it gets; a batch of printed events is flushed, then acked with the
/// next fetch. With `--exclusive`, the group has one active member at a
/// time, the others standing by.
fn subscribe_group(bus: &EventBus, args: &SubscribeArgs, name: &ConsumerName) -> Result<()> {
    if !args.after.is_empty() {
        return Err(Usage(
            "--after does not go with --group, which resumes from the group's own positions"
                .to_string(),
        )
        .into());
    }
    if bus.store().groups().is_none() {
        return Err(Usage(format!(
            "--group {name} shares events among subscribers, which {} cannot do; expected the memory, file or Redis store",
            bus.store().describe()
        ))
        .into());
    }
    if args.exclusive && args.concurrency > 1 {
        return Err(Usage(format!(
            "--exclusive keeps one subscriber of group {name} active, which runs one command at a time; expected --concurrency 1, or no --exclusive"
        ))
        .into());
    }
    let mut group = match &args.dead_letter {
        Some(topic) => {
            GroupConfig::with_dead_letter(name.clone(), args.topic.clone(), topic.clone())
        }
        None => GroupConfig::new(name.clone(), args.topic.clone())
            .map_err(|e| Usage(format!("{e} (or name one with --dead-letter TOPIC)")))?,
    };
    group = group
        .start(match args.from {
            FromArg::New => Start::New,
            FromArg::Beginning => Start::Beginning,
            FromArg::Since(t) => Start::Since(t),
        })
        .ack_wait(args.ack_wait)
        .max_deliveries(args.max_deliveries)
        .backoff(args.backoff)
        .exclusive(args.exclusive);
    if args.ordered == Some(Ordered::PerTopic) {
        group = group.ordering(GroupOrdering::PerTopic);
    }
    if let Some(cmd) = &args.exec {
        let in_flight = args.max_in_flight.map_or(1, |n| n as usize);
        let mut config = WorkerConfig::new(group.max_in_flight(in_flight)).member("exec");
        config.give_up_after = args.give_up_after;
        return exec_workers(bus, args, config, cmd);
    }
    let mut config =
        WorkerConfig::new(group.max_in_flight(args.max_in_flight.map_or(256, |n| n as usize)))
            .member("cli");
    config.max_events = args.count;
    config.give_up_after = args.give_up_after;
    signal::catch_stop_signals();
    let deadline = args.timeout.and_then(|t| Instant::now().checked_add(t));
    let past_deadline = move || deadline.is_some_and(|d| Instant::now() >= d);
    let broken = Arc::new(AtomicBool::new(false));
    let out = Arc::new(Mutex::new(EventPrinter::new(
        io::BufWriter::with_capacity(1 << 16, io::stdout()),
        args.output.format(),
        json_line,
    )));
    let handler = {
        let (out, broken) = (out.clone(), broken.clone());
        move |d: &Delivery| -> HandlerResult {
            let mut printer = out.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(err) = printer.push(&d.event) {
                if err.kind() == io::ErrorKind::BrokenPipe {
                    broken.store(true, Ordering::SeqCst);
                }
                return Err(err.into());
            }
            Ok(())
        }
    };
    let flush = {
        let (out, broken) = (out.clone(), broken.clone());
        move || -> HandlerResult {
            let mut printer = out.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(err) = printer.flush() {
                if err.kind() == io::ErrorKind::BrokenPipe {
                    broken.store(true, Ordering::SeqCst);
                }
                return Err(err.into());
            }
            Ok(())
        }
    };
    let join = |config: WorkerConfig| bus.join_group_with(config, handler.clone(), flush.clone());
    let Some(member) = join_or_stand_by(config, deadline, join)? else {
        out.lock().unwrap_or_else(PoisonError::into_inner).finish()?;
        return Ok(());
    };
    eprintln!("Listening on {}", args.topic);
    loop {
        if member.wait_timeout(Duration::from_millis(20)) {
            break;
        }
        if signal::stop_requested() || broken.load(Ordering::SeqCst) || past_deadline() {
            break;
        }
    }
    // Stops after the event being printed, flushes and acks what was printed.
    let result = member.unsubscribe();
    if broken.load(Ordering::SeqCst) {
        return Ok(());
    }
    out.lock().unwrap_or_else(PoisonError::into_inner).finish()?;
    result?;
    Ok(())
}

/// `subscribe --group NAME --exec CMD`: `--concurrency` members in this
/// process, each running CMD for one event at a time.
fn exec_workers(
    bus: &EventBus,
    args: &SubscribeArgs,
    config: WorkerConfig,
    cmd: &str,
) -> Result<()> {
    signal::catch_stop_signals();
    let deadline = args.timeout.and_then(|t| Instant::now().checked_add(t));
    let past_deadline = move || deadline.is_some_and(|d| Instant::now() >= d);
    let handled = Arc::new(AtomicU64::new(0));
    let join = |config: WorkerConfig| {
        let (cmd, handled) = (cmd.to_string(), handled.clone());
        bus.join_group(config, move |d| {
            run_command(&cmd, d)?;
            handled.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    };
    let mut members = Vec::new();
    for _ in 0..args.concurrency {
        match join_or_stand_by(config.clone(), deadline, join)? {
            Some(member) => members.push(member),
            None => return Ok(()),
        }
    }
    eprintln!("Listening on {}", args.topic);
    let enough = || args.count.is_some_and(|n| handled.load(Ordering::SeqCst) >= n);
    loop {
        if members.iter().any(|m| m.wait_timeout(Duration::from_millis(20))) {
            break;
        }
        if signal::stop_requested() || past_deadline() || enough() {
            break;
        }
    }
    // Each member stops after its running command and acks or nacks it.
    let mut first_error = None;
    for member in members {
        if let Err(e) = member.unsubscribe() {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Runs `sh -c cmd` for one delivery: the event's JSON line on stdin, its
/// topic, id, cursor and delivery count in the environment. Its stderr is
/// passed on; on a failure its last stderr line is the error. It runs in a
/// process group of its own, so Ctrl-C at a terminal (sent to the whole
/// foreground job) stops the worker taking work but lets the command finish.
fn run_command(cmd: &str, d: &Delivery) -> HandlerResult {
    use std::os::unix::process::CommandExt;
    use std::process::{Command as Process, Stdio};
    let mut child = Process::new("sh")
        .process_group(0)
        .arg("-c")
        .arg(cmd)
        .env("SEED_TOPIC", d.token.topic.as_str())
        .env("SEED_EVENT_ID", d.event.event.id.to_string())
        .env("SEED_CURSOR", d.event.cursor.to_string())
        .env("SEED_DELIVERY", d.deliveries.to_string())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run sh -c {cmd:?}: {e}"))?;
    let line = format!("{}\n", d.event.event.to_json_line());
    let writer = child.stdin.take().map(|mut stdin| {
        thread::spawn(move || {
            // A command that does not read its input is not a failure.
            let _ = stdin.write_all(line.as_bytes());
        })
    });
    let mut errors = Vec::new();
    if let Some(mut stderr) = child.stderr.take() {
        io::Read::read_to_end(&mut stderr, &mut errors)?;
    }
    let status = child.wait()?;
    if let Some(w) = writer {
        let _ = w.join();
    }
    io::stderr().write_all(&errors)?;
    if status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&errors);
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).map(str::to_string);
    Err(last.unwrap_or_else(|| format!("sh -c {cmd:?}: {status}")).into())
}

fn subscribe(bus: &EventBus, args: &SubscribeArgs) -> Result<()> {
    if let Some(name) = &args.group {
        return subscribe_group(bus, args, name);
    }
    signal::catch_stop_signals();
    // A timeout past what the clock can represent is no deadline.
    let deadline = args.timeout.and_then(|t| Instant::now().checked_add(t));
    let past_deadline = move || deadline.is_some_and(|d| Instant::now() >= d);
    let broken = Arc::new(AtomicBool::new(false));
    let out =
        Arc::new(Mutex::new(EventPrinter::new(io::stdout(), args.output.format(), json_line)));
    let after = after_positions(std::slice::from_ref(&args.topic), &args.after)?;
    if !after.is_empty() && matches!(args.from, FromArg::Since(_)) {
        return Err(Usage(
            "--after with --from a time is not exact (the time would also apply to the topics --after names); expected --from new or beginning"
                .to_string(),
        )
        .into());
    }
    let mut config = SubscribeConfig::new(args.topic.clone(), start_of(args.from)).after(after);
    config.max_events = args.count;
    config.give_up_after = args.give_up_after;
    let subscription = bus.subscribe_with(config, printer(out.clone(), broken.clone()))?;
    eprintln!("Listening on {}", args.topic);
    loop {
        if subscription.wait_timeout(Duration::from_millis(20)) {
            break;
        }
        if signal::stop_requested() || broken.load(Ordering::SeqCst) || past_deadline() {
            break;
        }
    }
    // Stops after the event being printed.
    let result = subscription.unsubscribe();
    if broken.load(Ordering::SeqCst) {
        return Ok(());
    }
    finish_shared(&out)?;
    result?;
    Ok(())
}

fn history(bus: &EventBus, args: &HistoryArgs, out: &mut dyn Write) -> Result<()> {
    let limit = match (args.limit, args.last) {
        (Some(n), _) => Some(Limit::First(n)),
        (None, Some(n)) => Some(Limit::Last(n)),
        (None, None) => None,
    };
    let mut positions = after_positions(&args.topic, &args.after)?;
    let mut query = Query {
        topics: args.topic.clone(),
        source: args.source.clone(),
        correlation_id: args.correlation_id.clone(),
        since: args.since,
        until: args.until,
        after: None,
        limit,
    };
    // One exact topic: the store seeks to the cursor. Otherwise the cursors
    // filter the query's stream, and the limit applies to what passes.
    if let Some(topic) =
        query.single_topic().filter(|t| positions.len() == 1 && positions.contains_key(t))
    {
        query.after = positions.remove(&topic);
    }
    let limit = if positions.is_empty() { None } else { query.limit.take() };
    let events = bus.read(&query)?.filter(move |item| match item {
        Ok(e) => positions.get(&e.event.topic).is_none_or(|c| e.cursor > *c),
        Err(_) => true,
    });
    let mut printer =
        EventPrinter::new(io::BufWriter::new(out), args.output.format(), history_line);
    match limit {
        None => {
            for item in events {
                printer.push(&item?)?;
            }
        }
        Some(Limit::First(n)) => {
            for item in events.take(n) {
                printer.push(&item?)?;
            }
        }
        Some(Limit::Last(n)) => {
            let mut newest = VecDeque::with_capacity(n.min(4096));
            for item in events {
                newest.push_back(item?);
                if newest.len() > n {
                    newest.pop_front();
                }
            }
            for e in &newest {
                printer.push(e)?;
            }
        }
    }
    printer.finish()?;
    Ok(())
}

fn replay(bus: &EventBus, args: &ReplayArgs, out: &mut dyn Write) -> Result<()> {
    let mut config = ReplayConfig::new(args.topic.clone()).since(args.since).speed(args.speed);
    config.until = args.until;
    // A progress bar only for a person watching a replay that takes a while.
    let mut progress = None;
    if io::stderr().is_terminal() {
        let estimate = bus.replay_estimate(&config)?;
        if estimate.duration > Duration::from_secs(2) {
            progress = Some(estimate.events);
        }
    }
    let format = args.output.format();
    let shared = Arc::new(Mutex::new(EventPrinter::new(io::stdout(), format, replay_line)));
    let handler_printer = shared.clone();
    let done = Arc::new(AtomicU64::new(0));
    let counter = done.clone();
    let report = bus.replay(&config, move |e: &StoredEvent| {
        if let Err(err) = print_now(&handler_printer, e) {
            if err.kind() == io::ErrorKind::BrokenPipe {
                // Nobody reads any more: stop, as a pipeline expects.
                std::process::exit(0);
            }
            return Err(err.into());
        }
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(total) = progress {
            draw_progress(n, total);
        }
        Ok(())
    })?;
    if progress.is_some() {
        eprint!("\r\x1b[K");
    }
    finish_shared(&shared)?;
    let summary = format!("Replayed {}.", count(report.delivered, "event"));
    let mut printer = EventPrinter::new(out, format, replay_line);
    if format == Format::Text {
        // The original's blank line before the count.
        printer.line("")?;
    }
    summarize(format, &mut printer, &summary)?;
    if report.failed > 0 {
        bail!("{} could not be printed", count(report.failed, "event"));
    }
    Ok(())
}

fn draw_progress(done: u64, total: u64) {
    const WIDTH: u64 = 30;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH).min(WIDTH) as usize;
    let bar = format!("{}{}", "#".repeat(filled), "-".repeat(WIDTH as usize - filled));
    eprint!("\r[{bar}] {done}/{total}");
}

fn topics(bus: &EventBus, format: Format, out: &mut dyn Write) -> Result<()> {
    let topics = bus.list_topics()?;
    if format != Format::Text {
        let names: Vec<&str> = topics.iter().map(|t| t.as_str()).collect();
        writeln!(out, "{}", serde_json::to_string(&names)?)?;
    } else if topics.is_empty() {
        eprintln!("No topics found.");
    } else {
        for t in &topics {
            writeln!(out, "{t}")?;
        }
    }
    Ok(())
}

fn stats(bus: &EventBus, args: &StatsArgs, out: &mut dyn Write) -> Result<()> {
    let stats = bus.stats(args.topic.as_ref())?;
    if args.output.format() != Format::Text {
        writeln!(out, "{}", serde_json::to_string(&stats)?)?;
        return Ok(());
    }
    let time = |t: Option<seed_event::Timestamp>| t.map_or("-".to_string(), python_isoformat);
    let rows: Vec<Vec<String>> = stats
        .topics
        .iter()
        .map(|s| {
            vec![
                s.topic.to_string(),
                s.events.to_string(),
                s.bytes.to_string(),
                time(s.first),
                time(s.last),
            ]
        })
        .collect();
    write_table(out, &["TOPIC", "EVENTS", "BYTES", "FIRST", "LAST"], &rows)?;
    let rows: Vec<Vec<String>> = stats
        .consumers
        .iter()
        .flat_map(|c| {
            c.positions.iter().map(|p| {
                vec![
                    c.name.to_string(),
                    p.topic.to_string(),
                    p.cursor.to_string(),
                    p.lag.to_string(),
                ]
            })
        })
        .collect();
    if !rows.is_empty() {
        writeln!(out)?;
        write_table(out, &["CONSUMER", "TOPIC", "POSITION", "LAG"], &rows)?;
    }
    Ok(())
}

/// Left-aligned columns, two spaces apart.
fn write_table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

fn redrive(bus: &EventBus, args: &RedriveArgs, out: &mut dyn Write) -> Result<()> {
    let events = bus.redrive(&args.topic, args.id)?;
    let format = args.output.format();
    if format == Format::Text {
        writeln!(
            out,
            "Redrove {} from {}.",
            count(events.len() as u64, "dead letter"),
            args.topic
        )?;
        return Ok(());
    }
    let mut printer = EventPrinter::new(io::BufWriter::new(out), format, json_line);
    for e in &events {
        printer.push(e)?;
    }
    printer.finish()?;
    Ok(())
}

/// Lists the work groups, or deletes one (exit status 1 when the question was answered no).
fn groups(bus: &EventBus, args: &GroupsArgs, out: &mut dyn Write) -> Result<u8> {
    if let Some(GroupsAction::Delete { name, confirm }) = &args.action {
        if !confirm {
            if !io::stdin().is_terminal() {
                return Err(Usage(
                    "refusing to delete a group without --confirm: standard input is not a terminal to ask on"
                        .to_string(),
                )
                .into());
            }
            eprint!("Delete group '{name}' with its positions and unacked events? [y/N] ");
            let mut answer = String::new();
            io::stdin().lock().read_line(&mut answer)?;
            if !answer.trim().eq_ignore_ascii_case("y") {
                writeln!(out, "Aborted.")?;
                return Ok(1);
            }
        }
        if bus.delete_group(name)? {
            writeln!(out, "Deleted group '{name}'.")?;
            return Ok(0);
        }
        return Err(Usage(format!("there is no group {name}; `seed groups` lists them")).into());
    }
    let groups = bus.groups()?;
    if args.output.format() != Format::Text {
        let json: Vec<serde_json::Value> = groups
            .iter()
            .map(|g| {
                serde_json::json!({
                    "name": g.name,
                    "pattern": g.pattern,
                    "members": g.members.iter().map(|id| serde_json::json!({"id": id})).collect::<Vec<_>>(),
                    "exclusive": g.exclusive,
                    "active": g.active,
                    "in_flight": g.in_flight,
                    "waiting": g.waiting,
                    "redelivered": g.redelivered,
                    "dead_lettered": g.dead_lettered,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string(&json)?)?;
        return Ok(0);
    }
    if groups.is_empty() {
        eprintln!("No groups found.");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            vec![
                g.name.clone(),
                g.pattern.clone(),
                if g.exclusive { "exclusive" } else { "shared" }.to_string(),
                g.members.len().to_string(),
                g.in_flight.to_string(),
                g.waiting.to_string(),
                g.redelivered.to_string(),
                g.dead_lettered.to_string(),
            ]
        })
        .collect();
    let header = [
        "GROUP",
        "PATTERN",
        "MODE",
        "MEMBERS",
        "IN FLIGHT",
        "WAITING",
        "REDELIVERED",
        "DEAD-LETTERED",
    ];
    write_table(out, &header, &rows)?;
    Ok(0)
}

/// Clears; exit status 1 when the question was answered no.
fn clear(bus: &EventBus, args: &ClearArgs, out: &mut dyn Write) -> Result<u8> {
    let older =
        args.before.map(|t| format!(" older than {}", python_isoformat(t))).unwrap_or_default();
    if !args.confirm {
        if !io::stdin().is_terminal() {
            return Err(Usage(
                "refusing to clear without --confirm: standard input is not a terminal to ask on"
                    .to_string(),
            )
            .into());
        }
        match &args.topic {
            Some(t) => eprint!("Clear all events{older} for topic '{t}'? [y/N] "),
            None => eprint!("Clear ALL events{older}? [y/N] "),
        }
        let mut answer = String::new();
        io::stdin().lock().read_line(&mut answer)?;
        if !answer.trim().eq_ignore_ascii_case("y") {
            writeln!(out, "Aborted.")?;
            return Ok(1);
        }
    }
    let removed = bus.clear(&Clear { topic: args.topic.clone(), before: args.before })?;
    match &args.topic {
        Some(t) => writeln!(out, "Cleared {}{older} from topic '{t}'.", count(removed, "event"))?,
        None => writeln!(out, "Cleared {}{older}.", count(removed, "total event"))?,
    }
    Ok(0)
}

fn import(cli: &Cli, legacy_dir: &Path, out: &mut dyn Write) -> Result<()> {
    if redis_url(cli).is_some() {
        return Err(Usage(
            "seed import writes into the file store; run it without --redis (and SEED_REDIS_URL)"
                .to_string(),
        )
        .into());
    }
    let dir = events_dir(cli);
    let store = open_file_store(cli)?;
    let report = store_file::import_legacy(&store, legacy_dir)
        .with_context(|| format!("cannot import {}", legacy_dir.display()))?;
    writeln!(
        out,
        "Imported {} from {} into {} ({} already present).",
        count(report.imported, "event"),
        count(report.files as u64, "file"),
        dir.display(),
        report.already_present
    )?;
    if !report.bad_lines.is_empty() {
        for bad in &report.bad_lines {
            eprintln!("  {bad}");
        }
        bail!(
            "{} could not be imported as events (listed above); everything else was",
            count(report.bad_lines.len() as u64, "line")
        );
    }
    Ok(())
}
