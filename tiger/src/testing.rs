//! Test support: a throwaway `redis-server` (one that can be restarted with its data, for
//! fault tests), a key prefix per test, and an invariants checker for what is left in Redis.
//!
//! ```no_run
//! # async fn demo() -> tiger::Result<()> {
//! use tiger::testing::Invariants;
//! let redis = tiger::testing::TestRedis::start()?;  // own server, or TIGER_TEST_REDIS_URL
//! let tiger = redis.tiger().await?;                   // a fresh prefix on it
//! // ... enqueue, run a Worker with .once(true), assert ...
//! assert!(redis.keys(&tiger).await?.is_empty());     // nothing left behind
//! Invariants::idle_fleet(tiger.config()).assert(&tiger).await; // no broken state either
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Config, Error, Result, State, Tiger};

/// How long a started redis-server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child process on a free loopback port. Stopped (killed) when dropped.
///
/// Nothing is persisted unless it was started with [`RedisServer::start_persistent`].
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    /// The arguments after `--port <port> --bind 127.0.0.1`, so a restart repeats them.
    settings: Vec<String>,
}

impl RedisServer {
    /// Starts `redis-server` from `PATH` on a free port of 127.0.0.1 and waits until it
    /// answers `PING`.
    pub fn start() -> Result<RedisServer> {
        let mut last_error = None;
        // A port found free can be taken before redis-server binds it; try a few.
        for _ in 0..5 {
            let port = free_port()?;
            match RedisServer::start_on(port) {
                Ok(server) => return Ok(server),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Config("redis-server did not start".into())))
    }

    /// Starts `redis-server` on this loopback port (for tests that need a server to appear
    /// at a known address later) and waits until it answers `PING`.
    pub fn start_on(port: u16) -> Result<RedisServer> {
        // The snapshot file name is the server's own, so a `dump.rdb` some other program left
        // in the temp dir is never loaded into a test's server.
        let settings = vec![
            "--save".to_owned(),
            String::new(),
            "--appendonly".to_owned(),
            "no".to_owned(),
            "--dir".to_owned(),
            std::env::temp_dir().to_string_lossy().into_owned(),
            "--dbfilename".to_owned(),
            format!("tiger-test-{port}-{:016x}.rdb", rand::random::<u64>()),
        ];
        RedisServer::spawn(port, settings)
    }

    /// Starts `redis-server` on a free port with an append-only file in `dir`, written
    /// through on every command (`appendfsync always`), so a [`restart`](RedisServer::restart)
    /// — even after a SIGKILL — comes back with every write it acknowledged. `dir` must
    /// exist and belong to this server alone.
    pub fn start_persistent(dir: &std::path::Path) -> Result<RedisServer> {
        let settings = vec![
            "--save".to_owned(),
            String::new(),
            "--appendonly".to_owned(),
            "yes".to_owned(),
            "--appendfsync".to_owned(),
            "always".to_owned(),
            "--dir".to_owned(),
            dir.to_string_lossy().into_owned(),
        ];
        let mut last_error = None;
        for _ in 0..5 {
            match RedisServer::spawn(free_port()?, settings.clone()) {
                Ok(server) => return Ok(server),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Config("redis-server did not start".into())))
    }

    /// Kills the server with SIGKILL, as a crash would, and starts it again on the same port
    /// with the same settings; returns once it answers `PING`. Clients see their connections
    /// drop and must reconnect. What it keeps depends on how it was started (see
    /// [`start_persistent`](RedisServer::start_persistent)).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.start_again()
    }

    /// Kills the server with SIGKILL and waits until it is gone: Redis is down until
    /// [`start_again`](RedisServer::start_again).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a [killed](RedisServer::kill) server again on its port with its settings;
    /// returns once it answers `PING`.
    pub fn start_again(&mut self) -> Result<()> {
        let port = self.port;
        let deadline = Instant::now() + START_TIMEOUT;
        // The port is free again once the old process is reaped; a new bind may still race
        // with the kernel tearing down its socket, so try until the deadline.
        loop {
            match RedisServer::spawn(port, self.settings.clone()) {
                Ok(server) => {
                    *self = server;
                    return Ok(());
                }
                Err(err) if Instant::now() > deadline => return Err(err),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Starts `redis-server --port <port> --bind 127.0.0.1 <settings>` and waits until it
    /// answers `PING`.
    fn spawn(port: u16, settings: Vec<String>) -> Result<RedisServer> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(&settings)
            .args(["--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Io {
                context: "cannot run `redis-server` (is it installed and on PATH?)".into(),
                source,
            })?;
        let mut server = RedisServer {
            child,
            port,
            settings,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ping(port) {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(Error::Config(format!(
                    "redis-server on port {port} exited at start ({status})"
                )));
            }
            if Instant::now() > deadline {
                return Err(Error::Config(format!(
                    "redis-server on port {port} did not answer within {START_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's process id, for tests that stop or kill it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server with SIGSTOP: it keeps its connections but answers nothing, as a
    /// Redis that hangs, until [`thaw`](RedisServer::thaw).
    #[cfg(unix)]
    pub fn freeze(&self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGSTOP)
    }

    /// Lets a [frozen](RedisServer::freeze) server go on (SIGCONT).
    #[cfg(unix)]
    pub fn thaw(&self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGCONT)
    }

    #[cfg(unix)]
    fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).map_err(|errno| Error::Io {
            context: format!("cannot send {signal} to redis-server"),
            source: errno.into(),
        })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that is free right now.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| Error::Io {
        context: "cannot find a free port".into(),
        source,
    })?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|source| Error::Io {
            context: "cannot find a free port".into(),
            source,
        })
}

/// Whether a Redis answers `PING` on this loopback port.
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// A Redis for one test: the server at `TIGER_TEST_REDIS_URL` when that is set (it must be
/// on loopback), else a [`RedisServer`] of the test's own.
#[derive(Debug)]
pub struct TestRedis {
    url: String,
    server: Option<RedisServer>,
}

impl TestRedis {
    /// Picks or starts the Redis.
    pub fn start() -> Result<TestRedis> {
        if let Ok(url) = std::env::var("TIGER_TEST_REDIS_URL") {
            if !is_loopback_url(&url) {
                return Err(Error::Config(format!(
                    "TIGER_TEST_REDIS_URL must point at a loopback address (127.0.0.0/8, localhost, ::1), not `{url}`"
                )));
            }
            return Ok(TestRedis { url, server: None });
        }
        let server = RedisServer::start()?;
        Ok(TestRedis {
            url: server.url(),
            server: Some(server),
        })
    }

    /// The Redis URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server this test started, if it started one.
    pub fn server(&self) -> Option<&RedisServer> {
        self.server.as_ref()
    }

    /// A handle on a fresh, unique prefix, with [`test_config`] settings.
    pub async fn tiger(&self) -> Result<Tiger> {
        self.tiger_with(test_config()).await
    }

    /// A handle with `config`, its prefix replaced by a fresh, unique one.
    pub async fn tiger_with(&self, config: Config) -> Result<Tiger> {
        Tiger::connect_with(
            &self.url,
            Config {
                redis_prefix: unique_prefix(),
                ..config
            },
        )
        .await
    }

    /// Every key under `tiger`'s prefix, for asserting that nothing stray is left. Locks
    /// (`<prefix>:lockv2:*`) and the dashboard's keys (`<prefix>:tiger:*`: live workers,
    /// per-minute counts) that expire on their own are left out: the sweeps' rate limits
    /// and the counts outlive a worker by design, and a running worker keeps its entry.
    /// Such a key without a time to live is listed, as a leak.
    pub async fn keys(&self, tiger: &Tiger) -> Result<BTreeSet<String>> {
        let pattern = format!("{}:*", tiger.keys().prefix());
        let mut conn = tiger.connection();
        let mut keys = BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            let locks = format!("{}:lockv2:", tiger.keys().prefix());
            let presence = format!("{}:tiger:", tiger.keys().prefix());
            for key in batch {
                if key.starts_with(&locks) || key.starts_with(&presence) {
                    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await?;
                    if ttl > 0 || ttl == -2 {
                        continue;
                    }
                }
                keys.insert(key);
            }
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }
}

/// Settings for tests: TaskTiger's defaults with the timers turned down so that tests wait
/// fractions of a second, not minutes.
pub fn test_config() -> Config {
    Config {
        active_task_update_timer: Duration::from_millis(200),
        active_task_update_timeout: Duration::from_secs(2),
        lock_retry: Duration::from_millis(300),
        select_timeout: Duration::from_millis(100),
        queue_scheduled_tasks_time: Duration::ZERO,
        requeue_expired_tasks_interval: Duration::from_millis(400),
        queue_refresh_interval: Duration::from_millis(500),
        ..Config::default()
    }
}

/// A prefix no other test uses: `tiger-test-` and 16 random hex digits.
pub fn unique_prefix() -> String {
    format!("tiger-test-{:016x}", rand::random::<u64>())
}

/// Whether `url`'s host is a loopback address.
pub fn is_loopback_url(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    match client.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(host, _) | redis::ConnectionAddr::TcpTls { host, .. } => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        redis::ConnectionAddr::Unix(_) => true,
        _ => false,
    }
}

/// Waits until `check` returns true, polling every 10 ms; panics with `what` after
/// `timeout`. For tests: wait on an outcome, never sleep a fixed time.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What [`check_invariants`] checks besides the rules it always checks.
///
/// The rules, for the keys under a [`Tiger`]'s prefix (`t` below):
///
/// 1. every id in a `t:<state>:<queue>` zset (queued, active, scheduled, error) has a body
///    `t:task:<id>`, and every body is in at least one such zset;
/// 2. a task that is not unique (its body lacks `"unique": true`) is in exactly one zset;
///    a unique task may be in several states at once (queued while it runs, active with its
///    next period scheduled, in error with a new copy queued), but only of one queue;
/// 3. every lock (`t:lockv2:*`) and queue semaphore (`t:qslock:*`) expires (has a TTL);
/// 4. only when asked ([`Invariants::heartbeats_within`]): no active entry's score (its last
///    heartbeat) is older than a bound;
/// 5. an execution list `t:task:<id>:executions` holds at most the body's
///    `max_stored_executions` records (when that is above 0), its count
///    `t:task:<id>:executions_count` is an integer no smaller than the list, and neither
///    exists without the body;
/// 6. each state set (`t:queued`, `t:active`, `t:scheduled`, `t:error`) names every queue
///    whose zset in that state holds ids (naming a queue with no ids is allowed: the set is
///    cleaned lazily);
///
/// and besides: each key has the type its name implies, and no key under the prefix has a
/// name outside that layout (a stray key is reported as unknown).
///
/// The check reads a consistent snapshot without stopping anyone: it `SCAN`s the prefix,
/// `WATCH`es what it found (locks aside: they are renewed all the time, and only their TTL
/// is read), `SCAN`s again to see that no key came meanwhile, reads everything, and keeps
/// the reading only if an empty `MULTI`/`EXEC` then shows that nothing watched changed;
/// otherwise it reads again. A worker that is busy (heartbeats every
/// `ACTIVE_TASK_UPDATE_TIMER`) still leaves room for a reading between two heartbeats.
#[derive(Debug, Clone, Default)]
pub struct Invariants {
    heartbeat_bound: Option<Duration>,
}

impl Invariants {
    /// The rules that hold at any moment.
    pub fn new() -> Invariants {
        Invariants::default()
    }

    /// Also checks that no active entry has a heartbeat older than `bound`: true once every
    /// live worker heartbeats its tasks and every dead worker's tasks have been recovered
    /// (see [`recovery_bound`]).
    pub fn heartbeats_within(mut self, bound: Duration) -> Invariants {
        self.heartbeat_bound = Some(bound);
        self
    }

    /// The rules for a fleet at rest: [`Invariants::new`] plus
    /// [`heartbeats_within`](Invariants::heartbeats_within) the [`recovery_bound`] of
    /// `config`.
    pub fn idle_fleet(config: &Config) -> Invariants {
        Invariants::new().heartbeats_within(recovery_bound(config))
    }

    /// [`check_invariants`] with these options.
    pub async fn check(&self, tiger: &Tiger) -> std::result::Result<(), Vec<String>> {
        check_invariants(tiger, self).await
    }

    /// [`assert_invariants`] with these options.
    pub async fn assert(&self, tiger: &Tiger) {
        assert_invariants(tiger, self).await;
    }
}

/// How long after its worker dies a task may stay active: `ACTIVE_TASK_UPDATE_TIMEOUT` (no
/// heartbeat for that long marks it lost) + `REQUEUE_EXPIRED_TASKS_INTERVAL` (the next
/// recovery sweep) + one second for the sweep to run.
pub fn recovery_bound(config: &Config) -> Duration {
    config.active_task_update_timeout
        + config.requeue_expired_tasks_interval
        + Duration::from_secs(1)
}

/// Checks the keys under `tiger`'s prefix against the rules of [`Invariants`]; returns
/// every violation as a line naming the keys involved. A Redis that cannot be read is a
/// violation too.
pub async fn check_invariants(
    tiger: &Tiger,
    invariants: &Invariants,
) -> std::result::Result<(), Vec<String>> {
    let snapshot = match Snapshot::read(tiger).await {
        Ok(snapshot) => snapshot,
        Err(err) => return Err(vec![err]),
    };
    let violations = snapshot.violations(invariants, crate::time::now());
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

/// Panics listing every violation [`check_invariants`] finds.
pub async fn assert_invariants(tiger: &Tiger, invariants: &Invariants) {
    if let Err(violations) = check_invariants(tiger, invariants).await {
        panic!(
            "{} invariant violation(s) under prefix `{}`:\n  {}",
            violations.len(),
            tiger.keys().prefix(),
            violations.join("\n  ")
        );
    }
}

/// How many times [`Snapshot::read`] tries for a reading no write interleaved with.
const SNAPSHOT_ATTEMPTS: usize = 200;

/// A zset's members with their scores, lowest first.
type Entries = Vec<(Vec<u8>, f64)>;

/// What one key under the prefix held.
#[derive(Debug)]
enum Value {
    Set(BTreeSet<Vec<u8>>),
    ZSet(Entries),
    String(Vec<u8>),
    /// A list's length.
    List(usize),
    /// Another type, by name (`hash`, `stream`, ...).
    Other(String),
}

impl Value {
    fn type_name(&self) -> &str {
        match self {
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
            Value::String(_) => "string",
            Value::List(_) => "list",
            Value::Other(name) => name,
        }
    }
}

/// The keys under one prefix, read at one moment.
#[derive(Debug)]
struct Snapshot {
    prefix: String,
    /// Key name after `<prefix>:` → what it held. Locks are not here.
    values: BTreeMap<Vec<u8>, Value>,
    /// Lock name after `<prefix>:` → its `PTTL` (-1: it never expires).
    locks: BTreeMap<Vec<u8>, i64>,
}

/// A key name, by where it sits in TaskTiger's layout.
#[derive(Debug, PartialEq)]
enum Shape<'a> {
    StateSet(State),
    Queue(State, &'a [u8]),
    Body(&'a [u8]),
    Executions(&'a [u8]),
    ExecutionsCount(&'a [u8]),
    Lock,
    /// One of tiger's own keys for the dashboard (see `presence`), of this Redis type.
    Presence(&'static str),
    Unknown,
}

/// Where the key named `name` (after `<prefix>:`) sits.
fn shape(name: &[u8]) -> Shape<'_> {
    for state in State::ALL {
        let state_name = state.as_str().as_bytes();
        if name == state_name {
            return Shape::StateSet(state);
        }
        if let Some(queue) = name
            .strip_prefix(state_name)
            .and_then(|rest| rest.strip_prefix(b":"))
        {
            return Shape::Queue(state, queue);
        }
    }
    if name.starts_with(b"lockv2:") || name.starts_with(b"qslock:") {
        return Shape::Lock;
    }
    if let Some(rest) = name.strip_prefix(b"tiger:") {
        if rest == b"workers" {
            return Shape::Presence("zset");
        }
        if rest.starts_with(b"worker:") {
            return Shape::Presence("string");
        }
        if rest.starts_with(b"minute:") {
            return Shape::Presence("hash");
        }
    }
    if let Some(rest) = name.strip_prefix(b"task:") {
        if let Some(id) = rest.strip_suffix(b":executions_count") {
            return Shape::ExecutionsCount(id);
        }
        if let Some(id) = rest.strip_suffix(b":executions") {
            return Shape::Executions(id);
        }
        return Shape::Body(rest);
    }
    Shape::Unknown
}

fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// `SCAN` for every key matching `pattern`.
async fn scan_all(
    conn: &mut redis::aio::MultiplexedConnection,
    pattern: &str,
) -> redis::RedisResult<BTreeSet<Vec<u8>>> {
    let mut keys = BTreeSet::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// `pattern` with glob characters escaped, for `SCAN MATCH`.
fn glob_escape(pattern: &str) -> String {
    let mut escaped = String::with_capacity(pattern.len());
    for c in pattern.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

impl Snapshot {
    /// Reads every key under `tiger`'s prefix at one moment (see [`Invariants`]).
    async fn read(tiger: &Tiger) -> std::result::Result<Snapshot, String> {
        let prefix = tiger.keys().prefix().to_owned();
        let failed = |err: redis::RedisError| format!("cannot read Redis: {err}");
        // A connection of its own: WATCH applies to the connection that sent it.
        let mut conn = tiger
            .client()
            .get_multiplexed_async_connection()
            .await
            .map_err(failed)?;
        let pattern = format!("{}:*", glob_escape(&prefix));
        let cut = prefix.len() + 1;
        let is_lock = |key: &Vec<u8>| shape(&key[cut..]) == Shape::Lock;
        for _ in 0..SNAPSHOT_ATTEMPTS {
            let found = scan_all(&mut conn, &pattern).await.map_err(failed)?;
            let data: Vec<Vec<u8>> = found.iter().filter(|k| !is_lock(k)).cloned().collect();
            if !data.is_empty() {
                redis::cmd("WATCH")
                    .arg(&data)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(failed)?;
            }
            let again = scan_all(&mut conn, &pattern).await.map_err(failed)?;
            if again.iter().filter(|k| !is_lock(k)).ne(data.iter()) {
                redis::cmd("UNWATCH")
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(failed)?;
                continue;
            }
            let values = Snapshot::read_values(&mut conn, &data)
                .await
                .map_err(failed)?;
            let unchanged: Option<(String,)> = redis::pipe()
                .atomic()
                .cmd("PING")
                .query_async(&mut conn)
                .await
                .map_err(failed)?;
            if unchanged.is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            let lock_keys: Vec<&Vec<u8>> = again.iter().filter(|k| is_lock(k)).collect();
            let mut pipe = redis::pipe();
            for key in &lock_keys {
                pipe.cmd("PTTL").arg(*key);
            }
            let ttls: Vec<i64> = if lock_keys.is_empty() {
                Vec::new()
            } else {
                pipe.query_async(&mut conn).await.map_err(failed)?
            };
            let locks = lock_keys
                .into_iter()
                .zip(ttls)
                // -2: it expired since the scan.
                .filter(|(_, ttl)| *ttl != -2)
                .map(|(key, ttl)| (key[cut..].to_vec(), ttl))
                .collect();
            let values = data
                .into_iter()
                .zip(values)
                .filter_map(|(key, value)| Some((key[cut..].to_vec(), value?)))
                .collect();
            return Ok(Snapshot {
                prefix,
                values,
                locks,
            });
        }
        Err(format!(
            "no quiet moment to read the keys under `{prefix}`: they changed during each of \
             {SNAPSHOT_ATTEMPTS} readings"
        ))
    }

    /// Reads each key by its type; `None` for a key that no longer exists.
    async fn read_values(
        conn: &mut redis::aio::MultiplexedConnection,
        keys: &[Vec<u8>],
    ) -> redis::RedisResult<Vec<Option<Value>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("TYPE").arg(key);
        }
        let types: Vec<String> = pipe.query_async(conn).await?;
        let mut pipe = redis::pipe();
        for (key, kind) in keys.iter().zip(&types) {
            match kind.as_str() {
                "set" => pipe.cmd("SMEMBERS").arg(key),
                "zset" => pipe.cmd("ZRANGE").arg(key).arg(0).arg(-1).arg("WITHSCORES"),
                "string" => pipe.cmd("GET").arg(key),
                "list" => pipe.cmd("LLEN").arg(key),
                _ => pipe.cmd("PING"),
            };
        }
        let replies: Vec<redis::Value> = pipe.query_async(conn).await?;
        let mut values = Vec::with_capacity(keys.len());
        for (kind, reply) in types.into_iter().zip(replies) {
            let value = match kind.as_str() {
                "none" => None,
                "set" => Some(Value::Set(redis::from_redis_value(reply)?)),
                "zset" => Some(Value::ZSet(redis::from_redis_value(reply)?)),
                "string" => Some(Value::String(redis::from_redis_value(reply)?)),
                "list" => Some(Value::List(redis::from_redis_value(reply)?)),
                _ => Some(Value::Other(kind)),
            };
            values.push(value);
        }
        Ok(values)
    }

    fn key(&self, name: &[u8]) -> String {
        format!("{}:{}", self.prefix, text(name))
    }

    /// Every rule broken, as readable lines.
    fn violations(&self, invariants: &Invariants, now: f64) -> Vec<String> {
        let mut out = Vec::new();
        // id → every (state, queue) zset holding it.
        let mut places: BTreeMap<&[u8], Vec<(State, &[u8])>> = BTreeMap::new();
        let mut bodies: BTreeMap<&[u8], &Value> = BTreeMap::new();
        let mut lists: BTreeMap<&[u8], usize> = BTreeMap::new();
        let mut counts: BTreeMap<&[u8], &Value> = BTreeMap::new();
        let mut state_sets: HashMap<State, &BTreeSet<Vec<u8>>> = HashMap::new();
        let mut queues: Vec<(State, &[u8], &Entries)> = Vec::new();
        let wrong_type = |name: &[u8], value: &Value, expected: &str| {
            format!(
                "`{}` is a {}, not a {expected}",
                self.key(name),
                value.type_name()
            )
        };
        for (name, value) in &self.values {
            match (shape(name), value) {
                (Shape::StateSet(state), Value::Set(members)) => {
                    state_sets.insert(state, members);
                }
                (Shape::Queue(state, queue), Value::ZSet(entries)) => {
                    for (id, _) in entries {
                        places.entry(id).or_default().push((state, queue));
                    }
                    queues.push((state, queue, entries));
                }
                (Shape::Body(id), value) => {
                    if !matches!(value, Value::String(_)) {
                        out.push(wrong_type(name, value, "string"));
                    }
                    bodies.insert(id, value);
                }
                (Shape::Executions(id), Value::List(len)) => {
                    lists.insert(id, *len);
                }
                (Shape::ExecutionsCount(id), value) => {
                    counts.insert(id, value);
                }
                (Shape::StateSet(_), value) => out.push(wrong_type(name, value, "set")),
                (Shape::Queue(..), value) => out.push(wrong_type(name, value, "zset")),
                (Shape::Executions(_), value) => out.push(wrong_type(name, value, "list")),
                (Shape::Lock, _) => {}
                (Shape::Presence(kind), value) => {
                    if value.type_name() != kind {
                        out.push(wrong_type(name, value, kind));
                    }
                }
                (Shape::Unknown, value) => out.push(format!(
                    "`{}` ({}) is not a key of tiger's layout",
                    self.key(name),
                    value.type_name()
                )),
            }
        }
        let parsed: BTreeMap<&[u8], serde_json::Value> = bodies
            .iter()
            .filter_map(|(id, value)| match value {
                Value::String(body) => Some((*id, serde_json::from_slice(body).ok()?)),
                _ => None,
            })
            .collect();
        let is_unique = |id: &[u8]| {
            parsed
                .get(id)
                .is_some_and(|body| body.get("unique") == Some(&serde_json::Value::Bool(true)))
        };

        // 1. Every id has a body; every body is somewhere.
        for (id, at) in &places {
            if !bodies.contains_key(id) {
                for (state, queue) in at {
                    out.push(format!(
                        "`{}` holds `{}`, which has no body (`{}` is missing)",
                        self.key(&[state.as_str().as_bytes(), b":", queue].concat()),
                        text(id),
                        self.key(&[b"task:", *id].concat())
                    ));
                }
            }
        }
        for id in bodies.keys() {
            if !places.contains_key(id) {
                out.push(format!(
                    "`{}` is in no queue's queued, active, scheduled or error zset",
                    self.key(&[b"task:", *id].concat())
                ));
            }
        }

        // 2. One state for a task that is not unique; one queue for any task.
        for (id, at) in &places {
            let names = || {
                at.iter()
                    .map(|(state, queue)| format!("{state}:{}", text(queue)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if !bodies.contains_key(id) {
                continue;
            }
            if is_unique(id) {
                let queues: BTreeSet<&[u8]> = at.iter().map(|(_, queue)| *queue).collect();
                if queues.len() > 1 {
                    out.push(format!(
                        "unique task `{}` is in the states of {} queues: {}",
                        text(id),
                        queues.len(),
                        names()
                    ));
                }
            } else if at.len() > 1 {
                out.push(format!(
                    "task `{}` is not unique but is in {} places: {}",
                    text(id),
                    at.len(),
                    names()
                ));
            }
        }

        // 3. Locks expire.
        for (name, ttl) in &self.locks {
            if *ttl == -1 {
                out.push(format!("`{}` has no TTL: it never expires", self.key(name)));
            }
        }

        // 4. Heartbeats are fresh.
        if let Some(bound) = invariants.heartbeat_bound {
            let oldest = now - bound.as_secs_f64();
            for (state, queue, entries) in &queues {
                if *state != State::Active {
                    continue;
                }
                for (id, score) in entries.iter() {
                    if *score < oldest {
                        out.push(format!(
                            "`{}` holds `{}` with a heartbeat {:.1} s old (bound {:.1} s)",
                            self.key(&[b"active:", *queue].concat()),
                            text(id),
                            now - score,
                            bound.as_secs_f64()
                        ));
                    }
                }
            }
        }

        // 5. Execution history: capped, counted, and owned by a body.
        for (id, len) in &lists {
            let list = self.key(&[b"task:", *id, b":executions"].concat());
            if !bodies.contains_key(id) {
                out.push(format!("`{list}` ({len} records) belongs to no task body"));
                continue;
            }
            let cap = parsed
                .get(id)
                .and_then(|body| body.get("max_stored_executions")?.as_u64())
                .unwrap_or(0);
            if cap > 0 && *len as u64 > cap {
                out.push(format!(
                    "`{list}` holds {len} records, over the task's max_stored_executions of {cap}"
                ));
            }
        }
        for (id, value) in &counts {
            let key = self.key(&[b"task:", *id, b":executions_count"].concat());
            if !bodies.contains_key(id) {
                out.push(format!("`{key}` belongs to no task body"));
            }
            let count = match value {
                Value::String(count) => std::str::from_utf8(count)
                    .ok()
                    .and_then(|c| c.parse::<u64>().ok()),
                _ => None,
            };
            match count {
                None => out.push(format!(
                    "`{key}` is not a count (a {} holding something else than an integer)",
                    value.type_name()
                )),
                Some(count) => {
                    let len = lists.get(id).copied().unwrap_or(0);
                    if (len as u64) > count {
                        out.push(format!(
                            "`{key}` is {count}, below the {len} records its list holds"
                        ));
                    }
                }
            }
        }

        // 6. State sets name every queue with ids in that state.
        for (state, queue, _) in &queues {
            let listed = state_sets
                .get(state)
                .is_some_and(|members| members.contains(*queue));
            if !listed {
                out.push(format!(
                    "`{}` holds ids but `{}` does not name `{}`",
                    self.key(&[state.as_str().as_bytes(), b":", queue].concat()),
                    self.key(state.as_str().as_bytes()),
                    text(queue)
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_pass() {
        assert!(is_loopback_url("redis://127.0.0.1:6379"));
        assert!(is_loopback_url("redis://127.1.2.3:6379/2"));
        assert!(is_loopback_url("redis://localhost"));
        assert!(is_loopback_url("redis://[::1]:6379"));
        assert!(!is_loopback_url("redis://10.0.0.5:6379"));
        assert!(!is_loopback_url("redis://example.org"));
        assert!(!is_loopback_url("not a url"));
    }
}
