//! Test support: a throwaway `redis-server` and a key prefix per test.
//!
//! ```no_run
//! # async fn demo() -> tiger::Result<()> {
//! let redis = tiger::testing::TestRedis::start()?;  // own server, or TIGER_TEST_REDIS_URL
//! let tiger = redis.tiger().await?;                   // a fresh prefix on it
//! // ... enqueue, run a Worker with .once(true), assert ...
//! assert!(redis.keys(&tiger).await?.is_empty());     // nothing left behind
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Config, Error, Result, Tiger};

/// How long a started redis-server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child process on a free loopback port, with nothing persisted. Stopped
/// (killed) when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
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
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args([
                "--dir",
                &std::env::temp_dir().to_string_lossy(),
                "--loglevel",
                "warning",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Io {
                context: "cannot run `redis-server` (is it installed and on PATH?)".into(),
                source,
            })?;
        let mut server = RedisServer { child, port };
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
    /// (`<prefix>:lockv2:*`) that expire on their own are left out: the sweeps' rate limits
    /// outlive a worker by design. A lock without a time to live is listed, as a leak.
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
            for key in batch {
                if key.starts_with(&locks) {
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
