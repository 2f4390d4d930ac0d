//! [`run_worker`]: the whole worker program behind one call from `main`.

use clap::Parser;
use tracing_subscriber::EnvFilter;

use clap::{CommandFactory, FromArgMatches};

use std::time::Duration;

pub use crate::admin::{Command, Selection};
use crate::{
    Config, Executor, Result, Stopped, Tiger, Worker,
    client::{DEFAULT_REDIS_URL, PREFIX_ENV, REDIS_URL_ENV},
};

/// Command-line flags of the worker program. `tiger::run_worker()` parses them from the
/// process arguments; [`WorkerArgs::run`] runs a worker with them.
#[derive(Debug, Clone, Parser)]
#[command(
    about = "Runs a tiger worker: takes tasks off Redis queues and runs them. \
             The subcommands inspect and repair the queues instead.",
    long_about = None,
    after_help = "Exit status of the subcommands: 0 done, 1 failed (Redis...), 2 usage error, \
                  3 no such task, 4 task in the wrong state, 5 confirmation declined."
)]
#[non_exhaustive]
pub struct WorkerArgs {
    /// Only these queues and their subqueues (comma-separated); default: all.
    #[arg(short = 'q', long, value_delimiter = ',', value_name = "QUEUES")]
    pub queues: Vec<String>,

    /// Skip these queues and their subqueues (comma-separated), unless a more specific
    /// --queues entry names them.
    #[arg(short = 'e', long, value_delimiter = ',', value_name = "QUEUES")]
    pub exclude_queues: Vec<String>,

    /// Redis to use.
    #[arg(long, global = true, env = REDIS_URL_ENV, default_value = DEFAULT_REDIS_URL)]
    pub redis_url: String,

    /// Prefix of every Redis key (TaskTiger's REDIS_PREFIX) [default: the program's own,
    /// `t` unless it sets one].
    #[arg(long, global = true, env = PREFIX_ENV)]
    pub prefix: Option<String>,

    /// How many tasks run at once in this process.
    #[arg(short = 'c', long, default_value_t = Worker::DEFAULT_CONCURRENCY, value_parser = parse_concurrency)]
    pub concurrency: usize,

    /// Run what is queued, then exit.
    #[arg(long)]
    pub once: bool,

    /// Where tasks run: in this process (`async`), or each task (or batch) in a child
    /// process that is killed at its hard timeout and whose crash fails only its task
    /// (`process`).
    #[arg(long, value_enum, default_value_t = Executor::Async)]
    pub executor: Executor,

    /// At most this many tasks of any one queue run at once across all workers that set
    /// it (the queue semaphore, as TaskTiger's -M).
    #[arg(short = 'M', long, value_name = "N", value_parser = parse_concurrency)]
    pub max_workers_per_queue: Option<usize>,

    /// After SIGTERM/SIGINT, how many seconds tasks in flight may go on before they are
    /// handed back. A second signal hands them back at once.
    #[arg(long, value_name = "SECONDS", default_value_t = Worker::DEFAULT_GRACE_PERIOD.as_secs_f64(), value_parser = parse_seconds, allow_negative_numbers = true)]
    pub grace_period: f64,

    /// Restart the worker process after this many minutes (finishing or handing back the
    /// tasks in flight first), as TaskTiger's --exit-after.
    #[arg(long, value_name = "MINUTES", value_parser = parse_seconds, allow_negative_numbers = true)]
    pub exit_after: Option<f64>,

    /// Serve Prometheus metrics at http://ADDR/metrics (task counters and durations, tasks
    /// in flight, queue depths; see `tiger::metrics`), e.g. 127.0.0.1:9108.
    #[arg(long, value_name = "ADDR")]
    pub metrics_bind: Option<std::net::SocketAddr>,

    /// An operator's command instead of running a worker (see [`Command`]).
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl WorkerArgs {
    /// Parses the process arguments, naming the program after its executable in `--help`.
    /// Exits with a usage message (status 2) on bad flags, as clap does.
    pub fn from_env() -> WorkerArgs {
        let program = std::env::args_os()
            .next()
            .and_then(|arg0| {
                std::path::Path::new(&arg0)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "worker".into());
        let matches = WorkerArgs::command()
            .display_name(program.clone())
            .bin_name(program)
            .get_matches();
        WorkerArgs::from_arg_matches(&matches).unwrap_or_else(|err| err.exit())
    }

    /// Connects to Redis and runs a worker with these flags and TaskTiger's default settings
    /// until drained (`--once`) or until SIGINT / SIGTERM, after which tasks in flight finish
    /// before it returns.
    pub async fn run(self) -> Result<Stopped> {
        self.run_with(Config::default()).await
    }

    /// [`WorkerArgs::run`] with the program's own settings; `--prefix` (or `TIGER_PREFIX`)
    /// overrides `config.redis_prefix` when given.
    ///
    /// The worker's handle also becomes the process-wide one ([`Tiger::set_global`]) unless
    /// the program set one already, so `delay` calls outside tasks reach the same Redis.
    pub async fn run_with(self, config: Config) -> Result<Stopped> {
        let (shutdown, hand_back, signals_seen) = signals()?;
        let config = self.config(config);
        let mut shutdown = Box::pin(shutdown);
        let Some(tiger) = connect_patiently(&self.redis_url, config, &mut shutdown).await? else {
            return Ok(Stopped::Shutdown);
        };
        let _ = Tiger::set_global(tiger.clone());
        if let Some(addr) = self.metrics_bind {
            crate::metrics::serve(tiger.clone(), addr).await?;
        }
        let mut worker = Worker::new(tiger)
            .concurrency(self.concurrency)
            .once(self.once)
            .executor(self.executor)
            .grace_period(Duration::from_secs_f64(self.grace_period))
            .shutdown_on(shutdown)
            .hand_back_on(hand_back);
        if let Some(n) = self.max_workers_per_queue {
            worker = worker.max_workers_per_queue(n);
        }
        if let Some(minutes) = self.exit_after {
            worker = worker.exit_after(Duration::from_secs_f64(minutes * 60.0));
        }
        // As in TaskTiger, an empty list (`-q ""`, as a template leaves it) means "not given".
        let queues = non_empty(self.queues);
        if !queues.is_empty() {
            worker = worker.queues(queues);
        }
        let exclude = non_empty(self.exclude_queues);
        if !exclude.is_empty() {
            worker = worker.exclude_queues(exclude);
        }
        match worker.run().await? {
            // A signal came as the worker stopped to restart: the process is to end.
            stopped if stopped.wants_restart() && *signals_seen.borrow() > 0 => {
                Ok(Stopped::Shutdown)
            }
            stopped => Ok(stopped),
        }
    }
}

impl WorkerArgs {
    /// `config` with `--prefix` (or `TIGER_PREFIX`) applied.
    fn config(&self, config: Config) -> Config {
        Config {
            redis_prefix: self.prefix.clone().unwrap_or(config.redis_prefix.clone()),
            ..config
        }
    }

    /// Runs the subcommand given, if any, and returns its exit status; `None` when the
    /// flags ask for a worker.
    pub async fn run_command(&mut self, config: Config) -> Option<i32> {
        let command = self.command.take()?;
        let config = self.config(config);
        Some(match Tiger::connect_with(&self.redis_url, config).await {
            Ok(tiger) => crate::admin::run(command, &tiger).await,
            Err(err) => crate::admin::failed(&err),
        })
    }
}

/// Connects, waiting for a Redis that does not answer yet (with backoff up to 10 s, logging
/// each wait) rather than failing: a worker may start before its Redis. A malformed URL
/// still fails at once. `Ok(None)` when a signal came first.
async fn connect_patiently(
    url: &str,
    config: Config,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<Option<Tiger>> {
    let redis = crate::client::redact(url);
    tracing::info!(%redis, prefix = %config.redis_prefix, "connecting to Redis");
    let mut wait = std::time::Duration::from_millis(500);
    loop {
        match Tiger::connect_with(url, config.clone()).await {
            Ok(tiger) => return Ok(Some(tiger)),
            Err(err) if crate::client::is_transient(&err) => {
                tracing::warn!(%err, retry_in = ?wait, "waiting for Redis");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = &mut *shutdown => return Ok(None),
                }
                wait = (wait * 2).min(std::time::Duration::from_secs(10));
            }
            Err(err) => return Err(err),
        }
    }
}

pub(crate) fn non_empty(names: Vec<String>) -> Vec<String> {
    names.into_iter().filter(|name| !name.is_empty()).collect()
}

/// A number of seconds or minutes: finite, not negative.
pub(crate) fn parse_seconds(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(n) if (0.0..1e12).contains(&n) => Ok(n),
        Ok(_) => Err("must be a number from 0 up".into()),
        Err(err) => Err(err.to_string()),
    }
}

fn parse_concurrency(text: &str) -> std::result::Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(err) => Err(err.to_string()),
    }
}

/// Listens for SIGINT and SIGTERM from now on (so a signal that arrives while the worker
/// starts is not lost to the default action) and returns two futures: one resolves on the
/// first signal (graceful stop), one on the second (hand back at once). A third ends the
/// process at once with status 130; tasks still in flight then stay active in Redis until
/// recovered.
///
/// Also returns the count of signals so far: a restart is called off once one came.
fn signals() -> Result<(
    impl Future<Output = ()> + Send + 'static,
    impl Future<Output = ()> + Send + 'static,
    tokio::sync::watch::Receiver<u32>,
)> {
    let mut listener = SignalListener::new()?;
    let (count, seen) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        loop {
            listener.next().await;
            let n = *count.borrow() + 1;
            count.send_replace(n);
            if n >= 3 {
                tracing::warn!(
                    "third signal: exiting now; tasks in flight stay active until recovered"
                );
                std::process::exit(130);
            }
        }
    });
    let watched = seen.clone();
    let nth = move |n: u32| {
        let mut seen = watched.clone();
        async move {
            if seen.wait_for(|count| *count >= n).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    Ok((nth(1), nth(2), seen))
}

/// SIGINT and SIGTERM (Ctrl-C elsewhere), registered when built.
struct SignalListener {
    #[cfg(unix)]
    streams: [tokio::signal::unix::Signal; 2],
}

impl SignalListener {
    fn new() -> Result<SignalListener> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let register = |kind| {
                signal(kind).map_err(|source| crate::Error::Io {
                    context: "cannot listen for signals".into(),
                    source,
                })
            };
            Ok(SignalListener {
                streams: [
                    register(SignalKind::interrupt())?,
                    register(SignalKind::terminate())?,
                ],
            })
        }
        #[cfg(not(unix))]
        {
            Ok(SignalListener {})
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        {
            let [interrupt, terminate] = &mut self.streams;
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Installs the default log output: readable lines on stderr (coloured only on a terminal),
/// filtered by `RUST_LOG` (default `info`). Does nothing if the program already installed a
/// subscriber.
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The worker program: parses the flags (`--help` lists them), logs to stderr, runs a
/// worker with TaskTiger's default settings on a new Tokio runtime, and exits with status 1
/// on a start-up error. [`run_worker_with`] takes the program's own [`Config`].
///
/// ```no_run
/// fn main() {
///     tiger::run_worker()
/// }
/// ```
///
/// Call it from a synchronous `main`; inside an async `main`, use
/// [`run_worker_async`] instead.
pub fn run_worker() {
    run_worker_with(Config::default())
}

/// [`run_worker`] with the program's own settings (`BATCH_QUEUES`, timers, ...); the flags
/// still choose Redis, queues and concurrency, and `--prefix` overrides
/// `config.redis_prefix` when given.
///
/// ```no_run
/// fn main() {
///     let config = tiger::Config {
///         batch_queues: [("import".to_owned(), 100)].into(),
///         ..tiger::Config::default()
///     };
///     tiger::run_worker_with(config)
/// }
/// ```
pub fn run_worker_with(config: Config) {
    crate::serve_executor_child(&config);
    let args = WorkerArgs::from_env();
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => {
            let mut args = args;
            if let Some(code) = runtime.block_on(args.run_command(config.clone())) {
                std::process::exit(code);
            }
            let result = runtime.block_on(args.run_with(config));
            // Do not wait for the thread of a plain fn that ran past its hard timeout: its
            // outcome is recorded, and it would keep the process (and a second signal) waiting.
            runtime.shutdown_background();
            conclude(result);
        }
        Err(source) => conclude(Err(crate::Error::Io {
            context: "cannot start the Tokio runtime".into(),
            source,
        })),
    }
}

/// [`run_worker`] for an async `main`:
///
/// ```no_run
/// #[tokio::main]
/// async fn main() {
///     tiger::run_worker_async().await
/// }
/// ```
///
/// When it returns, your runtime's shutdown waits for the thread of a plain `fn` task that
/// ran past its hard timeout; [`run_worker`] does not.
pub async fn run_worker_async() {
    run_worker_async_with(Config::default()).await
}

/// [`run_worker_async`] with the program's own settings, as [`run_worker_with`].
pub async fn run_worker_async_with(config: Config) {
    crate::serve_executor_child(&config);
    let mut args = WorkerArgs::from_env();
    init_logging();
    if let Some(code) = args.run_command(config.clone()).await {
        std::process::exit(code);
    }
    conclude(args.run_with(config).await);
}

/// Ends the worker program: prints a start-up error and exits with status 1, restarts the
/// process when the worker asks for it ([`Stopped::wants_restart`]), else returns.
fn conclude(result: Result<Stopped>) {
    match result {
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(1);
        }
        Ok(stopped) if stopped.wants_restart() => restart(stopped),
        Ok(_) => {}
    }
}

/// Replaces this process with a fresh run of the same program, arguments and environment
/// (same process id, so a supervisor sees no exit). Where that is not possible, exits with
/// status 75 (EX_TEMPFAIL) for the supervisor to restart it.
///
/// Nothing is in flight by now. A signal that came while the worker stopped has called the
/// restart off (see `run_with`); one that comes during the new run's start, before it
/// listens, ends it by the signal's default action. Only one that lands in the moment
/// between that check and the `exec` is lost.
fn restart(why: Stopped) -> ! {
    let mut args = std::env::args_os();
    let program = args.next();
    #[cfg(unix)]
    if let Some(program) = program {
        use std::os::unix::process::CommandExt;
        tracing::info!(reason = ?why, "restarting the worker process");
        let err = std::process::Command::new(program).args(args).exec();
        eprintln!("error: cannot restart the worker process: {err}");
    }
    #[cfg(not(unix))]
    let _ = (program, args);
    tracing::warn!(reason = ?why, "exiting with status 75 for the supervisor to restart the worker");
    std::process::exit(75);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_like_tasktiger() {
        let args = WorkerArgs::try_parse_from([
            "worker",
            "-q",
            "a,b.c",
            "-e",
            "b",
            "--prefix",
            "p",
            "--concurrency",
            "3",
            "--once",
            "--redis-url",
            "redis://127.0.0.1:1/",
        ])
        .unwrap();
        assert_eq!(args.queues, ["a", "b.c"]);
        assert_eq!(args.exclude_queues, ["b"]);
        assert_eq!(
            (args.prefix.as_deref(), args.concurrency, args.once),
            (Some("p"), 3, true)
        );
        assert!(WorkerArgs::try_parse_from(["worker", "--concurrency", "0"]).is_err());
        let empty = WorkerArgs::try_parse_from(["worker", "-q", "", "-e", ","]).unwrap();
        assert!(non_empty(empty.queues).is_empty() && non_empty(empty.exclude_queues).is_empty());
    }
}
