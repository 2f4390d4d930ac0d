//! [`Tiger`]: the handle producers and workers share — a Redis connection plus [`Config`].

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::{Config, Error, Result, keys::Keys};

/// The Redis address used when `REDIS_URL` is not set.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

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
        let client = redis::Client::open(url)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(config.redis_response_timeout))
            .set_max_delay(Duration::from_secs(5));
        let conn = ConnectionManager::new_with_config(client.clone(), manager_config).await?;
        let keys = Keys::new(config.redis_prefix.clone());
        Ok(Tiger {
            inner: Arc::new(Inner {
                client,
                conn,
                config,
                keys,
            }),
        })
    }

    /// The process-wide handle: the one given to [`Tiger::set_global`], or else one built on
    /// first use from the `REDIS_URL` environment variable (default
    /// `redis://127.0.0.1:6379`) with default settings.
    ///
    /// The connection lives on the Tokio runtime that first used it, so a program that starts
    /// several runtimes (tests with `#[tokio::test]`, say) should pass a handle explicitly.
    pub async fn global() -> Result<Tiger> {
        GLOBAL
            .get_or_try_init(|| async {
                let url = std::env::var("REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.into());
                Tiger::connect(&url).await
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

    /// A clone of the shared connection, for commands of your own.
    pub fn connection(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    /// The client, for the dedicated pub/sub connection a worker opens.
    pub(crate) fn client(&self) -> &redis::Client {
        &self.inner.client
    }
}
