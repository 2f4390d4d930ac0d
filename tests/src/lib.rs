//! Tasks and helpers shared by tiger's integration tests (`tests/tests/*.rs`) and by the
//! worker binary those tests start as a child process (`src/bin/tiger-test-worker.rs`).
//!
//! Tasks report back through [`record`]: every call stores what it received under a token
//! that the test passed as the first argument, so parallel tests never see each other's
//! calls.

#![allow(missing_docs, reason = "test support, not a published API")]

pub mod faults;

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::IntoFuture;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tiger::{State, Tiger, Worker, testing::TestRedis};

/// Everything recorded, by token.
type Records = HashMap<String, Vec<Box<dyn Any + Send>>>;

static RECORDS: LazyLock<Mutex<Records>> = LazyLock::new(Default::default);

/// Stores `value` under `token`.
pub fn record<T: Any + Send>(token: &str, value: T) {
    RECORDS
        .lock()
        .unwrap()
        .entry(token.to_owned())
        .or_default()
        .push(Box::new(value));
}

/// Takes everything stored under `token` as `T`s (panics on another type).
pub fn take<T: Any>(token: &str) -> Vec<T> {
    let values = RECORDS.lock().unwrap().remove(token).unwrap_or_default();
    values
        .into_iter()
        .map(|v| *v.downcast::<T>().expect("recorded value of another type"))
        .collect()
}

/// How many values are stored under `token`.
pub fn count(token: &str) -> usize {
    RECORDS.lock().unwrap().get(token).map_or(0, Vec::len)
}

/// A fresh token.
pub fn token() -> String {
    format!("{:016x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// A nested argument type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    pub scores: BTreeMap<String, Vec<u16>>,
    pub home: Option<Address>,
}

/// Nested one level deeper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Address {
    pub city: String,
    pub zip: Option<u32>,
}

/// What [`echo_all()`] received.
#[derive(Debug, Clone, PartialEq)]
pub struct Echoed {
    pub text: String,
    pub profile: Profile,
    pub maybe: Option<u32>,
    pub list: Vec<i64>,
    pub big: u64,
    pub float: f64,
}

/// Records every argument it receives.
#[tiger::task(queue = "roundtrip")]
pub async fn echo_all(
    token: String,
    text: String,
    profile: Profile,
    maybe: Option<u32>,
    list: Vec<i64>,
    big: u64,
    float: f64,
) {
    record(
        &token,
        Echoed {
            text,
            profile,
            maybe,
            list,
            big,
            float,
        },
    );
}

/// A plain fn task: records its argument and the thread it ran on.
#[tiger::task]
pub fn sync_echo(token: String, n: u32) {
    record(&token, (n, std::thread::current().id()));
}

/// Records a label; tests enqueue it on many queues.
#[tiger::task]
pub async fn note(token: String, label: String) {
    record(&token, label);
}

/// A task error with a source, to check the stored chain.
#[derive(Debug, thiserror::Error)]
#[error("charging the card failed")]
pub struct ChargeError(#[source] pub std::io::Error);

/// Always fails with [`ChargeError`].
#[tiger::task(queue = "billing")]
pub async fn charge(token: String, cents: u64) -> Result<(), ChargeError> {
    record(&token, cents);
    Err(ChargeError(std::io::Error::other(format!(
        "card declined for {cents} cents"
    ))))
}

/// Panics in an async task.
#[tiger::task]
pub async fn explode(token: String) {
    record(&token, ());
    panic!("boom in async task {token}");
}

/// Panics in a plain fn task.
#[tiger::task]
pub fn explode_sync(token: String) {
    record(&token, ());
    panic!("boom in sync task {token}");
}

/// Holds until `expected` gate tasks with this token run at the same time (or fails after
/// 10 s); records how many were running when it entered.
#[tiger::task(queue = "gate")]
pub async fn gate(token: String, expected: usize) -> Result<(), String> {
    let running = enter_gate(&token);
    record(&token, running);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let result = loop {
        if GATES.lock().unwrap()[&token].1 >= expected {
            break Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            break Err(format!(
                "only {running} of {expected} gate tasks ran at once"
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    leave_gate(&token);
    result
}

/// Counts one more task running under `token`; returns how many run now.
fn enter_gate(token: &str) -> usize {
    let mut gates = GATES.lock().unwrap();
    let entry = gates.entry(token.to_owned()).or_default();
    entry.0 += 1;
    entry.1 = entry.1.max(entry.0);
    entry.0
}

fn leave_gate(token: &str) {
    GATES.lock().unwrap().get_mut(token).unwrap().0 -= 1;
}

/// Per token: (running now, most running at once).
static GATES: LazyLock<Mutex<HashMap<String, (usize, usize)>>> = LazyLock::new(Default::default);

/// Most gate tasks with `token` that ran at once.
pub fn gate_peak(token: &str) -> usize {
    GATES.lock().unwrap().get(token).map_or(0, |g| g.1)
}

/// For the child-process worker: creates `<dir>/started-<n>`, waits (up to 30 s) for
/// `<dir>/release`, then creates `<dir>/finished-<n>`.
#[tiger::task(queue = "files")]
pub async fn file_gate(dir: String, n: u32) -> Result<(), String> {
    wait_for_release(dir, n).await
}

/// [`file_gate()`] that retries (0.1 s apart, three times).
#[tiger::task(queue = "files", retry_method = fixed(0.1, 3))]
pub async fn file_gate_retried(dir: String, n: u32) -> Result<(), String> {
    wait_for_release(dir, n).await
}

async fn wait_for_release(dir: String, n: u32) -> Result<(), String> {
    let dir = std::path::PathBuf::from(dir);
    std::fs::write(dir.join(format!("started-{n}")), b"").map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !dir.join("release").exists() {
        if tokio::time::Instant::now() > deadline {
            return Err("never released".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::fs::write(dir.join(format!("finished-{n}")), b"").map_err(|e| e.to_string())
}

/// A Redis and a handle on a fresh prefix for one test.
pub struct Fixture {
    pub redis: TestRedis,
    pub tiger: Tiger,
}

impl Fixture {
    pub async fn new() -> Fixture {
        let redis = TestRedis::start().expect("start a test redis-server");
        let tiger = redis.tiger().await.expect("connect to the test redis");
        Fixture { redis, tiger }
    }

    /// Runs a worker with `--once` semantics over every queue.
    pub async fn drain(&self) {
        self.drain_with(|w| w).await;
    }

    /// Runs a worker configured by `configure` until drained (at most 30 s).
    pub async fn drain_with(&self, configure: impl FnOnce(Worker) -> Worker) {
        let worker = configure(Worker::new(self.tiger.clone()).once(true));
        tokio::time::timeout(Duration::from_secs(30), worker.run())
            .await
            .expect("worker drained within 30 s")
            .expect("worker ran");
    }

    /// Every key under the test's prefix, without the prefix (locks that expire on their
    /// own left out, see [`TestRedis::keys`]).
    pub async fn keys(&self) -> BTreeSet<String> {
        let prefix = format!("{}:", self.tiger.keys().prefix());
        let keys = self.redis.keys(&self.tiger).await.expect("scan keys");
        keys.into_iter()
            .map(|key| key.strip_prefix(&prefix).unwrap_or(&key).to_owned())
            .collect()
    }

    /// The ids in `<state>:<queue>`, lowest score first.
    pub async fn ids(&self, state: State, queue: &str) -> Vec<String> {
        redis::cmd("ZRANGE")
            .arg(self.tiger.keys().queue(state, queue))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.tiger.connection())
            .await
            .expect("zrange")
    }

    /// The execution records of task `id`, parsed.
    pub async fn executions(&self, id: &str) -> Vec<serde_json::Value> {
        let records: Vec<String> = redis::cmd("LRANGE")
            .arg(self.tiger.keys().executions(id))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.tiger.connection())
            .await
            .expect("lrange");
        records
            .iter()
            .map(|r| serde_json::from_str(r).expect("record is JSON"))
            .collect()
    }

    /// The task locks now in Redis (`<prefix>:lockv2:*` but the sweeps' rate limits).
    pub async fn task_locks(&self) -> Vec<String> {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:lockv2:*", self.tiger.keys().prefix()))
            .query_async(&mut self.tiger.connection())
            .await
            .unwrap();
        keys.into_iter()
            .filter(|key| !key.contains(":lockv2:queue_"))
            .collect()
    }

    /// The stored JSON of task `id`, parsed.
    pub async fn body(&self, id: &str) -> Option<serde_json::Value> {
        let body: Option<String> = redis::cmd("GET")
            .arg(self.tiger.keys().task(id))
            .query_async(&mut self.tiger.connection())
            .await
            .expect("get");
        body.map(|b| serde_json::from_str(&b).expect("body is JSON"))
    }

    /// The port of the fixture's Redis, as the Python helpers take it.
    pub fn port(&self) -> String {
        let url = self.redis.url();
        let port = url.rsplit(':').next().unwrap_or_default();
        port.trim_end_matches('/').to_owned()
    }

    /// Runs the Python helper `tests/python/<script>` with the fixture's port and prefix,
    /// then `args`, and parses what it prints as JSON.
    pub fn python_json(&self, script: &str, args: &[&str]) -> serde_json::Value {
        let output = std::process::Command::new(python())
            .arg(workspace_root().join("tests/python").join(script))
            .args([self.port().as_str(), self.tiger.keys().prefix()])
            .args(args)
            .output()
            .expect("run python");
        assert!(
            output.status.success(),
            "python {script} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("python printed JSON")
    }

    /// Writes a task the way a foreign producer would: raw body, queue entry, queue set.
    pub async fn inject(&self, queue: &str, id: &str, body: Option<&str>) {
        let keys = self.tiger.keys();
        let mut pipe = redis::pipe();
        if let Some(body) = body {
            pipe.cmd("SET").arg(keys.task(id)).arg(body).ignore();
        }
        pipe.cmd("ZADD")
            .arg(keys.queue(State::Queued, queue))
            .arg(1.0)
            .arg(id)
            .ignore();
        pipe.cmd("SADD")
            .arg(keys.state_set(State::Queued))
            .arg(queue)
            .ignore();
        pipe.query_async::<()>(&mut self.tiger.connection())
            .await
            .expect("inject");
    }
}

/// `BTreeSet` of string literals, for key assertions.
pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The workspace root.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The python of the virtualenv with the real TaskTiger, created on first use by
/// `scripts/python-env`.
pub fn python() -> std::path::PathBuf {
    let output = std::process::Command::new(workspace_root().join("scripts/python-env"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run scripts/python-env");
    assert!(output.status.success(), "scripts/python-env failed");
    std::path::PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

/// A fresh empty directory under the system temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("tiger-test-{}", token()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

static RELEASED: LazyLock<Mutex<BTreeSet<String>>> = LazyLock::new(Default::default);

/// Records that it started, then holds until [`release()`] is called with its token (or 30 s).
#[tiger::task(queue = "hold")]
pub async fn hold(token: String) -> Result<(), String> {
    record(&token, "started".to_owned());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !RELEASED.lock().unwrap().contains(&token) {
        if tokio::time::Instant::now() > deadline {
            return Err("never released".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Lets the [`hold()`] tasks with `token` finish.
pub fn release(token: &str) {
    RELEASED.lock().unwrap().insert(token.to_owned());
}

/// Takes a map JSON cannot represent (its keys are not strings).
#[tiger::task]
pub async fn pairs(map: BTreeMap<(u8, u8), u8>) {
    drop(map);
}

impl Fixture {
    /// Asserts that the keys under the test's prefix (prefix stripped) are exactly `expected`.
    pub async fn assert_keys(&self, expected: impl IntoIterator<Item = String>) {
        let expected: BTreeSet<String> = expected.into_iter().collect();
        let actual = self.keys().await;
        assert_eq!(
            actual, expected,
            "keys under the test prefix (left: found, right: expected)"
        );
    }
}

impl Fixture {
    /// Asserts that all that is left is `ids` in `queue`'s error state, each with its body,
    /// records and count.
    pub async fn assert_only_errored(&self, queue: &str, ids: &[&str]) {
        let mut keys = state_keys(State::Error, queue);
        for id in ids {
            keys.extend(errored_task_keys(id));
        }
        self.assert_keys(keys).await;
    }
}

/// The keys a queue in one state leaves: the state set and the queue's zset.
pub fn state_keys(state: State, queue: &str) -> Vec<String> {
    vec![state.to_string(), format!("{state}:{queue}")]
}

/// The keys an errored task leaves besides its queue's: body, records, count.
pub fn errored_task_keys(id: &str) -> Vec<String> {
    vec![
        format!("task:{id}"),
        format!("task:{id}:executions"),
        format!("task:{id}:executions_count"),
    ]
}

/// The key of a task's body.
pub fn task_key(id: &str) -> String {
    format!("task:{id}")
}

/// The field names of a JSON object, in the order serde_json keeps them (sorted).
pub fn field_names(value: &serde_json::Value) -> Vec<&str> {
    value
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect()
}

impl Profile {
    /// A small profile for tests that don't care about its content.
    pub fn plain() -> Profile {
        Profile {
            name: "n".into(),
            scores: BTreeMap::new(),
            home: None,
        }
    }
}

/// Records `n`, then enqueues itself with `n - 1` until 0: `delay` inside a task, without
/// `.on(...)`, must reach the worker's own Redis and prefix.
#[tiger::task(queue = "chain")]
pub async fn chain(token: String, n: u32) -> tiger::Result<()> {
    record(&token, n);
    if n > 0 {
        chain::delay(token, n - 1).await?;
    }
    Ok(())
}

/// [`chain()`] as a plain fn: it enqueues by blocking on the runtime.
#[tiger::task(queue = "chain")]
pub fn chain_sync(token: String, n: u32) -> tiger::Result<()> {
    record(&token, n);
    if n > 0 {
        let enqueue = chain_sync::delay(token, n - 1).into_future();
        tokio::runtime::Handle::current().block_on(enqueue)?;
    }
    Ok(())
}

/// Counts its runs per token and fails every time; retried twice, 0.2 s apart.
#[tiger::task(queue = "retry", retry_method = fixed(0.2, 2))]
pub async fn always_fails(token: String) -> Result<(), String> {
    record(&token, tiger::current_task().map_or(0, |t| t.retries));
    Err(format!("attempt failed for {token}"))
}

/// An error that `flaky` retries on.
#[derive(Debug, thiserror::Error)]
#[error("the upstream was flaky")]
pub struct Flaky;

/// An error that `flaky` does not retry on.
#[derive(Debug, thiserror::Error)]
#[error("the input was bad")]
pub struct BadInput;

/// Fails with [`Flaky`] until its `succeed_on`-th run (then succeeds), or with [`BadInput`]
/// when `bad` is set. Retries only [`Flaky`], found anywhere in the error's chain.
#[tiger::task(queue = "retry", retry_on = [Flaky], retry_method = fixed(0.1, 5))]
pub async fn flaky(
    token: String,
    succeed_on: u32,
    bad: bool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let run = tiger::current_task().map_or(0, |t| t.retries) + 1;
    record(&token, run);
    if bad {
        return Err(Box::new(BadInput));
    }
    if run < succeed_on {
        return Err(Box::new(std::io::Error::other(Flaky)));
    }
    Ok(())
}

/// Asks to be retried (with its own method) until its `times`-th run; with `quiet`, out of
/// retries it is dropped instead of kept in error.
#[tiger::task(queue = "retry")]
pub async fn asks_again(token: String, times: u32, quiet: bool) -> Result<(), tiger::Retry> {
    let run = tiger::current_task().map_or(0, |t| t.retries) + 1;
    record(&token, run);
    if run < times {
        return Err(tiger::Retry::new()
            .method(tiger::fixed(0.1, 2))
            .log_error(!quiet));
    }
    Ok(())
}

/// Keeps only the last two records while failing four times.
#[tiger::task(queue = "retry", retry_method = fixed(0.05, 3), max_stored_executions = 2)]
pub async fn fails_four_times(token: String) -> Result<(), String> {
    record(&token, ());
    Err("again".into())
}

/// Runs far past its 0.3 s hard timeout unless cancelled.
#[tiger::task(queue = "slow", hard_timeout = 0.3)]
pub async fn sleepy(token: String) {
    record(&token, "started".to_owned());
    tokio::time::sleep(Duration::from_secs(30)).await;
    record(&token, "finished".to_owned());
}

/// Unique by all its arguments.
#[tiger::task(queue = "unique", unique)]
pub async fn unique_note(token: String, label: String) {
    record(&token, label);
}

/// Unique by `user` only.
#[tiger::task(queue = "unique", unique_key = ["user"])]
pub async fn keyed_note(user: u64, label: String) {
    record(&format!("user-{user}"), label);
}

/// Holds (like [`hold()`]) under a lock keyed by `user`; records how many ran at once.
#[tiger::task(queue = "locked", lock_key = ["user"])]
pub async fn locked_hold(user: u64, token: String) -> Result<(), String> {
    let running = enter_gate(&token);
    record(&token, (user, running));
    let result = hold(format!("{token}-{user}")).await;
    leave_gate(&token);
    result
}

/// At most two queued, scheduled or active at once.
#[tiger::task(queue = "bounded", max_queue_size = 2)]
pub async fn bounded(n: u32) {
    let _ = n;
}

/// The argument shapes of the "typed a" vector in tests/data/unique_ids.json.
#[tiger::task(name = "typed:a", unique)]
pub async fn typed_a(
    a: u8,
    b: String,
    c: f64,
    d: u128,
    e: (bool, Option<u8>),
    f: BTreeMap<String, f64>,
) {
    drop((a, b, c, d, e, f));
}

/// The "typed b" vector: unique by `user_id`.
#[tiger::task(name = "typed:b", unique_key = ["user_id"])]
pub async fn typed_b(user_id: u64, address: String) {
    drop((user_id, address));
}

/// What a batch test saw run, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// One call of [`batch_task()`] with these numbers.
    Batch(Vec<u32>),
    /// One call of [`non_batch_task()`].
    Single(u32),
}

/// A batch task: one call per group, with every task's `(token, n)`. Fails when any `n`
/// is 10.
#[tiger::task(queue = "batch", batch)]
pub async fn batch_task(calls: Vec<(String, u32)>) -> Result<(), String> {
    let numbers: Vec<u32> = calls.iter().map(|(_, n)| *n).collect();
    record(&calls[0].0, Ran::Batch(numbers.clone()));
    if numbers.contains(&10) {
        Err("10 is not allowed".into())
    } else {
        Ok(())
    }
}

/// A plain task on the batch queue. Fails for 10.
#[tiger::task(queue = "batch")]
pub async fn non_batch_task(token: String, n: u32) -> Result<(), String> {
    record(&token, Ran::Single(n));
    if n == 10 {
        Err("10 is not allowed".into())
    } else {
        Ok(())
    }
}

/// Holds (like [`hold()`]) under a lock on all its arguments.
#[tiger::task(queue = "locked", lock)]
pub async fn locked_by_args(token: String) -> Result<(), String> {
    hold(token).await
}

/// Waits 0.1 s, then 0.2 s, then gives up: a user-defined retry method.
pub fn two_quick_retries(n: u32) -> Option<Duration> {
    (n <= 2).then(|| Duration::from_millis(100 * u64::from(n)))
}

/// Always fails; retried by [`two_quick_retries`].
#[tiger::task(queue = "retry", retry_method = two_quick_retries)]
pub async fn custom_retries(token: String) -> Result<(), String> {
    record(&token, tiger::current_task().map_or(0, |t| t.retries));
    Err("no".into())
}

/// A worker running in the background until [`RunningWorker::stop`].
pub struct RunningWorker {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<tiger::Result<tiger::Stopped>>,
}

/// Starts `worker` in the background.
pub fn spawn_worker(worker: Worker) -> RunningWorker {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(
        worker
            .shutdown_on(async { stopped.await.unwrap_or(()) })
            .run(),
    );
    RunningWorker {
        stop: Some(stop),
        handle,
    }
}

impl RunningWorker {
    /// Asks it to stop: it takes no more tasks and returns once those in flight finish.
    pub fn request_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Whether it has returned.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Asks it to stop, and waits until it has.
    pub async fn stop(mut self) -> tiger::Stopped {
        self.request_stop();
        self.finished().await
    }

    /// Waits until it returns by itself, and says why it did.
    pub async fn finished(self) -> tiger::Stopped {
        self.handle.await.expect("worker task").expect("worker ran")
    }
}

/// A plain fn under a lock keyed by `user` that overruns its 0.2 s hard timeout until
/// [`release`] is called with `token`; records how many ran at once.
#[tiger::task(queue = "locked-slow", lock_key = ["user"], hard_timeout = 0.2)]
pub fn slow_locked(user: u64, token: String) {
    let running = enter_gate(&token);
    record(&token, running);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !RELEASED.lock().unwrap().contains(&token) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    leave_gate(&token);
    let _ = user;
}

/// A plain fn that blocks far past its 0.3 s hard timeout.
#[tiger::task(queue = "stuck", hard_timeout = 0.3)]
pub fn stuck(seconds: u64) {
    std::thread::sleep(Duration::from_secs(seconds));
}

/// Unique, and at most one in its queue.
#[tiger::task(queue = "bounded-unique", unique, max_queue_size = 1)]
pub async fn bounded_unique(n: u32) {
    let _ = n;
}

/// Like [`file_gate()`] but per process: creates `<dir>/started-<pid>`, waits for
/// `<dir>/release-<pid>`, then creates `<dir>/finished-<pid>`; retried after failures.
#[tiger::task(queue = "pid", retry_method = fixed(0.1, 3))]
pub async fn pid_gate(dir: String) -> Result<(), String> {
    let dir = std::path::PathBuf::from(dir);
    let pid = std::process::id();
    std::fs::write(dir.join(format!("started-{pid}")), b"").map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !dir.join(format!("release-{pid}")).exists() {
        if tokio::time::Instant::now() > deadline {
            return Err("never released".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::fs::write(dir.join(format!("finished-{pid}")), b"").map_err(|e| e.to_string())
}

/// A struct argument with floats, for the non-finite checks of `delay`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub x: f64,
    pub y: f32,
}

/// Takes floats bare, in a list, in a map and in a struct; records what it received.
#[tiger::task(queue = "floats")]
pub async fn floats(
    token: String,
    x: f64,
    list: Vec<f64>,
    map: BTreeMap<String, f64>,
    point: Point,
) {
    record(&token, (x, list, map, point));
}

/// Runs for `ms` milliseconds, counting (as [`gate()`] does, see [`gate_peak`]) how many
/// with this token run at once; records when it started.
#[tiger::task(queue = "crowd")]
pub async fn crowd(token: String, ms: u64) {
    record(&token, std::time::SystemTime::now());
    enter_gate(&token);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    leave_gate(&token);
}

/// An `async fn` that never reaches an `.await`: nothing in-process can cancel it at its 1 s
/// hard timeout. Gives up by itself after 60 s.
#[tiger::task(queue = "spin", hard_timeout = 1.0)]
pub async fn spin() {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Aborts the process that runs it.
#[tiger::task(queue = "spin")]
pub fn abort_process() {
    std::process::abort();
}

/// Counts one finished run of soak task `n` in the hash `soak-done:<prefix>` (outside the
/// prefix, so the invariants checker does not see it).
async fn soak_done(n: u32) -> tiger::Result<()> {
    let tiger = Tiger::global().await?;
    redis::cmd("HINCRBY")
        .arg(format!("soak-done:{}", tiger.keys().prefix()))
        .arg(n)
        .arg(1)
        .query_async::<i64>(&mut tiger.connection())
        .await?;
    Ok(())
}

/// A soak task that does not retry: at most once.
#[tiger::task(queue = "soak")]
pub async fn soak_once(n: u32, ms: u64) -> tiger::Result<()> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    soak_done(n).await
}

/// A soak task that retries on any failure, a lost worker included: at least once.
#[tiger::task(queue = "soak", retry_method = fixed(0.0, 100))]
pub async fn soak_retried(n: u32, ms: u64) -> tiger::Result<()> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    soak_done(n).await
}

/// Prints a partial line (no newline) and succeeds.
#[tiger::task(queue = "spin")]
pub fn print_partial() {
    use std::io::Write;
    print!("progress: 50%");
    let _ = std::io::stdout().flush();
}

/// Starts `sleep 5`, which keeps the task's stdout and stderr open, and succeeds at once.
#[tiger::task(queue = "spin", hard_timeout = 2.0)]
pub fn leave_a_sleeper() -> Result<(), String> {
    std::process::Command::new("sleep")
        .arg("5")
        .spawn()
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Reads its stdin to the end (a tool that reads stdin would): must not hang.
#[tiger::task(queue = "spin", hard_timeout = 5.0)]
pub fn read_stdin() -> Result<(), String> {
    let mut input = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut input)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Starts `sleep 60`, writes its pid to `<dir>/sleeper`, then blocks past its 0.5 s hard
/// timeout.
#[tiger::task(queue = "spin", hard_timeout = 0.5)]
pub fn sleeper_then_stuck(dir: String) -> Result<(), String> {
    let sleeper = std::process::Command::new("sleep")
        .arg("60")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    std::fs::write(
        std::path::Path::new(&dir).join("sleeper"),
        sleeper.id().to_string(),
    )
    .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

/// A task without parameters, for `delay_many` of `()` items.
#[tiger::task(queue = "bare")]
pub async fn no_arguments() {}
