//! The operator's subcommands of the worker program ([`run_worker`](crate::run_worker)):
//! see what is in the queues and put it right without redis-cli. Each is a thin layer over
//! the inspection API ([`Task`], [`Tiger::queue_stats`], ...).
//!
//! Output is a table for people, or JSON with `--json` for scripts. Exit codes:
//! 0 done (also when there was nothing to do), 1 Redis or another failure, 2 a usage error,
//! 3 no such task, 4 the task is in a state the command does not apply to, 5 the
//! confirmation was declined (nothing changed).

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comfy_table::{CellAlignment, Table, presets::NOTHING};
use serde_json::json;

use crate::{
    Error, Result, State, StateCounts, Task, Tiger, When,
    cli::{non_empty, parse_seconds},
    queue_matches,
    time::now,
};

/// Exit status: no such task.
pub const EXIT_NOT_FOUND: i32 = 3;
/// Exit status: the task is in a state the command does not apply to.
pub const EXIT_WRONG_STATE: i32 = 4;
/// Exit status: the confirmation was declined; nothing changed.
pub const EXIT_DECLINED: i32 = 5;

/// The subcommands. Without one, the program runs a worker.
#[derive(Debug, Clone, clap::Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// A table of every queue's tasks by state.
    Stats {
        /// Refresh every SECONDS (default 2) until Ctrl-C; with --json, one line per refresh.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2", value_parser = parse_seconds)]
        watch: Option<f64>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The tasks of a queue in one state, newest first.
    List {
        /// The queue.
        queue: String,
        /// queued, active, scheduled or error.
        #[arg(value_parser = parse_state)]
        state: State,
        /// How many tasks to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// How many of the newest to skip first.
        #[arg(long, default_value_t = 0)]
        skip: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A task: where it is, its JSON and options, and every failed execution with its
    /// traceback.
    Show {
        /// The task id.
        id: String,
        /// Only on this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Only the last N failed executions (default: every one).
        #[arg(long, value_name = "N")]
        executions: Option<usize>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Puts tasks in error back in their queue to run now.
    Retry(Selection),
    /// Deletes tasks in error, with their records.
    Delete(Selection),
    /// Removes scheduled (or, with --state queued, queued) tasks before they run.
    Cancel(Selection),
    /// Gives a scheduled task a new due time: `now`, a delay (`90s`, `1h 30m`), an RFC 3339
    /// time (`2026-12-24T18:00:00Z`) or Unix seconds.
    Reschedule {
        /// The task id.
        id: String,
        /// When it should run.
        #[arg(value_parser = parse_when)]
        when: When,
        /// Only on this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Say what was done in JSON.
        #[arg(long)]
        json: bool,
    },
    /// Deletes tasks in error in bulk (by default from every queue the worker's config
    /// serves).
    PurgeErrored {
        /// Only tasks that failed longer ago than this (`7d`, `12h`).
        #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
        /// Only these queues and their subqueues (comma-separated).
        #[arg(short = 'q', long, value_delimiter = ',', value_name = "QUEUES")]
        queues: Vec<String>,
        /// Not these queues and their subqueues (comma-separated).
        #[arg(short = 'e', long, value_delimiter = ',', value_name = "QUEUES")]
        exclude_queues: Vec<String>,
        /// At most this many tasks.
        #[arg(long)]
        limit: Option<usize>,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
        /// Say what was done in JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serves the web dashboard (see `tiger::Dashboard`) until Ctrl-C.
    Dashboard {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
        bind: std::net::SocketAddr,
        /// Require this token for every page and action (or set TIGER_DASHBOARD_TOKEN).
        #[arg(long, env = "TIGER_DASHBOARD_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Show no actions and refuse them.
        #[arg(long)]
        read_only: bool,
    },
    /// Pauses a queue for a while: tiger workers (and Python workers with -M) take nothing
    /// from it until then; tasks already running go on. `pause <queue> 0` resumes it.
    Pause {
        /// The queue (its subqueues are not paused).
        queue: String,
        /// For how long: seconds, or a span such as `90s` or `1h 30m`.
        #[arg(value_parser = parse_span)]
        seconds: f64,
        /// Say what was done in JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Which tasks `retry`, `delete` and `cancel` act on: one id, or `--all` of a state.
#[derive(Debug, Clone, clap::Args)]
#[non_exhaustive]
pub struct Selection {
    /// The task id (or --all).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub id: Option<String>,
    /// Every task in the state the command works on (error; for `cancel`, scheduled or
    /// the --state given) instead of one id; asks first unless --yes.
    #[arg(long)]
    pub all: bool,
    /// Only on these queues and their subqueues (comma-separated).
    #[arg(short = 'q', long, value_delimiter = ',', value_name = "QUEUES")]
    pub queues: Vec<String>,
    /// For `cancel`: queued or scheduled (with --all, default scheduled; with an id, either).
    #[arg(long, value_parser = parse_state)]
    pub state: Option<State>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Say what was done in JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `retry`, `delete` and `cancel` do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Retry,
    Delete,
    Cancel,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::Delete => "delete",
            Action::Cancel => "cancel",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Action::Retry => "retried (now queued)",
            Action::Delete => "deleted",
            Action::Cancel => "cancelled",
        }
    }

    /// The states it applies to, the first being the one `--all` takes by default.
    fn states(self) -> &'static [State] {
        match self {
            Action::Retry | Action::Delete => &[State::Error],
            Action::Cancel => &[State::Scheduled, State::Queued],
        }
    }

    async fn apply(self, tiger: &Tiger, task: &Task) -> Result<()> {
        match self {
            Action::Retry => task.retry(tiger).await,
            Action::Delete => task.delete(tiger).await,
            Action::Cancel => task.cancel(tiger).await,
        }
    }
}

/// Runs `command` and returns the exit status, having printed what happened (errors to
/// stderr).
pub(crate) async fn run(command: Command, tiger: &Tiger) -> i32 {
    match dispatch(command, tiger).await {
        Ok(code) => code,
        Err(err) => failed(&err),
    }
}

/// Reports `err` on stderr and returns the exit status it stands for.
pub(crate) fn failed(err: &Error) -> i32 {
    complain(&format!("error: {err}"));
    match err {
        Error::TaskNotFound { .. } => EXIT_NOT_FOUND,
        Error::WrongState { .. } => EXIT_WRONG_STATE,
        // A malformed URL or setting on the command line is a usage error.
        Error::Config(_) => 2,
        _ => 1,
    }
}

async fn dispatch(command: Command, tiger: &Tiger) -> Result<i32> {
    match command {
        Command::Stats { watch, json } => stats(tiger, watch, json).await,
        Command::List {
            queue,
            state,
            limit,
            skip,
            json,
        } => list(tiger, &queue, state, skip, limit, json).await,
        Command::Show {
            id,
            queue,
            executions,
            json,
        } => show(tiger, &id, queue.as_deref(), executions, json).await,
        Command::Retry(selection) => act(tiger, Action::Retry, selection).await,
        Command::Delete(selection) => act(tiger, Action::Delete, selection).await,
        Command::Cancel(selection) => act(tiger, Action::Cancel, selection).await,
        Command::Reschedule {
            id,
            when,
            queue,
            json,
        } => reschedule(tiger, &id, when, queue.as_deref(), json).await,
        Command::PurgeErrored {
            older_than,
            queues,
            exclude_queues,
            limit,
            yes,
            json,
        } => {
            // An age past the epoch leaves nothing older.
            let cutoff =
                older_than.map(|age| SystemTime::now().checked_sub(age).unwrap_or(UNIX_EPOCH));
            let (queues, exclude) = (non_empty(queues), non_empty(exclude_queues));
            let filter = (queues.as_slice(), exclude.as_slice());
            purge(tiger, filter, cutoff, limit, yes, json).await
        }
        Command::Dashboard {
            bind,
            token,
            read_only,
        } => {
            let mut dashboard = crate::Dashboard::new().read_only(read_only);
            if let Some(token) = token {
                dashboard = match dashboard.token(token) {
                    Ok(dashboard) => dashboard,
                    Err(err) => {
                        complain(&format!("error: {err}"));
                        return Ok(2);
                    }
                };
            }
            let mut terminate = tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::terminate(),
            )
            .map_err(|source| Error::Io {
                context: "cannot listen for signals".into(),
                source,
            })?;
            tokio::select! {
                served = dashboard.serve(tiger.clone(), bind) => match served {
                    Err(Error::Config(why)) => {
                        complain(&format!("error: {why}"));
                        Ok(2)
                    }
                    served => served.map(|()| 0),
                },
                _ = tokio::signal::ctrl_c() => Ok(0),
                _ = terminate.recv() => Ok(0),
            }
        }
        Command::Pause {
            queue,
            seconds,
            json,
        } => {
            tiger
                .set_queue_system_lock(&queue, Duration::from_secs_f64(seconds))
                .await?;
            let until = now() + seconds;
            let text = if seconds == 0.0 {
                format!("queue `{queue}` resumed")
            } else {
                format!("queue `{queue}` paused until {}", timestamp(until))
            };
            say(json, text, json!({ "queue": queue, "paused_until": until }));
            Ok(0)
        }
    }
}

async fn stats(tiger: &Tiger, watch: Option<f64>, json: bool) -> Result<i32> {
    let clear = watch.is_some() && !json && std::io::stdout().is_terminal();
    loop {
        let stats = match tiger.queue_stats().await {
            Ok(stats) => stats,
            // Watching goes on through an outage, saying so each time.
            Err(err) if watch.is_some() && crate::client::is_transient(&err) => {
                complain(&format!("error: {err} (trying again)"));
                wait(watch).await;
                continue;
            }
            Err(err) => return Err(err),
        };
        let names: Vec<&str> = stats.keys().map(String::as_str).collect();
        let pauses = tiger.pauses(&names).await.unwrap_or_default();
        let paused: BTreeMap<&str, f64> = names
            .iter()
            .zip(&pauses)
            .filter_map(|(queue, until)| Some((*queue, (*until)?)))
            .collect();
        if json {
            let mut out = serde_json::Map::new();
            for (queue, counts) in &stats {
                let mut entry = serde_json::to_value(counts).unwrap_or_default();
                if let (Some(until), Some(fields)) =
                    (paused.get(queue.as_str()), entry.as_object_mut())
                {
                    fields.insert("paused_until".to_owned(), json!(until));
                }
                out.insert(queue.clone(), entry);
            }
            if !emit(&serde_json::Value::Object(out).to_string()) {
                return Ok(0);
            }
        } else {
            let mut text = String::new();
            if clear {
                text.push_str("\x1b[2J\x1b[H");
            }
            if watch.is_some() {
                text.push_str(&format!("{}\n", timestamp(now())));
            }
            text.push_str(&stats_table(&stats, &paused, tiger.keys().prefix()));
            if !emit(&text) {
                return Ok(0);
            }
        }
        if watch.is_none() || wait(watch).await {
            return Ok(0);
        }
    }
}

/// Waits `every` seconds; true when Ctrl-C came first (or there is nothing to wait for).
async fn wait(every: Option<f64>) -> bool {
    let Some(every) = every else {
        return true;
    };
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs_f64(every)) => false,
        _ = tokio::signal::ctrl_c() => true,
    }
}

fn stats_table(
    stats: &BTreeMap<String, StateCounts>,
    paused: &BTreeMap<&str, f64>,
    prefix: &str,
) -> String {
    if stats.is_empty() {
        return format!("no tasks in any queue (key prefix `{prefix}`)");
    }
    let mut headings = vec!["queue", "queued", "active", "scheduled", "error"];
    if !paused.is_empty() {
        headings.push("paused until");
    }
    let mut table = table(&headings);
    let mut total = StateCounts::default();
    for (queue, counts) in stats {
        total.queued += counts.queued;
        total.active += counts.active;
        total.scheduled += counts.scheduled;
        total.error += counts.error;
        let mut row = counts_row(&clean(queue), counts);
        if !paused.is_empty() {
            row.push(
                paused
                    .get(queue.as_str())
                    .map_or_else(String::new, |until| timestamp(*until)),
            );
        }
        table.add_row(row);
    }
    if stats.len() > 1 {
        table.add_row(counts_row("(all)", &total));
    }
    table.to_string()
}

fn counts_row(queue: &str, counts: &StateCounts) -> Vec<String> {
    let mut row = vec![queue.to_owned()];
    row.extend(State::ALL.iter().map(|s| counts.get(*s).to_string()));
    row
}

async fn list(
    tiger: &Tiger,
    queue: &str,
    state: State,
    skip: usize,
    limit: usize,
    json: bool,
) -> Result<i32> {
    let (total, tasks) = Task::tasks_from_queue(tiger, queue, state, skip, limit, 0).await?;
    if json {
        emit(&json!({ "total": total, "tasks": tasks }).to_string());
        return Ok(0);
    }
    if limit == 0 {
        emit(&format!(
            "{} {} on queue `{queue}`",
            plural(total, "task"),
            state.phrase()
        ));
        return Ok(0);
    }
    if tasks.is_empty() {
        emit(&format!(
            "{} {} on queue `{queue}`; none past the first {skip}",
            plural(total, "task"),
            state.phrase()
        ));
        return Ok(0);
    }
    let when = match state {
        State::Queued => "queued",
        State::Active => "last heartbeat",
        State::Scheduled => "due",
        State::Error => "failed",
    };
    let mut table = table(&["id", "function", "arguments", when, "failures"]);
    let now = now();
    for task in &tasks {
        let (func, arguments) = match &task.data {
            Some(data) => (clean(&data.func), preview(&clean(&call_text(data)))),
            None if task.json.is_some() => ("(unreadable JSON)".to_owned(), String::new()),
            None => ("(JSON gone)".to_owned(), String::new()),
        };
        table.add_row(vec![
            clean(&task.id),
            func,
            arguments,
            relative(task.ts, now),
            task.n_executions.to_string(),
        ]);
    }
    emit(&format!(
        "{} {} on queue `{queue}`, newest first; {} to {}:\n{table}",
        plural(total, "task"),
        state.phrase(),
        skip + 1,
        skip + tasks.len()
    ));
    Ok(0)
}

/// The places task `id` is in, on `queue` only if given, with the last `executions`
/// records (`None`: all); [`Error::TaskNotFound`] if none.
async fn locate(
    tiger: &Tiger,
    id: &str,
    queue: Option<&str>,
    executions: Option<usize>,
) -> Result<Vec<Task>> {
    let found: Vec<Task> = Task::find_loading(tiger, id, executions)
        .await?
        .into_iter()
        .filter(|task| queue.is_none_or(|q| task.queue == q))
        .collect();
    if found.is_empty() {
        return Err(Error::TaskNotFound {
            id: id.to_owned(),
            place: queue.map_or_else(|| "any queue".to_owned(), |q| format!("queue `{q}`")),
        });
    }
    Ok(found)
}

async fn show(
    tiger: &Tiger,
    id: &str,
    queue: Option<&str>,
    executions: Option<usize>,
    json: bool,
) -> Result<i32> {
    let found = locate(tiger, id, queue, executions).await?;
    if json {
        emit(&serde_json::to_string(&found).unwrap_or_default());
        return Ok(0);
    }
    let texts: Vec<String> = found.iter().map(describe).collect();
    emit(&texts.join("\n\n"));
    Ok(0)
}

/// A task for people: where it is, what it runs, its options and its failures.
fn describe(task: &Task) -> String {
    let now = now();
    let mut out = format!(
        "task {}\n  queue:       {}\n  state:       {} ({} {})\n",
        clean(&task.id),
        clean(&task.queue),
        task.state,
        match task.state {
            State::Queued => "since",
            State::Active => "last heartbeat",
            State::Scheduled => "due",
            State::Error => "failed",
        },
        relative(task.ts, now),
    );
    match (&task.data, &task.json) {
        (Some(data), Some(_)) => {
            out.push_str(&format!("  function:    {}\n", clean(&data.func)));
            out.push_str(&format!(
                "  args:        {}\n",
                serde_json::to_string(&data.args).unwrap_or_default()
            ));
            if !data.kwargs.is_empty() {
                out.push_str(&format!(
                    "  kwargs:      {}\n",
                    serde_json::to_string(&data.kwargs).unwrap_or_default()
                ));
            }
            let options = options_text(data);
            if !options.is_empty() {
                out.push_str(&format!("  options:     {}\n", clean(&options)));
            }
            if let Some(at) = data.time_last_queued {
                out.push_str(&format!("  queued at:   {}\n", timestamp(at)));
            }
            if let Some(at) = data.scheduled_at {
                out.push_str(&format!("  run at:      {}\n", timestamp(at)));
            }
        }
        (None, Some(json)) => {
            out.push_str(&format!("  JSON (not a task's JSON): {}\n", clean(json)));
        }
        _ if task.problem.is_some() => {}
        _ => out.push_str("  JSON:        gone (the task's key is missing; delete or cancel it)\n"),
    }
    if let Some(problem) = &task.problem {
        out.push_str(&format!("  problem:     {}\n", clean(problem)));
    }
    out.push_str(&format!(
        "  failed runs: {} ({} shown)",
        task.n_executions,
        task.executions.len()
    ));
    for (n, record) in task.executions.iter().enumerate() {
        out.push_str(&format!("\n  --- failure {}", n + 1));
        if let Some(raw) = &record.unreadable {
            out.push_str(&format!(": unreadable record: {}", clean(raw)));
            continue;
        }
        out.push_str(&format!(
            ": {} at {}",
            clean(
                record
                    .exception_name
                    .as_deref()
                    .unwrap_or("(no exception name)")
            ),
            record.time_failed.map_or_else(|| "?".to_owned(), timestamp),
        ));
        if let Some(host) = &record.host {
            out.push_str(&format!(" on {}", clean(host)));
        }
        if let (Some(start), Some(end)) = (record.time_started, record.time_failed) {
            out.push_str(&format!(", after {:.3} s", end - start));
        }
        if record.retry == Some(true) {
            out.push_str(", asked to be retried");
        }
        if let Some(traceback) = &record.traceback {
            for line in traceback.trim_end().lines() {
                out.push_str(&format!("\n    {}", clean(line)));
            }
        }
    }
    out
}

fn options_text(data: &crate::TaskData) -> String {
    let mut options = Vec::new();
    let names = |list: &Option<Vec<String>>| list.as_ref().map(|l| l.join(", "));
    if let Some(keys) = names(&data.unique_key) {
        options.push(format!("unique_key=[{keys}]"));
    } else if data.unique {
        options.push("unique".to_owned());
    }
    if let Some(keys) = names(&data.lock_key) {
        options.push(format!("lock_key=[{keys}]"));
    } else if data.lock {
        options.push("lock".to_owned());
    }
    if let Some(method) = &data.retry_method {
        options.push(format!("retry_method={method}"));
    }
    if let Some(on) = names(&data.retry_on) {
        options.push(format!("retry_on=[{on}]"));
    }
    if let Some(limit) = data.hard_timeout {
        options.push(format!("hard_timeout={limit}s"));
    }
    if let Some(n) = data.max_queue_size {
        options.push(format!("max_queue_size={n}"));
    }
    if let Some(n) = data.max_stored_executions {
        options.push(format!("max_stored_executions={n}"));
    }
    options.join(", ")
}

async fn act(tiger: &Tiger, action: Action, selection: Selection) -> Result<i32> {
    if let Some(state) = selection.state
        && !action.states().contains(&state)
    {
        complain(&format!(
            "error: `{}` applies to tasks that are {}, not {}",
            action.verb(),
            names(action.states()),
            state.phrase()
        ));
        return Ok(2);
    }
    let Some(id) = &selection.id else {
        return act_on_all(tiger, action, &selection).await;
    };
    let found: Vec<Task> = Task::find_loading(tiger, id, Some(0))
        .await?
        .into_iter()
        .filter(|task| queue_matches(&task.queue, &selection.queues, &[]))
        .collect();
    let allowed = selection
        .state
        .map_or_else(|| action.states().to_vec(), |state| vec![state]);
    let task = match found.iter().find(|task| allowed.contains(&task.state)) {
        Some(task) => task,
        None => {
            return Err(match found.first() {
                Some(other) => other.wrong_state(&allowed),
                None if selection.queues.is_empty() => Error::TaskNotFound {
                    id: id.clone(),
                    place: "any queue".to_owned(),
                },
                None => Error::TaskNotFound {
                    id: id.clone(),
                    place: format!("queues {}", selection.queues.join(", ")),
                },
            });
        }
    };
    action.apply(tiger, task).await?;
    say(
        selection.json,
        format!(
            "task {} on queue `{}`: {}",
            task.id,
            task.queue,
            action.done()
        ),
        json!({ "done": action.verb(), "tasks": 1, "ids": [task.id], "queue": task.queue }),
    );
    Ok(0)
}

async fn act_on_all(tiger: &Tiger, action: Action, selection: &Selection) -> Result<i32> {
    let state = selection.state.unwrap_or(action.states()[0]);
    let stats = tiger.queue_stats().await?;
    let queues: Vec<(&String, u64)> = stats
        .iter()
        .filter(|(queue, _)| queue_matches(queue, &selection.queues, &[]))
        .map(|(queue, counts)| (queue, counts.get(state)))
        .filter(|(_, count)| *count > 0)
        .collect();
    let total: u64 = queues.iter().map(|(_, n)| n).sum();
    if total == 0 {
        say(
            selection.json,
            format!("no tasks {} to {}", state.phrase(), action.verb()),
            json!({ "done": action.verb(), "tasks": 0 }),
        );
        return Ok(0);
    }
    let listed: Vec<&str> = queues.iter().map(|(q, _)| q.as_str()).collect();
    let question = format!(
        "{} {} {} on {} ({})?",
        action.verb(),
        plural(total, "task"),
        state.phrase(),
        plural(listed.len() as u64, "queue"),
        listed.join(", ")
    );
    if !selection.yes && !confirm(&question) {
        emit("nothing changed");
        return Ok(EXIT_DECLINED);
    }
    let to = match action {
        Action::Retry => Some(State::Queued),
        Action::Delete | Action::Cancel => None,
    };
    // What was counted, and no more: tasks that come back to this state meanwhile (a
    // worker failing a retried task again) are not taken twice.
    let cutoff = (state != State::Scheduled).then(now);
    let mut done = 0;
    for (queue, count) in queues {
        let limit = usize::try_from(count).unwrap_or(usize::MAX);
        done += tiger.move_all(queue, state, to, cutoff, limit).await?;
    }
    say(
        selection.json,
        format!("{}: {}", action.done(), plural(done, "task")),
        json!({ "done": action.verb(), "tasks": done, "queues": listed }),
    );
    Ok(0)
}

async fn reschedule(
    tiger: &Tiger,
    id: &str,
    when: When,
    queue: Option<&str>,
    json: bool,
) -> Result<i32> {
    let found = locate(tiger, id, queue, Some(0)).await?;
    let task = found
        .iter()
        .find(|task| task.state == State::Scheduled)
        .unwrap_or(&found[0]);
    let due = when.timestamp(now());
    let at = Duration::try_from_secs_f64(due)
        .ok()
        .and_then(|since| UNIX_EPOCH.checked_add(since))
        .ok_or_else(|| Error::Config(format!("the due time {due} is out of range")))?;
    task.update_scheduled_time(tiger, When::At(at)).await?;
    say(
        json,
        format!(
            "task {id} on queue `{}`: due {}",
            task.queue,
            timestamp(due)
        ),
        json!({ "id": id, "queue": task.queue, "due": due }),
    );
    Ok(0)
}

async fn purge(
    tiger: &Tiger,
    (queues, exclude): (&[String], &[String]),
    cutoff: Option<SystemTime>,
    limit: Option<usize>,
    yes: bool,
    json: bool,
) -> Result<i32> {
    if !yes {
        let age = cutoff.map_or_else(String::new, |at| {
            format!(
                " that failed before {}",
                timestamp(When::At(at).timestamp(0.0))
            )
        });
        let scope = match (queues.is_empty(), exclude.is_empty()) {
            (true, true) => "every queue this worker's config serves".to_owned(),
            (false, true) => format!("queues {}", queues.join(", ")),
            (true, false) => format!("every queue but {}", exclude.join(", ")),
            (false, false) => format!("queues {} but {}", queues.join(", "), exclude.join(", ")),
        };
        let most = limit.map_or_else(String::new, |n| format!(" (at most {n})"));
        if !confirm(&format!("delete the tasks in error{age} on {scope}{most}?")) {
            emit("nothing changed");
            return Ok(EXIT_DECLINED);
        }
    }
    let purged = tiger
        .purge_errored_tasks(queues, exclude, cutoff, limit)
        .await?;
    say(
        json,
        format!("purged {} in error", plural(purged, "task")),
        json!({ "purged": purged }),
    );
    Ok(0)
}

/// Asks `question` on stderr and reads the answer from stdin: only `y` or `yes` agrees.
fn confirm(question: &str) -> bool {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{question} [y/N] ");
    let _ = err.flush();
    drop(err);
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Says what was done: `value` as JSON for scripts, else `text`.
fn say(json: bool, text: String, value: serde_json::Value) {
    if json {
        emit(&value.to_string());
    } else {
        emit(&text);
    }
}

/// Prints `text` and a newline to stdout; false when stdout is closed (`| head` is done),
/// which is not an error.
fn emit(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").and_then(|()| out.flush()).is_ok()
}

/// Prints `text` and a newline to stderr, if anyone is listening.
fn complain(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// `text` with control characters (terminal escapes, stray newlines) shown as escapes, so
/// what a task's producer wrote cannot move the cursor or recolour the terminal.
fn clean(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

fn table(headings: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(NOTHING).set_header(headings.to_vec());
    for (i, column) in table.column_iter_mut().enumerate() {
        if i > 0 && headings[i] != "function" && headings[i] != "arguments" {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

pub(crate) fn call_text(data: &crate::TaskData) -> String {
    let args = serde_json::to_string(&data.args).unwrap_or_default();
    if data.kwargs.is_empty() {
        args
    } else {
        format!(
            "{args} {}",
            serde_json::to_string(&data.kwargs).unwrap_or_default()
        )
    }
}

/// At most 60 characters of `text`.
pub(crate) fn preview(text: &str) -> String {
    const MAX: usize = 60;
    if text.chars().count() <= MAX {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(MAX - 1).collect();
    cut.push('…');
    cut
}

/// `ts` (Unix seconds) as UTC date and time.
pub(crate) fn timestamp(ts: f64) -> String {
    let secs = ts.floor();
    chrono::DateTime::from_timestamp(secs as i64, ((ts - secs) * 1e9) as u32).map_or_else(
        || format!("{ts} (Unix seconds)"),
        |at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// `ts` against `now`: `3m 12s ago`, `in 5m`.
pub(crate) fn relative(ts: f64, now: f64) -> String {
    let span = Duration::from_secs((ts - now).abs().round() as u64);
    let text = humantime::format_duration(span).to_string();
    if ts > now + 0.5 {
        format!("in {text}")
    } else if span.is_zero() {
        "now".to_owned()
    } else {
        format!("{text} ago")
    }
}

pub(crate) fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn names(states: &[State]) -> String {
    let names: Vec<&str> = states.iter().map(|s| s.phrase()).collect();
    names.join(" or ")
}

fn parse_state(text: &str) -> std::result::Result<State, String> {
    text.parse().map_err(|err: Error| err.to_string())
}

/// `now`, a delay (`90s`, `1h 30m`), an RFC 3339 time, or Unix seconds.
pub(crate) fn parse_when(text: &str) -> std::result::Result<When, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("now") {
        return Ok(When::In(Duration::ZERO));
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds)
            .ok()
            .filter(|since| since.as_secs() <= LAST_SECOND)
            .map(|since| When::At(UNIX_EPOCH + since))
            .ok_or_else(|| "Unix seconds must be a number from 0 to the year 9999".to_owned());
    }
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        // An offset can carry a time in 9999 past the year's end.
        return match u64::try_from(at.timestamp()) {
            Ok(seconds) if seconds <= LAST_SECOND => Ok(When::At(SystemTime::from(at))),
            _ => Err(format!(
                "`{text}` is not between 1970 and the end of 9999 UTC"
            )),
        };
    }
    match humantime::parse_duration(text) {
        // The due time, not only the delay, stays within the year 9999.
        Ok(delay) if delay.as_secs().saturating_add(crate::time::now() as u64) <= LAST_SECOND => {
            Ok(When::In(delay))
        }
        Ok(_) => Err(format!("`{text}` is too far ahead")),
        Err(_) => Err(format!(
            "`{text}` is not `now`, a delay (90s, 1h 30m), an RFC 3339 time or Unix seconds"
        )),
    }
}

/// The last second of the year 9999, in Unix seconds: no due time goes past it.
const LAST_SECOND: u64 = 253_402_300_799;

/// Seconds, or a span such as `90s` or `1h 30m`.
fn parse_span(text: &str) -> std::result::Result<f64, String> {
    if let Ok(seconds) = parse_seconds(text) {
        return Ok(seconds);
    }
    match humantime::parse_duration(text.trim()) {
        Ok(span) if span.as_secs() <= LAST_SECOND => Ok(span.as_secs_f64()),
        _ => Err(format!(
            "`{text}` is not a number of seconds or a span such as 90s or 1h 30m"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_parses_every_documented_form() {
        assert_eq!(parse_when("now"), Ok(When::In(Duration::ZERO)));
        assert_eq!(
            parse_when("1h 30m"),
            Ok(When::In(Duration::from_secs(5400)))
        );
        assert_eq!(
            parse_when("1700000000"),
            Ok(When::At(UNIX_EPOCH + Duration::from_secs(1_700_000_000)))
        );
        assert_eq!(
            parse_when("2023-11-14T22:13:20Z"),
            Ok(When::At(UNIX_EPOCH + Duration::from_secs(1_700_000_000)))
        );
        assert!(parse_when("tomorrow").is_err());
        // A delay whose due time would pass the year 9999, though the delay itself does not.
        assert_eq!(
            parse_when("253402300799s"),
            Err("`253402300799s` is too far ahead".to_owned())
        );
        assert!(parse_when("7000y").is_ok());
        assert!(parse_when("9999-12-31T23:59:59-23:59").is_err());
        assert!(parse_when("9999-12-31T23:59:59+01:00").is_ok());
        assert!(parse_when("-5").is_err());
    }

    #[test]
    fn what_producers_wrote_cannot_drive_the_terminal() {
        assert_eq!(clean("m:f\u{1b}[31mred\nx"), "m:f\\u{1b}[31mred\\nx");
        assert_eq!(clean("naïve 🐯"), "naïve 🐯");
        assert!(parse_when("1e19").is_err() && parse_when("300000000000y").is_err());
        assert_eq!(parse_span("1h 30m"), Ok(5400.0));
        assert_eq!(parse_span("2.5"), Ok(2.5));
    }

    #[test]
    fn times_read_as_people_say_them() {
        assert_eq!(relative(100.0, 292.0), "3m 12s ago");
        assert_eq!(relative(400.0, 100.0), "in 5m");
        assert_eq!(timestamp(1_700_000_000.5), "2023-11-14 22:13:20 UTC");
        assert_eq!(preview(&"x".repeat(70)).chars().count(), 60);
    }
}
