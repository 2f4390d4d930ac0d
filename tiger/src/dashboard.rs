//! The web dashboard: every queue's counts (refreshing live), a queue's tasks in a state, a
//! task with its executions, and the operator's actions on it, over the inspection API.
//! Server-rendered HTML ([`maud`] escapes everything a task holds) with a few lines of
//! plain JS; nothing to build, everything in the binary.
//!
//! ```no_run
//! # async fn demo(tiger: tiger::Tiger) -> tiger::Result<()> {
//! // As its own server (what `dashboard --bind` runs):
//! tiger::Dashboard::new().token("s3cret")?.serve(tiger.clone(), "127.0.0.1:8080".parse().unwrap()).await?;
//! // Or mounted in an application's own axum app:
//! let token = std::env::var("OPS_TOKEN").unwrap_or_default();
//! let app: axum::Router = axum::Router::new().nest("/tiger", tiger::Dashboard::new().token(token)?.router(tiger));
//! # Ok(()) }
//! ```
//!
//! Safety: with a token, every route asks for it (`Authorization: Bearer <token>`, or the
//! cookie the login form sets); actions are POSTs that must carry the page's anti-forgery
//! value and, when the browser sends one, an `Origin` of the same host; `read_only` hides
//! and refuses them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Form, OriginalUri, Path, Query, State as Extract};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures_util::FutureExt;
use maud::{DOCTYPE, Markup, html};

// Reads for pages are tried again while Redis reconnects (the first command after a dropped
// connection fails), so a page is not an error just after Redis came back; and given up
// after a bound, so a Redis that hangs gets a prompt 503.
use crate::{Error, Result, State, Task, Tiger, client::reading, time::now};

/// How many of a task's execution records its page shows (the last ones).
const SHOWN_EXECUTIONS: usize = 50;

/// The cookie the login form sets.
const COOKIE: &str = "tiger_dashboard_token";

/// A dashboard, configured with a builder; [`Dashboard::router`] or [`Dashboard::serve`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Dashboard {
    token: Option<String>,
    read_only: bool,
}

struct Shared {
    tiger: Tiger,
    token: Option<String>,
    read_only: bool,
    /// The anti-forgery value every form carries: random per process.
    csrf: String,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

type App = Arc<Shared>;

impl Dashboard {
    /// A dashboard with no token and actions allowed.
    pub fn new() -> Dashboard {
        Dashboard::default()
    }

    /// Requires `token` for everything. It must be printable ASCII without spaces or `;`
    /// (a header and a cookie carry it) and not empty: a token read from a setting left
    /// blank must not mean "no token", so that is an [`Error::Config`]. Without a token the
    /// dashboard answers only requests addressed to `localhost` or a loopback address.
    pub fn token(mut self, token: impl Into<String>) -> Result<Dashboard> {
        let token = token.into();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic() && b != b';') {
            return Err(Error::Config(
                "the dashboard token must be printable ASCII without spaces or `;` (and not empty)"
                    .into(),
            ));
        }
        self.token = Some(token);
        Ok(self)
    }

    /// Shows no actions and refuses them.
    pub fn read_only(mut self, read_only: bool) -> Dashboard {
        self.read_only = read_only;
        self
    }

    /// The routes, to serve or to mount under a path of an application's own.
    ///
    /// For its `/metrics` this installs tiger's Prometheus recorder as the process's
    /// [`metrics`](https://docs.rs/metrics) recorder, unless one is installed already (then
    /// `/metrics` answers 503): an application with a recorder of its own installs it before
    /// calling this.
    pub fn router(self, tiger: Tiger) -> axum::Router {
        let shared = Arc::new(Shared {
            tiger,
            token: self.token,
            read_only: self.read_only,
            csrf: crate::TaskId::random().as_str().to_owned(),
            metrics: crate::metrics::install().ok(),
        });
        axum::Router::new()
            .route("/", get(overview))
            .route("/api/stats", get(stats_json))
            .route("/api/minutes", get(minutes_json))
            .route("/api/workers", get(workers_json))
            .route("/chart.svg", get(chart))
            .route("/workers", get(workers_page))
            .route("/queue/{queue}/{state}", get(queue_page))
            .route("/task/{id}", get(task_page))
            .route("/task/{id}/{action}", post(act))
            .route("/metrics", get(metrics))
            .route("/login", get(login_page).post(login))
            .fallback(not_found)
            .with_state(shared)
    }

    /// Serves the dashboard on `addr` until the process ends. An address other than
    /// loopback needs a token: without one, anyone who can reach it could act on the tasks.
    pub async fn serve(self, tiger: Tiger, addr: SocketAddr) -> Result<()> {
        if self.token.is_none() && !addr.ip().is_loopback() {
            return Err(Error::Config(format!(
                "the dashboard would listen on {addr} without a token: give it one (--token or TIGER_DASHBOARD_TOKEN), or bind a loopback address"
            )));
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Io {
                context: format!("cannot listen for the dashboard on {addr}"),
                source,
            })?;
        tracing::info!(%addr, "serving the dashboard");
        axum::serve(listener, self.router(tiger))
            .await
            .map_err(|source| Error::Io {
                context: "the dashboard stopped".to_owned(),
                source,
            })
    }
}

/// Whether the request carries the token (when one is set). Without a token only requests
/// to a loopback name are answered, so that a page elsewhere cannot reach the dashboard by
/// pointing its own domain at 127.0.0.1 (DNS rebinding).
fn allowed(app: &Shared, headers: &HeaderMap) -> bool {
    let Some(token) = &app.token else {
        return loopback_host(headers);
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token);
    // Every cookie of the name counts: a browser may hold one per path, or another
    // dashboard's on the same host (cookies do not tell ports apart).
    let session = session(token);
    bearer.is_some_and(|given| same_secret(given, token))
        || headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| name == COOKIE && same_secret(value, &session))
}

/// What the login cookie holds: a digest of the token, not the token, since a browser sends
/// it to every port of the host (the token may open more than this dashboard).
fn session(token: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(format!("tiger dashboard session\n{token}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compares digests rather than the strings, so how long a comparison takes says nothing
/// about how much of a guess was right.
fn same_secret(given: &str, token: &str) -> bool {
    use sha2::{Digest, Sha256};
    Sha256::digest(given.as_bytes()) == Sha256::digest(token.as_bytes())
}

/// Where the dashboard is mounted (`/tiger` when an application nests it there; empty at
/// the root), from the path asked for and the path the router saw.
fn base(original: &OriginalUri, uri: &Uri) -> String {
    let full = original.path();
    let base = match full.strip_suffix(uri.path()) {
        Some(base) => base,
        // The nested router's own root, asked for without its slash: `/tiger` is `/`.
        None if uri.path() == "/" => full,
        None => "",
    };
    base.trim_end_matches('/').to_owned()
}

/// Whether the `Host` the request was sent to is `localhost` or a loopback address.
pub(crate) fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        // `[::1]` or `[::1]:8080`, nothing else after the bracket.
        Some(v6) => match v6.split_once(']') {
            Some((name, rest)) if rest.is_empty() || rest.starts_with(':') => name,
            _ => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A page request that may see the dashboard, with the dashboard's base (see [`base`]); a
/// request that may not gets the answer [`refused`] gives.
struct Admitted(String);

impl axum::extract::FromRequestParts<App> for Admitted {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &App,
    ) -> std::result::Result<Admitted, Response> {
        let original = parts
            .extensions
            .get::<OriginalUri>()
            .cloned()
            .unwrap_or_else(|| OriginalUri(parts.uri.clone()));
        let base = base(&original, &parts.uri);
        if allowed(app, &parts.headers) {
            Ok(Admitted(base))
        } else {
            Err(refused(app, Some((&base, &original))))
        }
    }
}

/// The address of `queue`'s page of tasks in `state`, for the dashboard mounted at `base`.
/// (The overview's script builds the same address.)
fn queue_page_at(base: &str, queue: &str, state: State) -> String {
    format!("{base}/queue/{}/{}", urlencode(queue), state.as_str())
}

/// The overview's address for the dashboard mounted at `base`.
fn home(base: &str) -> String {
    if base.is_empty() {
        "/".to_owned()
    } else {
        base.to_owned()
    }
}

/// The answer to a request that is not allowed: without a token, 403 (the `Host` was not a
/// loopback name); with one, for a page (the dashboard's base and the address asked for),
/// the login form, which comes back to that page; 401 otherwise.
fn refused(app: &Shared, page: Option<(&str, &OriginalUri)>) -> Response {
    if app.token.is_none() {
        return (
            StatusCode::FORBIDDEN,
            "without a token the dashboard answers only to localhost and loopback addresses\n",
        )
            .into_response();
    }
    match page {
        Some((base, asked)) => {
            let asked = asked.path_and_query().map_or("/", |p| p.as_str());
            Redirect::to(&format!("{base}/login?next={}", urlencode(asked))).into_response()
        }
        None => (StatusCode::UNAUTHORIZED, "a token is required\n").into_response(),
    }
}

/// A page of the dashboard mounted at `base`, its header linking to the overview and the
/// workers; no other site may frame it.
fn page_at(base: &str, title: &str, body: Markup) -> Response {
    let html = Html(
        html! {
            (DOCTYPE)
            html {
                head {
                    meta charset="utf-8";
                    title { "tiger — " (title) }
                    style { (STYLE) }
                }
                body {
                    header {
                        "tiger: " a href=(home(base)) { "queues" } " · "
                        a href={ (base) "/workers" } { "workers" }
                    }
                    h1 { (title) }
                    (body)
                }
            }
        }
        .into_string(),
    );
    (
        [
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
        ],
        html,
    )
        .into_response()
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse}td,th{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}\
.n{text-align:right}pre{background:#f6f6f6;padding:.6em;overflow:auto;white-space:pre-wrap;word-break:break-all}\
header{margin-bottom:.5em;font-weight:bold}h1{font-size:1.3em}h2{font-size:1.1em}form{display:inline;margin-right:.5em}\
.id{font-family:monospace}.notice{background:#e8f4e8;padding:.4em .7em}.stale{color:#b00}";

async fn overview(Extract(app): Extract<App>, Admitted(base): Admitted) -> Response {
    let (stats, workers) = tokio::join!(
        reading("read the queue counts", || app.tiger.queue_stats()),
        reading("read the live workers", || app.tiger.workers())
    );
    let stats = match stats {
        Ok(stats) => stats,
        Err(err) => return unavailable(&err),
    };
    // The counts matter more than the registry: a registry that cannot be read is said so.
    let workers = match workers {
        Ok(workers) => crate::admin::plural(workers.len() as u64, "worker"),
        Err(err) => {
            tracing::warn!(%err, "cannot read the registry of live workers");
            "? workers".to_owned()
        }
    };
    page_at(
        &base,
        "queues",
        html! {
            table id="stats" data-base=(base) {
                tr { th { "queue" } @for state in State::ALL { th.n { (state.as_str()) } } }
                @for (queue, counts) in &stats {
                    tr {
                        td { (queue) }
                        @for state in State::ALL {
                            td.n { a href=(queue_page_at(&base, queue, state)) { (counts.get(state)) } }
                        }
                    }
                }
            }
            p id="empty" hidden[!stats.is_empty()] { "No tasks in any queue." }
            p.stale id="stale" hidden { }
            p { a href={ (base) "/workers" } { span id="workers" { (workers) } " alive" } }
            img id="chart" src={ (base) "/chart.svg" } width=(CHART_WIDTH) height=(CHART_HEIGHT)
                alt="tasks processed and failed per minute over the last hour";
            script { (maud::PreEscaped(REFRESH)) }
        },
    )
    .into_response()
}

/// Refreshes the overview two seconds after the last refresh ended: the counts from
/// `/api/stats`, the number of workers from `/api/workers`, the chart. When the counts
/// cannot be read it says since when they are stale (text only: nothing a task holds is
/// parsed as HTML).
const REFRESH: &str = r#"
let fresh = new Date();
// JSON from `url`, or null; a token that no longer holds reloads the page (to the login).
async function read(url) {
  try {
    const r = await fetch(url, {credentials: "same-origin"});
    if (r.status === 401) location.reload();
    return r.ok ? await r.json() : null;
  } catch (err) {
    return null;
  }
}
// Names in code point order, as the server sorts them (by bytes of UTF-8).
function byCodePoint([a], [b]) {
  const x = [...a], y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d) return d;
  }
  return x.length - y.length;
}
// The next refresh is set once this one is done, so a slow answer never piles them up.
async function refresh() {
  const table = document.getElementById("stats");
  const base = table.dataset.base;
  // The chart is swapped once the new one has loaded, so an outage keeps the last one.
  const chart = new Image();
  chart.onload = () => { document.getElementById("chart").src = chart.src; };
  chart.src = base + "/chart.svg?at=" + Date.now();
  const [workers, stats] = await Promise.all([read(base + "/api/workers"), read(base + "/api/stats")]);
  const count = document.getElementById("workers");
  if (workers) {
    const n = workers.length;
    count.textContent = n + (n === 1 ? " worker" : " workers");
  } else if (!count.textContent.startsWith("? ")) {
    count.textContent = "? workers";
  }
  const stale = document.getElementById("stale");
  stale.hidden = stats !== null;
  if (!stats) {
    stale.textContent = "Cannot read the counts now; these are from " + fresh.toLocaleTimeString() + ".";
    return;
  }
  fresh = new Date();
  const states = ["queued", "active", "scheduled", "error"];
  while (table.rows.length > 1) table.deleteRow(1);
  // Sorted as the server sorts them (an object puts keys that look like numbers first).
  const queues = Object.entries(stats).sort(byCodePoint);
  for (const [queue, counts] of queues) {
    const row = table.insertRow();
    row.insertCell().textContent = queue;
    for (const s of states) {
      const a = document.createElement("a");
      a.href = base + "/queue/" + encodeURIComponent(queue) + "/" + s;
      a.textContent = counts[s];
      const cell = row.insertCell();
      cell.className = "n";
      cell.appendChild(a);
    }
  }
  document.getElementById("empty").hidden = table.rows.length > 1;
}
(async function loop() {
  await new Promise((done) => setTimeout(done, 2000));
  await refresh();
  loop();
})();
"#;

/// `read` as JSON, to a request with the token.
async fn json<T, F, Fut>(app: &Shared, headers: &HeaderMap, call: F) -> Response
where
    T: serde::Serialize,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    if !allowed(app, headers) {
        return refused(app, None);
    }
    match reading("answer an API request", call).await {
        Ok(found) => axum::Json(found).into_response(),
        Err(err) => unavailable(&err),
    }
}

async fn stats_json(Extract(app): Extract<App>, headers: HeaderMap) -> Response {
    json(&app, &headers, || app.tiger.queue_stats()).await
}

async fn minutes_json(Extract(app): Extract<App>, headers: HeaderMap) -> Response {
    json(&app, &headers, || app.tiger.minutes(CHART_MINUTES)).await
}

async fn workers_json(Extract(app): Extract<App>, headers: HeaderMap) -> Response {
    json(&app, &headers, || app.tiger.workers()).await
}

/// How many minutes the chart covers, and its size in pixels.
const CHART_MINUTES: usize = 60;
const CHART_WIDTH: usize = 600;
const CHART_HEIGHT: usize = 150;

/// The chart of the last hour as SVG: a bar per minute, processed runs in blue with the
/// failed part in red, totals above.
async fn chart(Extract(app): Extract<App>, headers: HeaderMap) -> Response {
    if !allowed(&app, &headers) {
        return refused(&app, None);
    }
    let minutes = match reading("read the counts", || app.tiger.minutes(CHART_MINUTES)).await {
        Ok(minutes) => minutes,
        Err(err) => return unavailable(&err),
    };
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        chart_svg(&minutes),
    )
        .into_response()
}

fn chart_svg(minutes: &[crate::Minute]) -> String {
    let (top, bottom) = (24, 16);
    let plot = (CHART_HEIGHT - top - bottom) as f64;
    let most = minutes
        .iter()
        .map(|m| m.processed)
        .max()
        .unwrap_or(0)
        .max(1);
    let step = CHART_WIDTH as f64 / minutes.len().max(1) as f64;
    let bar = |i: usize, count: u64| {
        let height = plot * count as f64 / most as f64;
        let y = top as f64 + plot - height;
        (i as f64 * step, y, height)
    };
    // Saturating: counts come from Redis, where anything may have been written.
    let total = |count: fn(&crate::Minute) -> u64| {
        minutes.iter().map(count).fold(0u64, u64::saturating_add)
    };
    let (processed, failed) = (total(|m| m.processed), total(|m| m.failed));
    let font = "font: 12px system-ui, sans-serif";
    html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(CHART_WIDTH) height=(CHART_HEIGHT)
            viewBox={ "0 0 " (CHART_WIDTH) " " (CHART_HEIGHT) } {
            rect width="100%" height="100%" fill="#fafafa" {}
            text x="2" y="14" style=(font) fill="#222" {
                "last hour: " (processed) " processed, " (failed) " failed"
            }
            text x=(CHART_WIDTH - 2) y="14" text-anchor="end" style=(font) fill="#666" {
                "peak " (most) "/min"
            }
            @for (i, minute) in minutes.iter().enumerate() {
                @let (x, y, height) = bar(i, minute.processed);
                rect x=(x) y=(y) width=(step - 1.0) height=(height) fill="#7aa6c8" {}
                @let (x, y, height) = bar(i, minute.failed.min(minute.processed));
                rect x=(x) y=(y) width=(step - 1.0) height=(height) fill="#d9534f" {}
            }
            text x="2" y=(CHART_HEIGHT - 3) style=(font) fill="#666" { (minutes.len()) " min ago" }
            text x=(CHART_WIDTH - 2) y=(CHART_HEIGHT - 3) text-anchor="end" style=(font) fill="#666" { "now" }
        }
    }
    .into_string()
}

async fn workers_page(Extract(app): Extract<App>, Admitted(base): Admitted) -> Response {
    let workers = match reading("read the live workers", || app.tiger.workers()).await {
        Ok(workers) => workers,
        Err(err) => return unavailable(&err),
    };
    let now = now();
    let all = |queues: &[String]| {
        if queues.is_empty() {
            "all".to_owned()
        } else {
            queues.join(", ")
        }
    };
    page_at(
        &base,
        "workers",
        html! {
            p { (crate::admin::plural(workers.len() as u64, "worker")) " reported in the last " (humantime::format_duration(app.tiger.config().active_task_update_timeout)) "." }
            table id="workers" {
                tr { th { "worker" } th { "queues" } th { "excluded" } th { "in flight" } th.n { "processed" } th.n { "failed" } th { "started" } th { "last heartbeat" } }
                @for worker in &workers {
                    tr {
                        td { (worker.id) }
                        td { (all(&worker.queues)) }
                        td { (worker.exclude_queues.join(", ")) }
                        td {
                            (worker.in_flight_count) " of " (worker.concurrency)
                            @for task in &worker.in_flight {
                                br; a.id href={ (base) "/task/" (urlencode(&task.id)) } title=(task.id) { (task.queue) " · " (short(&task.id)) }
                            }
                        }
                        td.n { (worker.processed) }
                        td.n { (worker.failed) }
                        td { (crate::admin::relative(worker.started, now)) }
                        td { (crate::admin::relative(worker.heartbeat, now)) }
                    }
                }
            }
        },
    )
}

async fn queue_page(
    Extract(app): Extract<App>,
    Admitted(base): Admitted,
    Path((queue, state)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Ok(state) = state.parse::<State>() else {
        return not_found(Admitted(base)).await;
    };
    let number = |name: &str| query.get(name).and_then(|v| v.parse::<usize>().ok());
    let skip = number("skip").unwrap_or(0);
    let limit = number("limit").filter(|n| *n > 0).unwrap_or(50).min(1000);
    let (total, tasks) = match reading("read a queue", || {
        Task::tasks_from_queue(&app.tiger, &queue, state, skip, limit, 0)
    })
    .await
    {
        Ok(found) => found,
        Err(err) => return unavailable(&err),
    };
    let now = now();
    page_at(
        &base,
        &format!("{queue} · {state}"),
        html! {
            (notice(&query))
            p { (crate::admin::plural(total, "task")) " " (state.phrase()) " on " b { (queue) } ", newest first." }
            table {
                tr { th { "id" } th { "function" } th { "arguments" } th { (time_heading(state)) } th.n { "failures" } }
                @for task in &tasks {
                    tr {
                        td.id { a href={ "../../task/" (urlencode(&task.id)) } title=(task.id) { (short(&task.id)) } }
                        td { (task.data.as_ref().map_or("(JSON gone or unreadable)", |d| d.func.as_str())) }
                        td { (task.data.as_ref().map_or_else(String::new, |d| crate::admin::preview(&crate::admin::call_text(d)))) }
                        td { (crate::admin::relative(task.ts, now)) }
                        td.n { (task.n_executions) }
                    }
                }
            }
            p {
                @if skip > 0 { a href={ "?skip=" (skip.saturating_sub(limit)) "&limit=" (limit) } { "newer" } " " }
                @if (skip + tasks.len()) < total as usize { a href={ "?skip=" (skip + limit) "&limit=" (limit) } { "older" } }
            }
        },
    )
    .into_response()
}

async fn task_page(
    Extract(app): Extract<App>,
    Admitted(base): Admitted,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let found = match reading("read a task", || {
        Task::find_loading(&app.tiger, &id, Some(SHOWN_EXECUTIONS))
    })
    .await
    {
        Ok(found) => found,
        Err(err) => return unavailable(&err),
    };
    if found.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            page_at(
                &base,
                "not found",
                html! { p { "No task " (id) " in any queue." } },
            ),
        )
            .into_response();
    }
    page_at(
        &base,
        &format!("task {id}"),
        html! {
            (notice(&query))
            @for task in &found {
                h2 {
                    a href=(queue_page_at(&base, &task.queue, task.state)) { (task.queue) }
                    " · " (task.state.as_str())
                }
                @if !app.read_only { (actions(&app, task)) }
                @if let Some(data) = &task.data {
                    table {
                        tr { th { "function" } td { (data.func) } }
                        tr { th { "arguments" } td { (crate::admin::preview(&crate::admin::call_text(data))) } }
                        @for (option, value) in options(task.json.as_deref()) {
                            tr { th { (option) } td { (value) } }
                        }
                    }
                }
                h3 { "JSON" }
                pre { (task.json.as_deref().map_or_else(|| "(gone)".to_owned(), pretty)) }
                h3 {
                    (crate::admin::plural(task.n_executions, "failed run"))
                    @if (task.executions.len() as u64) < task.n_executions { " (the last " (task.executions.len()) " kept or shown)" }
                }
                @for record in &task.executions {
                    p {
                        b { (record.exception_name.as_deref().unwrap_or("?")) }
                        " at " (record.time_failed.map_or_else(|| "?".to_owned(), crate::admin::timestamp))
                        @if let Some(host) = &record.host { " on " (host) }
                    }
                    pre { (record.traceback.as_deref().or(record.unreadable.as_deref()).unwrap_or("")) }
                }
            }
        },
    )
    .into_response()
}

/// The forms of what can be done to `task` in its state.
fn actions(app: &Shared, task: &Task) -> Markup {
    let form = |action: &str, label: &str| {
        html! {
            form method="post" action={ (urlencode(&task.id)) "/" (action) } {
                input type="hidden" name="csrf" value=(app.csrf);
                input type="hidden" name="queue" value=(task.queue);
                input type="hidden" name="state" value=(task.state.as_str());
                @if action == "reschedule" { input name="when" placeholder="1h 30m, RFC 3339, now"; }
                button type="submit" { (label) }
            }
        }
    };
    html! {
        p {
            @match task.state {
                State::Error => { (form("retry", "retry")) (form("delete", "delete")) }
                State::Scheduled => { (form("cancel", "cancel")) (form("reschedule", "reschedule")) }
                State::Queued => { (form("cancel", "cancel")) }
                State::Active => {}
            }
        }
    }
}

async fn act(
    Extract(app): Extract<App>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !allowed(&app, &headers) {
        return refused(&app, None);
    }
    if app.read_only {
        return (StatusCode::FORBIDDEN, "the dashboard is read-only\n").into_response();
    }
    if form.get("csrf") != Some(&app.csrf) || !same_origin(&headers) {
        return (
            StatusCode::FORBIDDEN,
            "refused: the request did not come from this dashboard's page\n",
        )
            .into_response();
    }
    let (Some(queue), Some(state)) = (
        form.get("queue"),
        form.get("state").and_then(|s| s.parse::<State>().ok()),
    ) else {
        return (StatusCode::BAD_REQUEST, "queue and state are required\n").into_response();
    };
    let asked = match action.as_str() {
        "retry" => Action::Retry,
        "delete" => Action::Delete,
        "cancel" => Action::Cancel,
        "reschedule" => match crate::admin::parse_when(form.get("when").map_or("", String::as_str))
        {
            Ok(when) => Action::Reschedule(when),
            Err(why) => {
                return (StatusCode::BAD_REQUEST, format!("when: {why}\n")).into_response();
            }
        },
        _ => return (StatusCode::NOT_FOUND, "no such action\n").into_response(),
    };
    // The copy the page showed, else where the task is now on that queue (the action then
    // says why it does not apply).
    let found = match reading("find the task", || {
        Task::find_loading(&app.tiger, &id, Some(0))
    })
    .await
    {
        Ok(found) => found,
        Err(err) => return failed(&err),
    };
    let on_queue = || found.iter().filter(|task| &task.queue == queue);
    let Some(task) = on_queue()
        .find(|task| task.state == state)
        .or_else(|| on_queue().next())
    else {
        return failed(&Error::TaskNotFound {
            id,
            place: format!("queue `{queue}`"),
        });
    };
    // Back to the task with word of what was done; a task deleted or cancelled is gone, so
    // to the list it was in.
    let to_task = |done: &str| format!("../{}?done={done}", urlencode(&id));
    let to_list = |done: &str| {
        format!(
            "../../queue/{}/{}?done={done}&task={}",
            urlencode(&task.queue),
            task.state.as_str(),
            urlencode(&id)
        )
    };
    let (doing, back) = match asked {
        Action::Retry => (task.retry(&app.tiger).boxed(), to_task("retried")),
        Action::Delete => (task.delete(&app.tiger).boxed(), to_list("deleted")),
        Action::Cancel => (task.cancel(&app.tiger).boxed(), to_list("cancelled")),
        Action::Reschedule(when) => (
            task.update_scheduled_time(&app.tiger, when).boxed(),
            to_task("rescheduled"),
        ),
    };
    // Not tried again (it changes something), and bounded as the reads are; a Redis that
    // answers late may still carry it out, which the answer says.
    let Ok(done) = tokio::time::timeout(crate::client::READ_BOUND, doing).await else {
        return undecided();
    };
    match done {
        Ok(()) => Redirect::to(&back).into_response(),
        Err(err) => failed(&err),
    }
}

/// What a task page's form asks for.
enum Action {
    Retry,
    Delete,
    Cancel,
    Reschedule(crate::When),
}

/// False when the browser says the request comes from another site.
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => {
            let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            host == Some(origin_host)
        }
    }
}

async fn metrics(Extract(app): Extract<App>, headers: HeaderMap) -> Response {
    if !allowed(&app, &headers) {
        return refused(&app, None);
    }
    match &app.metrics {
        Some(handle) => crate::metrics::respond(&app.tiger, handle).await,
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "another metrics recorder is installed\n",
        )
            .into_response(),
    }
}

async fn login_page(
    original: OriginalUri,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let base = base(&original, &uri);
    login_form(&base, &after_login(&base, query.get("next")), false)
}

/// The login form, which sends the browser on to `next` once the token is right; `wrong`
/// after a token that was not.
fn login_form(base: &str, next: &str, wrong: bool) -> Response {
    page_at(
        base,
        "log in",
        html! {
            @if wrong { p.stale { "That is not the token." } }
            form method="post" action={ (base) "/login" } {
                input type="hidden" name="next" value=(next);
                input type="password" name="token" placeholder="token" autofocus;
                button type="submit" { "log in" }
            }
        },
    )
}

async fn login(
    Extract(app): Extract<App>,
    headers: HeaderMap,
    (original, uri): (OriginalUri, Uri),
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let base = base(&original, &uri);
    let home = home(&base);
    let next = after_login(&base, form.get("next"));
    if !same_origin(&headers) {
        return (
            StatusCode::FORBIDDEN,
            "refused: the login did not come from this dashboard's page\n",
        )
            .into_response();
    }
    match (&app.token, form.get("token")) {
        (Some(token), Some(given)) if same_secret(given, token) => (
            [(
                header::SET_COOKIE,
                format!(
                    "{COOKIE}={}; HttpOnly; SameSite=Lax; Path={home}",
                    session(token)
                ),
            )],
            Redirect::to(&next),
        )
            .into_response(),
        (None, _) => Redirect::to(&next).into_response(),
        _ => (StatusCode::UNAUTHORIZED, login_form(&base, &next, true)).into_response(),
    }
}

/// Where a login goes on to: `next` when it is a page of this dashboard (a path under
/// `base` with no `.` or `..` segment, escaped or not, that could climb out of it; so never
/// another site or another part of the application), else the overview.
fn after_login(base: &str, next: Option<&String>) -> String {
    let home = home(base);
    let climbs = |path: &str| {
        path.split('/').any(|segment| {
            let plain = segment.to_ascii_lowercase().replace("%2e", ".");
            plain == "." || plain == ".."
        })
    };
    next.filter(|next| {
        next.bytes().all(|b| b.is_ascii_graphic())
            && !next.starts_with("//")
            && !next.contains('\\')
            && !climbs(next.split(['?', '#']).next().unwrap_or_default())
            && (next.as_str() == home || next.starts_with(&format!("{base}/")))
    })
    .cloned()
    .unwrap_or(home)
}

/// Any other address: a page that leads back to the overview.
async fn not_found(Admitted(base): Admitted) -> Response {
    let page = page_at(
        &base,
        "not found",
        html! { p { "No page here. " a href=(home(&base)) { "See the queues" } "." } },
    );
    (StatusCode::NOT_FOUND, page).into_response()
}

fn unavailable(err: &Error) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n")).into_response()
}

/// The answer to an action whose outcome is not known: Redis did not answer in time.
fn undecided() -> Response {
    (
        StatusCode::GATEWAY_TIMEOUT,
        "Redis did not answer in time: the action may still take effect; reload the task to see where it is\n",
    )
        .into_response()
}

fn failed(err: &Error) -> Response {
    if matches!(err, Error::Redis(err) if err.is_timeout()) {
        return undecided();
    }
    let status = match err {
        Error::TaskNotFound { .. } => StatusCode::NOT_FOUND,
        Error::WrongState { .. } => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, format!("{err}\n")).into_response()
}

/// The fields of a task's JSON besides its id, function and arguments (its options, and
/// the times TaskTiger keeps), each as compact JSON; times as dates.
fn options(json: Option<&str>) -> Vec<(String, String)> {
    let Some(serde_json::Value::Object(fields)) = json.and_then(|j| serde_json::from_str(j).ok())
    else {
        return Vec::new();
    };
    fields
        .into_iter()
        .filter(|(name, _)| !matches!(name.as_str(), "id" | "func" | "args" | "kwargs"))
        .map(|(name, value)| {
            let text = match (&value, name.as_str()) {
                (serde_json::Value::Number(n), "time_last_queued" | "scheduled_at") => n
                    .as_f64()
                    .map_or_else(|| value.to_string(), crate::admin::timestamp),
                (serde_json::Value::String(text), _) => text.clone(),
                _ => value.to_string(),
            };
            (name, text)
        })
        .collect()
}

/// Stored JSON indented for reading; as stored when it does not parse.
fn pretty(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .and_then(|value| serde_json::to_string_pretty(&value))
        .unwrap_or_else(|_| json.to_owned())
}

/// Word of the action just done, from the address an action sent the browser to; nothing
/// for any other address.
fn notice(query: &HashMap<String, String>) -> Markup {
    // Only an id as tiger or TaskTiger makes them is repeated, so a link cannot make the
    // page say something else.
    let task = query
        .get("task")
        .map(String::as_str)
        .filter(|id| id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or("");
    let text = match query.get("done").map(String::as_str) {
        Some("retried") => "Retried: the task is queued again.".to_owned(),
        Some("rescheduled") => "Rescheduled.".to_owned(),
        Some("deleted") => format!("Deleted task {task}."),
        Some("cancelled") => format!("Cancelled task {task}."),
        _ => return html! {},
    };
    html! { p.notice id="notice" { (text) } }
}

/// What the score of a task in `state` says, as a column heading.
fn time_heading(state: State) -> &'static str {
    match state {
        State::Queued => "queued",
        State::Active => "last heartbeat",
        State::Scheduled => "due",
        State::Error => "failed",
    }
}

/// A task id as a list shows it: TaskTiger's 64 hex digits cut to the first 12 (the page of
/// the task, and the link's title, have it whole).
fn short(id: &str) -> String {
    if id.chars().count() <= 16 {
        id.to_owned()
    } else {
        id.chars().take(12).chain(['…']).collect()
    }
}

/// `text` safe in a URL path segment or a query value, as `encodeURIComponent` makes it in
/// the overview's script. A name that is exactly `.` or `..` has no link a browser keeps:
/// browsers resolve such a segment away, escaped (`%2E`) or not (README says so).
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'!'
            | b'~'
            | b'*'
            | b'\''
            | b'('
            | b')' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
