//! Which queues a worker takes ([`QueueFilter`]) and how it learns that they have work: the
//! activity channel ([`Activity`]) plus a periodic re-read of `t:queued`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::{Result, Tiger, keys::State};

/// TaskTiger's `queue_matches`: walks `queue`'s dotted prefixes from the most specific
/// (`a.b.c`, then `a.b`, then `a`). The first prefix found in `exclude` rejects the queue,
/// the first found in `only` accepts it; when none is found, the queue is accepted only if
/// `only` is empty.
///
/// ```
/// use tiger::queue_matches;
/// let only = ["a".to_string()];
/// let exclude = ["a.b".to_string()];
/// assert!(queue_matches("a.c", &only, &exclude));
/// assert!(!queue_matches("a.b.c", &only, &exclude));
/// assert!(!queue_matches("b", &only, &exclude));
/// ```
pub fn queue_matches(queue: &str, only: &[String], exclude: &[String]) -> bool {
    let mut prefix = queue;
    loop {
        if exclude.iter().any(|q| q == prefix) {
            return false;
        }
        if only.iter().any(|q| q == prefix) {
            return true;
        }
        match prefix.rfind('.') {
            Some(dot) => prefix = &prefix[..dot],
            None => return only.is_empty(),
        }
    }
}

/// The `-q` / `-e` lists of one worker.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueueFilter {
    pub(crate) only: Vec<String>,
    pub(crate) exclude: Vec<String>,
}

impl QueueFilter {
    pub(crate) fn matches(&self, queue: &str) -> bool {
        queue_matches(queue, &self.only, &self.exclude)
    }

    /// The queues in `t:queued` that this worker takes.
    pub(crate) async fn queued(&self, tiger: &Tiger) -> Result<HashSet<String>> {
        self.members(tiger, State::Queued).await
    }

    /// The queues in `t:<state>` that this worker takes. A name that is not UTF-8 cannot be
    /// one of them; it is skipped with a warning.
    pub(crate) async fn members(&self, tiger: &Tiger, state: State) -> Result<HashSet<String>> {
        let names: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
            .arg(tiger.keys().state_set(state))
            .query_async(&mut tiger.connection())
            .await?;
        let mut queues = HashSet::new();
        for name in names {
            match String::from_utf8(name) {
                Ok(queue) if self.matches(&queue) => {
                    queues.insert(queue);
                }
                Ok(_) => {}
                Err(err) => {
                    let name = String::from_utf8_lossy(err.as_bytes());
                    tracing::warn!(queue = %name, "skipping a queue whose name is not UTF-8");
                }
            }
        }
        Ok(queues)
    }
}

/// Listens on the activity channel in a background task and collects the names of queues
/// that got work. Reconnects with backoff; after every (re)subscription it asks the worker
/// to re-read the queue set, since messages sent while disconnected are lost.
#[derive(Debug)]
pub(crate) struct Activity {
    shared: Arc<Shared>,
    listener: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    notify: Notify,
}

/// What the listener has seen since the worker last looked.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) queues: HashSet<String>,
    /// The subscription was (re)established: re-read `t:queued`.
    pub(crate) resync: bool,
}

impl Activity {
    pub(crate) fn start(tiger: Tiger, filter: QueueFilter) -> Activity {
        let shared = Arc::new(Shared::default());
        let listener = tokio::spawn(listen(tiger, filter, shared.clone()));
        Activity { shared, listener }
    }

    /// Takes what was collected so far.
    pub(crate) fn take(&self) -> Pending {
        std::mem::take(
            &mut *self
                .shared
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Resolves when something was collected since the last `take`.
    pub(crate) async fn notified(&self) {
        self.shared.notify.notified().await;
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Shared {
    fn record(&self, update: impl FnOnce(&mut Pending)) {
        update(&mut self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        self.notify.notify_one();
    }
}

async fn listen(tiger: Tiger, filter: QueueFilter, shared: Arc<Shared>) {
    const MIN_BACKOFF: Duration = Duration::from_millis(100);
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
    let channel = tiger.keys().activity();
    let mut backoff = MIN_BACKOFF;
    loop {
        match subscribe(&tiger, &channel).await {
            Ok(pubsub) => {
                backoff = MIN_BACKOFF;
                shared.record(|p| p.resync = true);
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    match message.get_payload::<String>() {
                        Ok(queue) if filter.matches(&queue) => shared.record(|p| {
                            p.queues.insert(queue);
                        }),
                        Ok(_) => {}
                        Err(err) => tracing::debug!(%err, "ignoring a non-text activity message"),
                    }
                }
                tracing::warn!(%channel, "activity channel closed; reconnecting");
            }
            Err(err) => {
                tracing::warn!(%err, %channel, retry_in = ?backoff, "cannot subscribe to the activity channel");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn subscribe(tiger: &Tiger, channel: &str) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = tiger.client().get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

#[cfg(test)]
mod tests {
    use super::queue_matches;

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// TaskTiger's `test_only_queues` / `test_exclude_queues` cases, including names with
    /// glob metacharacters (matching is literal, never a pattern).
    #[test]
    fn tasktiger_queue_tables() {
        let cases: &[(&str, &[&str], &[&str], bool)] = &[
            ("a", &[], &[], true),
            ("a", &["a"], &[], true),
            ("a.b", &["a"], &[], true),
            ("a", &["a.b"], &[], false),
            ("ab", &["a"], &[], false),
            ("b", &["a"], &[], false),
            ("a", &[], &["a"], false),
            ("a.b", &[], &["a"], false),
            ("a.b", &["a.b"], &["a"], true),
            ("a.b.c", &["a.b"], &["a"], true),
            ("a.c", &["a.b"], &["a"], false),
            ("a.b", &["a"], &["a.b"], false),
            ("a.b.c", &["a"], &["a.b"], false),
            ("a", &["a"], &["a"], false),
            ("a*", &["a*"], &[], true),
            ("ab", &["a*"], &[], false),
            ("a?", &["a?"], &[], true),
            ("a[b]", &["a[b]"], &[], true),
            ("ab", &["a[b]"], &[], false),
        ];
        for &(queue, only, exclude, expected) in cases {
            assert_eq!(
                queue_matches(queue, &list(only), &list(exclude)),
                expected,
                "queue {queue:?} only {only:?} exclude {exclude:?}"
            );
        }
    }
}
