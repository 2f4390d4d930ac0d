//! Who is working, and how much gets done: a registry of live workers and counts of the runs
//! that end each minute, for the dashboard's workers page and its chart. Both live in keys
//! of tiger's own under `t:tiger:` (listed in [`keys`](crate::keys)), which Python TaskTiger
//! never reads, and both expire, so a worker that dies leaves nothing behind for long.
//!
//! - A worker writes its entry ([`WorkerInfo`]) when it starts, again every
//!   `ACTIVE_TASK_UPDATE_TIMER`, and removes it when it stops. An entry not renewed expires
//!   after `ACTIVE_TASK_UPDATE_TIMEOUT`, the same time after which the worker's tasks count
//!   as lost. [`Tiger::workers`] lists the live ones.
//! - Each run that ends (succeeded or failed) counts as processed in the minute it ended;
//!   each that failed counts as failed too. A worker sends its counts with each report, so
//!   they reach Redis within a report interval; the counters of a minute expire after two
//!   hours. [`Tiger::minutes`] reads them.
//!
//! The counts are approximate. A report that fails is sent again with the next one, so one
//! that Redis applied but whose answer was lost counts twice; a worker that is killed loses
//! what it counted since its last report; a minute whose key holds something else is not
//! counted, and reads 0. A task that cannot run (unknown function, bad
//! arguments) counts as processed and failed; a task handed back before it started does not
//! count.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Result, Tiger, time::now};

/// How long the counters of one minute are kept.
const MINUTE_TTL_SECS: i64 = 2 * 3600;

/// At most this many of a worker's tasks in flight are listed in its entry (all are counted).
pub const LISTED_IN_FLIGHT: usize = 50;

/// A live worker, as it last reported itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// `<host>:<pid>:<random>`.
    pub id: String,
    /// The host name it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The queues it serves (`-q`); empty: every queue not excluded.
    pub queues: Vec<String>,
    /// The queues it skips (`-e`).
    pub exclude_queues: Vec<String>,
    /// How many tasks it runs at once.
    pub concurrency: usize,
    /// How many tasks it is running (a batch counts each of its tasks).
    pub in_flight_count: usize,
    /// Up to [`LISTED_IN_FLIGHT`] of those tasks.
    pub in_flight: Vec<RunningTask>,
    /// Runs that ended since it started.
    pub processed: u64,
    /// Of those, the runs that failed.
    pub failed: u64,
    /// When it started (Unix seconds).
    pub started: f64,
    /// When it last reported (Unix seconds).
    pub heartbeat: f64,
    /// The version of tiger it runs.
    pub version: String,
}

/// A task a worker is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunningTask {
    /// Its queue.
    pub queue: String,
    /// Its id.
    pub id: String,
}

/// The runs that ended in one minute, over every worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Minute {
    /// The Unix second the minute starts at.
    pub start: i64,
    /// Runs that ended, succeeded or failed.
    pub processed: u64,
    /// Runs that failed.
    pub failed: u64,
}

/// The Unix second the minute holding `time` starts at.
fn minute_of(time: f64) -> i64 {
    (time as i64).div_euclid(60) * 60
}

impl Tiger {
    /// The workers that reported within `ACTIVE_TASK_UPDATE_TIMEOUT`, by id. An entry
    /// that cannot be read is left out (and logged).
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let keys = self.keys();
        let mut connection = self.connection();
        let since = now() - self.config().active_task_update_timeout.as_secs_f64();
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(keys.workers())
            .arg(since)
            .arg("+inf")
            .query_async(&mut connection)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let entries: Vec<Option<String>> = redis::cmd("MGET")
            .arg(ids.iter().map(|id| keys.worker(id)).collect::<Vec<_>>())
            .query_async(&mut connection)
            .await?;
        let mut workers: Vec<WorkerInfo> = ids
            .iter()
            .zip(entries)
            .filter_map(|(id, entry)| {
                let entry = entry?;
                serde_json::from_str(&entry)
                    .inspect_err(
                        |err| tracing::warn!(worker = %id, %err, "cannot read a worker's entry"),
                    )
                    .ok()
            })
            .collect();
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(workers)
    }

    /// The runs that ended in each of the last `count` minutes (at most 120), oldest first;
    /// the last is the minute now under way.
    pub async fn minutes(&self, count: usize) -> Result<Vec<Minute>> {
        let count = count.min((MINUTE_TTL_SECS / 60) as usize) as i64;
        let this = minute_of(now());
        let starts: Vec<i64> = (0..count).rev().map(|back| this - back * 60).collect();
        let mut pipe = redis::pipe();
        // Each minute answers for itself: a key of another type spoils only its minute.
        pipe.ignore_errors();
        for &start in &starts {
            pipe.cmd("HMGET")
                .arg(self.keys().minute(start))
                .arg("processed")
                .arg("failed");
        }
        let replies: Vec<redis::RedisResult<(Option<String>, Option<String>)>> =
            pipe.query_async(&mut self.connection()).await?;
        // A count that is not a number (not one tiger wrote), or in a key that is not a hash,
        // reads as 0.
        let number = |count: Option<String>| count.and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok(starts
            .into_iter()
            .zip(replies)
            .map(|(start, reply)| (start, reply.unwrap_or_default()))
            .map(|(start, (processed, failed))| Minute {
                start,
                processed: number(processed),
                failed: number(failed),
            })
            .collect())
    }
}

/// What a worker counted and has not yet sent, and its totals.
#[derive(Debug, Default)]
struct Tally {
    /// Per minute start: processed, failed.
    unsent: BTreeMap<i64, (u64, u64)>,
    processed: u64,
    failed: u64,
}

/// Counts the runs of one worker as they end; cheap to clone into each task.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counter(Arc<Mutex<Tally>>);

impl Counter {
    /// A run ended now.
    pub(crate) fn ended(&self, failed: bool) {
        let mut tally = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let minute = tally.unsent.entry(minute_of(now())).or_default();
        minute.0 += 1;
        minute.1 += u64::from(failed);
        tally.processed += 1;
        tally.failed += u64::from(failed);
    }

    /// Takes the unsent counts, and reads the totals.
    fn take(&self) -> (BTreeMap<i64, (u64, u64)>, u64, u64) {
        let mut tally = self.0.lock().unwrap_or_else(|e| e.into_inner());
        (
            std::mem::take(&mut tally.unsent),
            tally.processed,
            tally.failed,
        )
    }

    /// Puts back counts that could not be sent.
    fn restore(&self, unsent: BTreeMap<i64, (u64, u64)>) {
        let mut tally = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (minute, (processed, failed)) in unsent {
            let counts = tally.unsent.entry(minute).or_default();
            counts.0 += processed;
            counts.1 += failed;
        }
    }
}

/// Counts on their way to Redis: put back unless [`Sending::sent`] is called, so a report
/// that fails or is given up on loses nothing.
struct Sending<'a> {
    counter: &'a Counter,
    counts: Option<BTreeMap<i64, (u64, u64)>>,
}

impl Sending<'_> {
    fn sent(mut self) {
        self.counts = None;
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if let Some(counts) = self.counts.take() {
            self.counter.restore(counts);
        }
    }
}

/// A worker's entry in the registry and its counter.
#[derive(Debug)]
pub(crate) struct Presence {
    info: WorkerInfo,
    counter: Counter,
    /// Set once the worker left: a renewal that comes after must not enter it again.
    left: bool,
}

impl Presence {
    pub(crate) fn new(queues: &[String], exclude_queues: &[String], concurrency: usize) -> Self {
        let host = crate::worker::host().to_owned();
        let pid = std::process::id();
        let suffix: String = crate::TaskId::random().as_str().chars().take(8).collect();
        Presence {
            info: WorkerInfo {
                id: format!("{host}:{pid}:{suffix}"),
                host,
                pid,
                queues: queues.to_vec(),
                exclude_queues: exclude_queues.to_vec(),
                concurrency,
                in_flight_count: 0,
                in_flight: Vec::new(),
                processed: 0,
                failed: 0,
                started: now(),
                heartbeat: now(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            },
            counter: Counter::default(),
            left: false,
        }
    }

    fn counter(&self) -> Counter {
        self.counter.clone()
    }

    /// Renews the entry (with the tasks in flight now, as queue and id) and sends the
    /// counts; with `leaving`, sends the counts and removes the entry instead. Counts that
    /// could not be sent go with the next report.
    async fn report(
        &mut self,
        tiger: &Tiger,
        in_flight: &[(&str, &str)],
        leaving: bool,
    ) -> Result<()> {
        if self.left {
            return Ok(());
        }
        self.left = leaving;
        let keys = tiger.keys();
        let (unsent, processed, failed) = self.counter.take();
        let now = now();
        let ttl = tiger.config().active_task_update_timeout;
        // Each command answers for itself: a key that holds something else spoils only its
        // own command.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let unsent = Sending {
            counter: &self.counter,
            counts: Some(unsent),
        };
        for (&minute, &(processed, failed)) in unsent.counts.iter().flatten() {
            let key = keys.minute(minute);
            pipe.cmd("HINCRBY")
                .arg(&key)
                .arg("processed")
                .arg(processed);
            if failed > 0 {
                pipe.cmd("HINCRBY").arg(&key).arg("failed").arg(failed);
            }
            pipe.cmd("EXPIREAT")
                .arg(&key)
                .arg(minute + 60 + MINUTE_TTL_SECS);
        }
        let id = &self.info.id;
        if leaving {
            pipe.cmd("DEL").arg(keys.worker(id));
            pipe.cmd("ZREM").arg(keys.workers()).arg(id);
        } else {
            self.info.in_flight = in_flight
                .iter()
                .take(LISTED_IN_FLIGHT)
                .map(|(queue, id)| RunningTask {
                    queue: (*queue).to_owned(),
                    id: (*id).to_owned(),
                })
                .collect();
            self.info.in_flight_count = in_flight.len();
            self.info.processed = processed;
            self.info.failed = failed;
            self.info.heartbeat = now;
            let entry = serde_json::to_string(&self.info).expect("a worker entry is plain data");
            pipe.cmd("SET")
                .arg(keys.worker(id))
                .arg(entry)
                .arg("PX")
                .arg(ttl.as_millis().max(1) as u64);
            pipe.cmd("ZADD").arg(keys.workers()).arg(now).arg(id);
            // The set goes too once no worker reports.
            pipe.cmd("PEXPIRE")
                .arg(keys.workers())
                .arg(ttl.as_millis().max(1) as u64);
            // Entries of workers that stopped reporting.
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(keys.workers())
                .arg("-inf")
                .arg(now - ttl.as_secs_f64());
        }
        let replies: Vec<redis::RedisResult<redis::Value>> =
            pipe.query_async(&mut tiger.connection()).await?;
        // Redis took the counts; a minute whose key it refused is not counted again.
        unsent.sent();
        match replies.into_iter().find_map(|reply| reply.err()) {
            Some(err) => Err(err.into()),
            None => Ok(()),
        }
    }
}

/// A worker's [`Presence`], shared by its loop and the report under way.
#[derive(Debug, Clone)]
pub(crate) struct Reporter {
    presence: Arc<tokio::sync::Mutex<Presence>>,
    counter: Counter,
}

/// How long a report may take before it is given up (its counts go with the next one).
const REPORT_WAIT: Duration = Duration::from_secs(10);

impl Reporter {
    /// Enters the worker in the registry (a failure is logged: the worker runs anyway).
    pub(crate) async fn start(tiger: &Tiger, presence: Presence, wait: Duration) -> Reporter {
        let reporter = Reporter {
            counter: presence.counter(),
            presence: Arc::new(tokio::sync::Mutex::new(presence)),
        };
        reporter.send(tiger, Vec::new(), false, wait).await;
        reporter
    }

    /// The counter the worker's tasks count their ends on.
    pub(crate) fn counter(&self) -> Counter {
        self.counter.clone()
    }

    /// Renews the entry in the background, with the tasks in flight (queue, id), so a
    /// Redis that hangs never holds up the worker's loop; skipped while the last report is
    /// still under way.
    pub(crate) fn renew(&self, tiger: &Tiger, in_flight: Vec<(String, String)>) {
        if self.presence.try_lock().is_err() {
            return;
        }
        let (reporter, tiger) = (self.clone(), tiger.clone());
        tokio::spawn(async move { reporter.send(&tiger, in_flight, false, REPORT_WAIT).await });
    }

    /// Sends the last counts and takes the entry out, waiting at most `wait`.
    pub(crate) async fn leave(&self, tiger: &Tiger, wait: Duration) {
        self.send(tiger, Vec::new(), true, wait).await;
    }

    async fn send(
        &self,
        tiger: &Tiger,
        in_flight: Vec<(String, String)>,
        leaving: bool,
        wait: Duration,
    ) {
        let tasks: Vec<(&str, &str)> = in_flight
            .iter()
            .map(|(queue, id)| (queue.as_str(), id.as_str()))
            .collect();
        let sent = tokio::time::timeout(wait, async {
            let mut presence = self.presence.lock().await;
            presence.report(tiger, &tasks, leaving).await
        });
        let what = if leaving {
            "cannot take this worker out of the registry of live workers; its entry expires by itself"
        } else {
            "cannot write this worker's entry in the registry of live workers, or its counts"
        };
        match sent.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(%err, "{what}"),
            Err(_) => tracing::warn!(?wait, "{what}: Redis did not answer in time"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_start_on_the_minute() {
        assert_eq!(minute_of(119.9), 60);
        assert_eq!(minute_of(120.0), 120);
    }

    #[test]
    fn unsent_counts_survive_a_failed_report() {
        let counter = Counter::default();
        counter.ended(false);
        counter.ended(true);
        let (unsent, processed, failed) = counter.take();
        assert_eq!((processed, failed), (2, 1));
        counter.restore(unsent);
        counter.ended(false);
        let (unsent, ..) = counter.take();
        let total: (u64, u64) = unsent
            .values()
            .fold((0, 0), |acc, v| (acc.0 + v.0, acc.1 + v.1));
        assert_eq!(total, (3, 1));
    }
}
