//! Prometheus metrics of a worker: what its tasks did, how long they took, how many are in
//! flight, and how deep the queues are. Recorded through the `metrics` facade (nothing is
//! kept unless a recorder is installed) and served as Prometheus text by [`serve`], which
//! `--metrics-bind` starts next to the worker.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `tiger_tasks_started_total` | counter | `func`, `queue` |
//! | `tiger_tasks_succeeded_total` | counter | `func`, `queue` |
//! | `tiger_tasks_failed_total` | counter | `func`, `queue` (every failed run, retried or not) |
//! | `tiger_tasks_retried_total` | counter | `func`, `queue` (failed runs that will run again) |
//! | `tiger_task_duration_seconds` | histogram | `func`, `queue` |
//! | `tiger_worker_tasks_in_flight` | gauge | |
//! | `tiger_queue_tasks` | gauge | `queue`, `state` (read from Redis at each scrape; a queue that emptied reads 0) |
//!
//! A task that cannot run at all (no function of its name here, arguments that do not fit)
//! counts as started and failed under `func="(cannot run)"`. When Redis does not answer, a
//! scrape fails (503) rather than serve stale depths.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::{Error, Result, State, Tiger};

const STARTED: &str = "tiger_tasks_started_total";
const SUCCEEDED: &str = "tiger_tasks_succeeded_total";
const FAILED: &str = "tiger_tasks_failed_total";
const RETRIED: &str = "tiger_tasks_retried_total";
const DURATION: &str = "tiger_task_duration_seconds";
const IN_FLIGHT: &str = "tiger_worker_tasks_in_flight";
const QUEUE_TASKS: &str = "tiger_queue_tasks";

/// Buckets of the duration histogram, in seconds: 1 ms to 5 min.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0,
];

/// How often the recorder folds in what was recorded, scraped or not.
const UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// The `func` label of tasks that cannot run.
pub(crate) const CANNOT_RUN: &str = "(cannot run)";

/// The queues whose depths were reported, so that one that empties reads 0, not its last
/// depth.
static REPORTED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Set once a recorder is installed: until then recording costs nothing (no label strings).
static ON: AtomicBool = AtomicBool::new(false);
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// A run of `func` on `queue` started.
pub(crate) fn started(func: &'static str, queue: &str) {
    if on() {
        metrics::counter!(STARTED, "func" => func, "queue" => queue.to_owned()).increment(1);
    }
}

/// A run of `func` on `queue` ended after `seconds`, well or not.
pub(crate) fn ended(func: &'static str, queue: &str, succeeded: bool, seconds: f64) {
    if on() {
        let name = if succeeded { SUCCEEDED } else { FAILED };
        metrics::counter!(name, "func" => func, "queue" => queue.to_owned()).increment(1);
        metrics::histogram!(DURATION, "func" => func, "queue" => queue.to_owned()).record(seconds);
    }
}

/// A failed run of `func` on `queue` will run again.
pub(crate) fn retried(func: &'static str, queue: &str) {
    if on() {
        metrics::counter!(RETRIED, "func" => func, "queue" => queue.to_owned()).increment(1);
    }
}

/// How many groups of tasks the worker has in flight.
pub(crate) fn in_flight(groups: usize) {
    if on() {
        metrics::gauge!(IN_FLIGHT).set(groups as f64);
    }
}

/// Installs the process's Prometheus recorder (once; later calls reuse it) and returns the
/// handle that renders it.
pub fn install() -> Result<PrometheusHandle> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(DURATION.to_owned()),
            &BUCKETS,
        )
        .map_err(|err| Error::Config(format!("metrics: {err}")))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|err| Error::Config(format!("metrics: another recorder is installed: {err}")))?;
    describe();
    // Histogram samples pile up until they are folded in; a scrape does it, and this for a
    // process that nobody scrapes.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("tiger-metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP);
                upkeep.run_upkeep();
            }
        })
        .map_err(|source| Error::Io {
            context: "cannot start the metrics upkeep thread".to_owned(),
            source,
        })?;
    ON.store(true, Ordering::Relaxed);
    let _ = HANDLE.set(handle.clone());
    Ok(handle)
}

/// The `# HELP` line of each metric.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(STARTED, "Task runs this process started.");
    describe_counter!(SUCCEEDED, "Task runs this process ended in success.");
    describe_counter!(
        FAILED,
        "Task runs this process ended in failure, retried or not."
    );
    describe_counter!(
        RETRIED,
        "Failed task runs of this process that will run again."
    );
    describe_histogram!(DURATION, Unit::Seconds, "How long task runs took.");
    describe_gauge!(
        IN_FLIGHT,
        "Groups of tasks (a task, or a batch) this worker is running now."
    );
    describe_gauge!(
        QUEUE_TASKS,
        "Tasks in each queue and state, read from Redis at the scrape; the same from every target."
    );
}

/// The Prometheus text of everything recorded, with the queue depths read from Redis now;
/// fails when Redis cannot say them.
pub async fn render(tiger: &Tiger, handle: &PrometheusHandle) -> Result<String> {
    // Tried again while Redis reconnects, so a scrape just after it came back succeeds, and
    // given up within 5 s, under Prometheus's scrape timeout.
    let stats = crate::client::reading("read the queue depths", || tiger.queue_stats()).await?;
    let mut reported = REPORTED.lock().unwrap_or_else(|e| e.into_inner());
    for queue in reported.iter().filter(|q| !stats.contains_key(*q)) {
        for state in State::ALL {
            metrics::gauge!(QUEUE_TASKS, "queue" => queue.clone(), "state" => state.as_str())
                .set(0.0);
        }
    }
    for (queue, counts) in &stats {
        for state in State::ALL {
            metrics::gauge!(QUEUE_TASKS, "queue" => queue.clone(), "state" => state.as_str())
                .set(counts.get(state) as f64);
        }
        reported.insert(queue.clone());
    }
    drop(reported);
    Ok(handle.render())
}

/// `GET /metrics`: the text, or 503 with the reason when Redis does not answer.
pub(crate) async fn respond(tiger: &Tiger, handle: &PrometheusHandle) -> axum::response::Response {
    use axum::response::IntoResponse;
    match render(tiger, handle).await {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(err) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("{err}\n"),
        )
            .into_response(),
    }
}

/// Serves `GET /metrics` on `addr` until the process ends. Fails at once when the address
/// cannot be bound. On a loopback address it answers only requests addressed to a loopback
/// name, as the dashboard does, so that a web page cannot read it through DNS rebinding.
pub async fn serve(tiger: Tiger, addr: SocketAddr) -> Result<()> {
    let handle = install()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Io {
            context: format!("cannot listen for metrics on {addr}"),
            source,
        })?;
    let loopback = addr.ip().is_loopback();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let (tiger, handle) = (tiger.clone(), handle.clone());
            async move {
                if loopback && !crate::dashboard::loopback_host(&headers) {
                    use axum::response::IntoResponse;
                    return (
                        axum::http::StatusCode::FORBIDDEN,
                        "on loopback, metrics answer only to localhost and loopback addresses\n",
                    )
                        .into_response();
                }
                respond(&tiger, &handle).await
            }
        }),
    );
    tracing::info!(%addr, "serving metrics at /metrics");
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(%err, "the metrics server stopped");
        }
    });
    Ok(())
}
