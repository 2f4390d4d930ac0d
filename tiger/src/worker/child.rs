//! The process executor ([`Executor::Process`](super::Executor::Process)): each group of
//! tasks runs in a child process, a fresh run of the worker's own program that decodes the
//! tasks again, runs them and reports how the run ended on its stdout. The worker keeps
//! everything else: heartbeats, locks and semaphore places, and the writes to Redis.
//!
//! What the process boundary buys: a child that runs past its hard timeout (plus
//! [`KILL_GRACE`]) is killed with SIGKILL, whatever it is doing — a plain `fn` blocked in a
//! system call, a loop that never awaits — and one that aborts, segfaults or is killed by the
//! kernel for want of memory fails only its own tasks, each with a record that says so.
//!
//! The protocol: the worker starts the child with [`CHILD_ENV`] set and writes one JSON
//! [`Request`] to its stdin; the child answers with one line on stdout that starts with
//! [`REPORT_MARK`], followed by the JSON [`Report`]. Anything else the task prints on stdout
//! is passed through to the worker's stdout.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::execute::{self, Plan, Prepared};
use super::finish::{FailureRecord, Verdict};
use super::lease::Lease;
use super::run::{self, Ending, Job};
use crate::{
    Config, Tiger,
    task::{
        outcome::{JOB_TIMEOUT, JobTimeout, TaskFailure},
        registry::Registry,
    },
};

/// Set (to `1`) in the environment of a child process: run the tasks on stdin, not a worker.
pub(crate) const CHILD_ENV: &str = "TIGER_EXECUTOR_CHILD";

/// Starts the child's report line on stdout.
const REPORT_MARK: &str = "\u{1e}tiger-report ";

/// How long past the group's hard timeout the child may take to wind up before it is
/// killed. Inside the child an `async fn` is cancelled at the limit itself; the kill is for
/// what cannot be cancelled.
pub const KILL_GRACE: Duration = Duration::from_secs(1);

/// `exception_name` of a task whose child process died without reporting (a crash, an
/// abort, the kernel's out-of-memory killer, or a program that does not serve children).
pub const CHILD_DIED: &str = "tiger:ChildProcessDied";

/// What the worker sends its child.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    redis_url: String,
    prefix: String,
    queue: String,
    tasks: Vec<RequestTask>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RequestTask {
    id: String,
    body: String,
    failures: u32,
    started: f64,
}

/// How the child's run ended: success, or the failure shared by the group with each task's
/// verdict (worked out by the child, which has the task's options and errors at hand).
type Report = std::result::Result<(), (FailureRecord, Vec<Verdict>)>;

/// A group to run in a child process: what to send it, and the group's hard timeout.
#[derive(Debug)]
pub(crate) struct ChildRun {
    request: Request,
    limit: Duration,
}

/// Prepares the run of `ready` (one function's tasks, already locked) in a child.
pub(crate) fn prepare(ready: &[(Job, Plan)]) -> ChildRun {
    let (first, plan) = &ready[0];
    let limits = ready.iter().map(|(_, plan)| plan.hard_timeout);
    // A batch is one call under the longest limit; other groups run one task after another.
    let limit = if plan.entry.batch.is_some() {
        limits.max().unwrap_or_default()
    } else {
        limits.sum()
    };
    let request = Request {
        redis_url: first.tiger.url().to_owned(),
        prefix: first.tiger.keys().prefix().to_owned(),
        queue: first.queue.clone(),
        tasks: ready
            .iter()
            .map(|(job, plan)| RequestTask {
                id: job.id.clone(),
                body: plan.body.to_string(),
                failures: job.failures,
                started: job.started,
            })
            .collect(),
    };
    ChildRun { request, limit }
}

/// Runs the group in a child process and waits for it, killing it past the group's hard
/// timeout plus [`KILL_GRACE`]. Cancelling this future kills the child too.
pub(crate) async fn run(group: ChildRun) -> Ending {
    let ChildRun { request, limit } = group;
    match spawn_and_wait(&request, limit + KILL_GRACE).await {
        Ok(Some(report)) => Ending::Reported(report),
        Ok(None) => Ending::Ran(Err(killed(limit))),
        Err(text) => Ending::Ran(Err(TaskFailure::message(CHILD_DIED, text))),
    }
}

/// Starts the child, hands it `request` and reads its report. `Ok(None)`: killed at
/// `deadline`. `Err`: it died, or could not be started, without reporting.
async fn spawn_and_wait(
    request: &Request,
    deadline: Duration,
) -> std::result::Result<Option<Report>, String> {
    let program = std::env::current_exe()
        .map_err(|err| format!("cannot find the worker's program to start a child: {err}"))?;
    let mut child = tokio::process::Command::new(&program)
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| {
            format!(
                "cannot start a child process ({}): {err}",
                program.display()
            )
        })?;
    let input = serde_json::to_vec(request).map_err(|err| err.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        // A child that dies before reading everything shows up in its exit status below.
        let _ = stdin.write_all(&input).await;
    }
    // Dropping the wait at the deadline drops the child, which kills it (SIGKILL).
    let Ok(waited) = tokio::time::timeout(deadline, child.wait_with_output()).await else {
        return Ok(None);
    };
    let output = waited.map_err(|err| format!("cannot wait for the child process: {err}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut report = None;
    let mut passed = String::new();
    for line in stdout.split_inclusive('\n') {
        match line.strip_prefix(REPORT_MARK) {
            Some(json) => report = Some(json.trim_end().to_owned()),
            None => passed.push_str(line),
        }
    }
    if !passed.is_empty() {
        let _ = std::io::stdout().write_all(passed.as_bytes());
    }
    match report.map(|json| serde_json::from_str::<Report>(&json)) {
        Some(Ok(report)) => Ok(Some(report)),
        Some(Err(err)) => Err(format!(
            "the child process sent a report that cannot be read: {err}"
        )),
        None => Err(died(output.status)),
    }
}

/// The failure of a group whose child was killed at its limit.
fn killed(limit: Duration) -> TaskFailure {
    let error = JobTimeout {
        seconds: limit.as_secs_f64(),
    };
    TaskFailure {
        exception_name: JOB_TIMEOUT.to_owned(),
        traceback: format!(
            "JobTimeoutException: {error}: its child process did not end within {} s more and \
             was killed (SIGKILL)",
            KILL_GRACE.as_secs_f64()
        ),
        error: Some(Box::new(error)),
    }
}

/// Says how a child that did not report ended.
fn died(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let name = match signal {
                4 => " (SIGILL)",
                6 => " (SIGABRT: an abort, or a failed allocation)",
                7 => " (SIGBUS)",
                8 => " (SIGFPE)",
                9 => " (SIGKILL: the kernel's out-of-memory killer, or an operator)",
                11 => " (SIGSEGV: a segmentation fault)",
                _ => "",
            };
            return format!(
                "the task's child process was killed by signal {signal}{name} before it \
                 reported; the run's outcome is unknown"
            );
        }
    }
    format!(
        "the task's child process exited ({status}) without reporting an outcome: did it \
         crash, or does the worker program's `main` not call `tiger::run_worker` (or \
         `tiger::serve_executor_child`) first?"
    )
}

/// In a child process of the process executor (started with `TIGER_EXECUTOR_CHILD=1` in its
/// environment): runs the tasks the worker sent on stdin, reports on stdout and exits;
/// otherwise returns at once.
///
/// [`run_worker`](crate::run_worker) calls this first thing. A program that runs
/// [`Worker`](crate::Worker) itself with [`Executor::Process`](crate::Executor::Process)
/// must call it at the start of `main`, before anything else that matters, with the same
/// [`Config`] it gives its worker.
pub fn serve_executor_child(config: &Config) {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    crate::cli::init_logging();
    let report = match read_request() {
        Ok(request) => serve(config, request),
        Err(err) => {
            eprintln!("error: the process executor's child cannot read its tasks: {err}");
            std::process::exit(2);
        }
    };
    let line = match serde_json::to_string(&report) {
        Ok(json) => format!("{REPORT_MARK}{json}\n"),
        Err(err) => {
            eprintln!("error: cannot encode the report: {err}");
            std::process::exit(2);
        }
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(line.as_bytes())
        .and_then(|()| stdout.flush());
    // Exit without waiting for the thread of a plain fn past its limit: this ends it.
    std::process::exit(0);
}

fn read_request() -> std::result::Result<Request, String> {
    let mut input = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut input).map_err(|e| e.to_string())?;
    serde_json::from_slice(&input).map_err(|e| e.to_string())
}

/// Runs the requested tasks as the worker would in-process and says how it went.
fn serve(config: &Config, request: Request) -> Report {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|err| {
            eprintln!("error: cannot start the Tokio runtime: {err}");
            std::process::exit(2);
        });
    let report = runtime.block_on(async {
        let config = Config {
            redis_prefix: request.prefix.clone(),
            ..config.clone()
        };
        let tiger = match Tiger::connect_with(&request.redis_url, config).await {
            Ok(tiger) => tiger,
            Err(err) => {
                eprintln!("error: the process executor's child cannot reach Redis: {err}");
                std::process::exit(2);
            }
        };
        let registry = Registry::load().unwrap_or_else(|err| {
            eprintln!("error: {err}");
            std::process::exit(2);
        });
        execute::install_panic_hook();
        let n = request.tasks.len();
        let mut ready = Vec::with_capacity(n);
        for task in request.tasks {
            let prepared =
                execute::prepare(&registry, tiger.config(), &task.id, task.body.as_bytes());
            let plan = match prepared {
                Prepared::Run(plan) => plan,
                // The worker decoded the same body with the same program: not expected.
                Prepared::Reject { failure, .. } => {
                    return Err((FailureRecord::of(&failure), vec![Verdict::Error; n]));
                }
            };
            let job = Job {
                tiger: tiger.clone(),
                queue: request.queue.clone(),
                id: task.id,
                started: task.started,
                failures: task.failures,
                lease: Lease::new(task.started),
            };
            ready.push((job, plan));
        }
        let mut stragglers = Vec::new();
        match run::execute_all(&mut ready, &mut stragglers).await {
            Ok(()) => Ok(()),
            Err(failure) => {
                let verdicts = ready
                    .iter()
                    .map(|(job, plan)| job.verdict(&failure, plan))
                    .collect();
                Err((FailureRecord::of(&failure), verdicts))
            }
        }
    });
    // Do not wait for a plain fn's thread past its limit: the process exits next.
    runtime.shutdown_background();
    report
}
