//! The process executor ([`Executor::Process`](super::Executor::Process)): each group of
//! tasks runs in a child process, a fresh run of the worker's own program that decodes the
//! tasks again, runs them and reports how the run ended. The worker keeps everything else:
//! heartbeats, locks and semaphore places, and the writes to Redis.
//!
//! What the process boundary buys: a child that runs past its hard timeout (plus
//! [`KILL_GRACE`]) is killed with SIGKILL, with every process it started (it leads its own
//! process group), whatever it is doing — a plain `fn` blocked in a system call, a loop that
//! never awaits — and one that aborts, segfaults or is killed by the kernel for want of
//! memory fails only its own tasks, each with a record that says so.
//!
//! The protocol: the worker writes one JSON [`Request`] to a private file (mode 0600, in
//! the temp dir) and starts the child with [`CHILD_ENV`] set to its path; the child reads
//! and deletes it, writes its [`Report`] as JSON to the file the request names (under a
//! temporary name, then renamed) and exits. The task's stdin is `/dev/null`; its stdout and
//! stderr are the worker's. The child ignores SIGINT and SIGTERM — the worker decides when
//! its tasks stop — and exits at once when its worker is gone (it watches its parent), so no
//! run outlives the worker that would record it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::execute::{self, Plan, Prepared};
use super::finish::{self, FailureRecord, Verdict};
use super::lease::Lease;
use super::run::{self, Ending, Job};
use crate::{
    Config, TaskId, Tiger,
    client::retrying,
    task::{
        outcome::{JOB_TIMEOUT, JobTimeout, TaskFailure},
        registry::Registry,
    },
};

/// Set (to `1`) in the environment of a child process: run the tasks on stdin, not a worker.
pub(crate) const CHILD_ENV: &str = "TIGER_EXECUTOR_CHILD";

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
    /// The worker's process id: the child stops when its parent is another.
    parent: u32,
    /// Where the child writes its report.
    report: PathBuf,
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
    let report = private_dir().join(format!("report-{}.json", TaskId::random()));
    let request = Request {
        parent: std::process::id(),
        report,
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
    let request_file = request.report.with_extension("request");
    let input = serde_json::to_vec(request).map_err(|err| err.to_string())?;
    write_private(&request_file, &input).map_err(|err| {
        format!(
            "cannot write the child's request to {}: {err}",
            request_file.display()
        )
    })?;
    let mut command = tokio::process::Command::new(&program);
    command
        .env(CHILD_ENV, &request_file)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // Its own process group, so that a kill reaches what the task started, and a Ctrl-C
    // meant for the worker does not reach the task (the worker hands it back instead).
    #[cfg(unix)]
    command.process_group(0);
    let spawned = command.spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            let _ = std::fs::remove_file(&request_file);
            return Err(format!(
                "cannot start a child process ({}): {err}",
                program.display()
            ));
        }
    };
    // Until the child is reaped: a cancelled or timed-out run kills its whole group.
    let mut group = Group {
        leader: child.id(),
        files: [
            request_file.clone(),
            request.report.clone(),
            request.report.with_extension("partial"),
        ],
    };
    let Ok(waited) = tokio::time::timeout(deadline, child.wait()).await else {
        return Ok(None);
    };
    let status = waited.map_err(|err| format!("cannot wait for the child process: {err}"))?;
    if !status.success() {
        return Err(died(status));
    }
    let report = match std::fs::read(&request.report) {
        Ok(json) => serde_json::from_slice::<Report>(&json).map_err(|err| {
            format!("the child process wrote a report that cannot be read: {err}")
        })?,
        Err(_) => return Err(died(status)),
    };
    // A run that timed out in the child: what the task started goes with it. Otherwise the
    // task's own processes are its business.
    if !matches!(&report, Err((failure, _)) if failure.exception_name == JOB_TIMEOUT) {
        group.leader = None;
    }
    Ok(Some(report))
}

/// Writes `bytes` to a new file only this user can read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(path)?, bytes)
}

/// A child's process group while it runs, and its files: dropped with a leader (the run was
/// cancelled or timed out), it kills the group; dropped at all, it removes the files.
struct Group {
    leader: Option<u32>,
    /// The request, the report and the report being written.
    files: [PathBuf; 3],
}

impl Drop for Group {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(leader) = self.leader.and_then(|pid| i32::try_from(pid).ok()) {
            use nix::sys::signal::{Signal, killpg};
            let _ = killpg(nix::unistd::Pid::from_raw(leader), Signal::SIGKILL);
        }
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// The directory of this worker's request and report files: made (mode 0700, so no other
/// user can read or plant files there) in the temp dir by [`check_temp_dir`].
static PRIVATE_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn private_dir() -> PathBuf {
    PRIVATE_DIR
        .get()
        .cloned()
        .unwrap_or_else(std::env::temp_dir)
}

/// Makes, when a worker with the process executor starts, the private directory its
/// children's requests and reports go through.
pub(crate) fn check_temp_dir() -> crate::Result<()> {
    // One name per process; made again if a worker that stopped before removed it.
    let dir = PRIVATE_DIR
        .get_or_init(|| std::env::temp_dir().join(format!("tiger-{}", TaskId::random())))
        .clone();
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir).map_err(|err| {
        crate::Error::Config(format!(
            "the process executor hands tasks to its children through files in {}, which \
             cannot be written ({err}); set TMPDIR to a writable directory",
            std::env::temp_dir().display()
        ))
    })?;
    Ok(())
}

/// Removes the private directory when the worker stops (empty by then: every run removed
/// its files), so restarts leave nothing behind in the temp dir.
pub(crate) fn remove_private_dir() {
    if let Some(dir) = PRIVATE_DIR.get() {
        let _ = std::fs::remove_dir(dir);
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
/// environment): runs the tasks the worker sent on stdin, writes the report and exits;
/// otherwise returns at once.
///
/// [`run_worker`](crate::run_worker) calls this first thing. A program that runs
/// [`Worker`](crate::Worker) itself with [`Executor::Process`](crate::Executor::Process)
/// must call it at the start of `main`, before anything else that matters, with the same
/// [`Config`] it gives its worker.
pub fn serve_executor_child(config: &Config) {
    let Some(request_file) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    // The worker decides when its tasks stop (a hand-back, a kill at the limit): from the
    // start, a SIGINT or SIGTERM sent to the whole group or cgroup is caught here and
    // ignored. (A caught signal, unlike an ignored one, is reset for the task's own
    // subprocesses.)
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|err| {
            eprintln!("error: cannot start the Tokio runtime: {err}");
            std::process::exit(2);
        });
    #[cfg(unix)]
    let _ignored = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    });
    crate::cli::init_logging();
    let request = std::fs::read(&request_file)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice::<Request>(&bytes).map_err(|e| e.to_string()));
    let _ = std::fs::remove_file(&request_file);
    let request = match request {
        Ok(request) => request,
        Err(err) => {
            eprintln!("error: the process executor's child cannot read its tasks: {err}");
            std::process::exit(2);
        }
    };
    watch_parent(request.parent);
    let path = request.report.clone();
    let report = serve(&runtime, config, request);
    // Do not wait for a plain fn's thread past its limit: the process exits next.
    runtime.shutdown_background();
    let staged = path.with_extension("partial");
    let written = serde_json::to_vec(&report)
        .map_err(|e| e.to_string())
        .and_then(|json| write_private(&staged, &json).map_err(|e| e.to_string()))
        .and_then(|()| std::fs::rename(&staged, &path).map_err(|e| e.to_string()));
    if let Err(err) = written {
        let _ = std::fs::remove_file(&staged);
        eprintln!(
            "error: cannot write the report to {}: {err}",
            path.display()
        );
        std::process::exit(2);
    }
    // Exit without waiting for the thread of a plain fn past its limit: this ends it.
    std::process::exit(0);
}

/// Ends this process when its parent, the worker, is gone (the child is then adopted by
/// another process).
fn watch_parent(parent: u32) {
    #[cfg(unix)]
    std::thread::spawn(move || {
        loop {
            if std::os::unix::process::parent_id() != parent {
                eprintln!("error: the worker that started this task's process is gone; stopping");
                // This process leads its group: the task's own processes go with it.
                if let Ok(me) = i32::try_from(std::process::id()) {
                    use nix::sys::signal::{Signal, killpg};
                    let _ = killpg(nix::unistd::Pid::from_raw(me), Signal::SIGKILL);
                }
                std::process::exit(3);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    #[cfg(not(unix))]
    let _ = parent;
}

/// Runs the requested tasks as the worker would in-process and says how it went.
fn serve(runtime: &tokio::runtime::Runtime, config: &Config, request: Request) -> Report {
    let config = Config {
        redis_prefix: request.prefix.clone(),
        ..config.clone()
    };
    let registry = Registry::load().unwrap_or_else(|err| {
        eprintln!("error: {err}");
        std::process::exit(2);
    });
    execute::install_panic_hook();
    let n = request.tasks.len();
    let mut plans = Vec::with_capacity(n);
    for task in &request.tasks {
        match execute::prepare(&registry, &config, &task.id, task.body.as_bytes()) {
            Prepared::Run(plan) => plans.push(plan),
            // The worker decoded the same body with the same program: not expected.
            Prepared::Reject { failure, .. } => {
                return Err((FailureRecord::of(&failure), vec![Verdict::Error; n]));
            }
        }
    }
    runtime.block_on(async {
        // The task's `delay` calls and `current_task()` need the worker's Redis and prefix.
        let connect = retrying("connect to Redis", || {
            Tiger::connect_with(&request.redis_url, config.clone())
        });
        let tiger = match connect.await {
            Ok(tiger) => tiger,
            Err(err) => {
                let text = format!(
                    "the task's child process could not connect to Redis ({err}); the task did \
                     not run"
                );
                let failure = TaskFailure::message(CHILD_DIED, text);
                let verdicts = request
                    .tasks
                    .iter()
                    .zip(&plans)
                    .map(|(task, plan)| {
                        let n = task.failures.saturating_add(1);
                        finish::verdict(
                            &plan.retry,
                            plan.spec,
                            &failure,
                            n,
                            config.default_retry_method,
                        )
                    })
                    .collect();
                return Err((FailureRecord::of(&failure), verdicts));
            }
        };
        // The parent records the outcome; the child's jobs only run.
        let finisher = finish::Finisher::spawn(tiger.clone());
        let mut ready: Vec<(Job, Plan)> = request
            .tasks
            .into_iter()
            .zip(plans)
            .map(|(task, plan)| {
                let job = Job {
                    tiger: tiger.clone(),
                    queue: request.queue.clone(),
                    id: task.id,
                    started: task.started,
                    failures: task.failures,
                    lease: Lease::new(task.started),
                    finisher: finisher.clone(),
                    // The parent counts the run when it records the outcome.
                    counter: Default::default(),
                };
                (job, plan)
            })
            .collect();
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
    })
}
