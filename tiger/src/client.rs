//! [`Tiger`]: the handle producers and workers share — a Redis connection plus [`Config`].

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::{Config, Error, Result, keys::Keys};

/// The Redis address used when `REDIS_URL` is not set.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The environment variable naming the Redis of the process-wide handle and the worker.
pub(crate) const REDIS_URL_ENV: &str = "REDIS_URL";

/// The environment variable setting the key prefix (TaskTiger's `REDIS_PREFIX`) of the
/// process-wide handle and the worker.
pub(crate) const PREFIX_ENV: &str = "TIGER_PREFIX";

static GLOBAL: OnceCell<Tiger> = OnceCell::const_new();

/// A connection to Redis and the settings to use it with. Cheap to clone: clones share one
/// multiplexed connection, which reconnects by itself after Redis restarts.
///
/// `task::delay(...)` uses the process-wide handle ([`Tiger::global`]) unless the call names
/// one with [`Delay::on`](crate::Delay::on).
#[derive(Clone)]
pub struct Tiger {
    inner: Arc<Inner>,
}

struct Inner {
    /// The URL connected to, for child processes of the process executor.
    url: String,
    client: redis::Client,
    conn: ConnectionManager,
    config: Config,
    keys: Keys,
}

impl std::fmt::Debug for Tiger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tiger")
            .field(
                "redis",
                &self.inner.client.get_connection_info().addr().to_string(),
            )
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Tiger {
    /// Connects to the Redis at `url` (`redis://host:port/db`) with TaskTiger's default
    /// settings.
    pub async fn connect(url: &str) -> Result<Tiger> {
        Tiger::connect_with(url, Config::default()).await
    }

    /// Connects to the Redis at `url` with the given settings.
    pub async fn connect_with(url: &str, config: Config) -> Result<Tiger> {
        if config.redis_prefix.is_empty() {
            return Err(Error::Config("the Redis prefix must not be empty".into()));
        }
        let connect_error = |source| Error::Connect {
            target: redact(url),
            source,
        };
        let client = redis::Client::open(url).map_err(|err| {
            Error::Config(format!("`{}` is not a valid Redis URL: {err}", redact(url)))
        })?;
        // Each command that finds the connection broken reconnects with a few quick tries
        // (0.1 s, 0.2 s, 0.4 s apart) and then fails, so callers hear of an outage promptly;
        // the next command tries again.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(config.redis_response_timeout))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_with_config(client.clone(), manager_config)
            .await
            .map_err(connect_error)?;
        let keys = Keys::new(config.redis_prefix.clone());
        Ok(Tiger {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                client,
                conn,
                config,
                keys,
            }),
        })
    }

    /// The process-wide handle: the one given to [`Tiger::set_global`], or else one built on
    /// first use from the environment: `REDIS_URL` (default `redis://127.0.0.1:6379`) and
    /// `TIGER_PREFIX` (default `t`), the same variables the worker reads.
    /// [`run_worker`](crate::run_worker) makes the worker's handle the process-wide one.
    ///
    /// The connection lives on the Tokio runtime that first used it, so a program that starts
    /// several runtimes (tests with `#[tokio::test]`, say) should pass a handle explicitly.
    pub async fn global() -> Result<Tiger> {
        GLOBAL
            .get_or_try_init(|| async {
                let url = std::env::var(REDIS_URL_ENV).unwrap_or_else(|_| DEFAULT_REDIS_URL.into());
                let mut config = Config::default();
                if let Ok(prefix) = std::env::var(PREFIX_ENV) {
                    config.redis_prefix = prefix;
                }
                Tiger::connect_with(&url, config).await
            })
            .await
            .cloned()
    }

    /// Makes `tiger` the process-wide handle. Fails, handing it back, if one is already set
    /// or was already built from `REDIS_URL`.
    pub fn set_global(tiger: Tiger) -> std::result::Result<(), Tiger> {
        GLOBAL.set(tiger).map_err(|err| match err {
            tokio::sync::SetError::AlreadyInitializedError(t)
            | tokio::sync::SetError::InitializingError(t) => t,
        })
    }

    /// The settings this handle was built with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The key names under this handle's prefix.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The Redis URL this handle connected to (with its password, if any).
    /// Whether `other` is a clone of this handle (same connection, config and prefix).
    pub(crate) fn same_handle(&self, other: &Tiger) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn url(&self) -> &str {
        &self.inner.url
    }

    /// A clone of the shared connection, for commands of your own.
    pub fn connection(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    /// The client, for the dedicated pub/sub connection a worker opens.
    pub(crate) fn client(&self) -> &redis::Client {
        &self.inner.client
    }
}

/// Whether a failed call may succeed if simply tried again: a dropped, refused or timed-out
/// connection, or Redis still loading its data. Server replies such as `WRONGTYPE` or a
/// script error are not.
pub(crate) fn is_transient(err: &Error) -> bool {
    match err {
        Error::Redis(err) | Error::Connect { source: err, .. } => {
            // `NOSCRIPT` after the script was reloaded once: another `SCRIPT FLUSH` or
            // restart came between; the next call loads it again.
            err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
                || !matches!(err.retry_method(), redis::RetryMethod::NoRetry)
        }
        _ => false,
    }
}

/// Runs a Redis call, trying it again after 0.1 s, 0.3 s and 1 s while it fails in a
/// [transient](is_transient) way: the first command after a dropped connection fails while
/// the connection manager reconnects, and the retry goes through.
pub(crate) async fn retrying<T, F, Fut>(what: &str, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    const DELAYS: [Duration; 3] = [
        Duration::from_millis(100),
        Duration::from_millis(300),
        Duration::from_secs(1),
    ];
    let mut delays = DELAYS.iter();
    loop {
        match call().await {
            Err(err) if is_transient(&err) => match delays.next() {
                Some(delay) => {
                    tracing::debug!(%err, retry_in = ?delay, "{what} failed; retrying");
                    tokio::time::sleep(*delay).await;
                }
                None => return Err(err),
            },
            result => return result,
        }
    }
}

/// How long a read for a person or a scraper (a dashboard page, `/metrics`) may take,
/// tries included, before it answers that Redis does not: under Prometheus's default scrape
/// timeout of 10 s, and far under the 10 s a frozen Redis takes per try.
pub(crate) const READ_BOUND: Duration = Duration::from_secs(5);

/// [`retrying`], given up after [`READ_BOUND`].
pub(crate) async fn reading<T, F, Fut>(what: &str, call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    match tokio::time::timeout(READ_BOUND, retrying(what, call)).await {
        Ok(result) => result,
        Err(_) => Err(Error::Redis(
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", READ_BOUND.as_secs()),
            )
            .into(),
        )),
    }
}

/// `url` with any password replaced by `***`, for error messages and logs.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => format!("{}***{}", &url[..scheme + 3], &url[at..]),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://:secret@host:1"), "redis://:***@host:1");
        assert_eq!(
            redact("redis://user:secret@host:1"),
            "redis://user:***@host:1"
        );
        assert_eq!(redact("rediss://token@host"), "rediss://***@host");
    }
}
