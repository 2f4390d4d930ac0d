//! The Lua scripts, each defined once in its own `.lua` file, and typed calls to them.
//!
//! Every script gets every key it touches in `KEYS`, built by [`crate::keys`]; no key name is
//! built inside Lua. `redis::Script` sends `EVALSHA` and falls back to `EVAL` after a
//! `NOSCRIPT` (a Redis restart or `SCRIPT FLUSH`).

use std::sync::LazyLock;

use redis::Script;

use crate::{Result, Tiger, keys::State};

const ENQUEUE_LUA: &str = include_str!("enqueue.lua");
static ENQUEUE: LazyLock<Script> = LazyLock::new(|| Script::new(ENQUEUE_LUA));
static DEQUEUE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("dequeue.lua")));
static MOVE_TASK: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("move_task.lua")));
static SCHEDULE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("schedule.lua")));
static LOCK_RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lock_renew.lua")));
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("heartbeat.lua")));
static LOCK_RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lock_release.lua")));
static RESCHEDULE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("reschedule.lua")));

/// What `reschedule.lua` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rescheduled {
    Done,
    /// The task is not in `scheduled` (any more).
    NotScheduled,
    /// Its JSON changed since it was read.
    Changed,
}

/// Sets the due time of the scheduled task `id` and replaces its JSON `read` (`None`: it
/// has none) with `patched`, unless the JSON changed meanwhile.
pub(crate) async fn reschedule(
    tiger: &Tiger,
    queue: &str,
    id: &str,
    due: f64,
    read: Option<String>,
    patched: Option<String>,
) -> Result<Rescheduled> {
    let keys = tiger.keys();
    let answer: i64 = RESCHEDULE
        .key(keys.queue(State::Scheduled, queue))
        .key(keys.task(id))
        .arg(id)
        .arg(due)
        .arg(if read.is_some() { "1" } else { "0" })
        .arg(read.unwrap_or_default())
        .arg(patched.unwrap_or_default())
        .invoke_async(&mut tiger.connection())
        .await?;
    Ok(match answer {
        1 => Rescheduled::Done,
        0 => Rescheduled::NotScheduled,
        _ => Rescheduled::Changed,
    })
}

/// Moves up to `batch` due tasks of `queue` from scheduled to queued; returns how many.
pub(crate) async fn schedule(tiger: &Tiger, queue: &str, now: f64, batch: usize) -> Result<usize> {
    let keys = tiger.keys();
    let publish = if tiger.config().publish_queued_tasks {
        keys.activity()
    } else {
        String::new()
    };
    let moved = SCHEDULE
        .key(keys.queue(State::Scheduled, queue))
        .key(keys.queue(State::Queued, queue))
        .key(keys.state_set(State::Scheduled))
        .key(keys.state_set(State::Queued))
        .arg(queue)
        .arg(now)
        .arg(batch)
        .arg(publish)
        .invoke_async(&mut tiger.connection())
        .await?;
    Ok(moved)
}

/// The active scores a worker may have written for a task: from its dequeue to its latest
/// confirmed heartbeat, plus the heartbeats sent since whose outcome it does not know.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Claim {
    pub(crate) first: f64,
    pub(crate) latest: f64,
    pub(crate) unconfirmed: Vec<f64>,
}

impl Claim {
    /// The claim's three script arguments: first, latest, and the unconfirmed scores
    /// joined by commas ('' = none).
    fn args(&self) -> [String; 3] {
        let unconfirmed: Vec<String> = self.unconfirmed.iter().map(f64::to_string).collect();
        [
            self.first.to_string(),
            self.latest.to_string(),
            unconfirmed.join(","),
        ]
    }
}

/// Refreshes the heartbeat of `(active zset, id, range of scores this worker wrote, new
/// score)` tasks where the score is still in that range, and renews the `(semaphore zset,
/// holder)` places still held to expire at `expires`; returns, per task, whether it was
/// still this worker's.
pub(crate) async fn heartbeat(
    tiger: &Tiger,
    tasks: &[(String, &str, Claim, f64)],
    places: &[(String, &[u8])],
    now: f64,
    expires: f64,
) -> Result<Vec<bool>> {
    let mut call = HEARTBEAT.prepare_invoke();
    call.arg(now).arg(tasks.len());
    for (key, id, claim, score) in tasks {
        call.key(key).arg(*id).arg(&claim.args()[..]).arg(*score);
    }
    for (key, holder) in places {
        call.key(key).arg(*holder).arg(expires);
    }
    let flags: Vec<i64> = call.invoke_async(&mut tiger.connection()).await?;
    Ok(flags.into_iter().map(|flag| flag == 1).collect())
}

/// Renews the lock `key` if it still holds `token`.
pub(crate) async fn lock_renew(tiger: &Tiger, key: &str, token: &str, ttl_ms: u64) -> Result<bool> {
    let renewed: i64 = LOCK_RENEW
        .key(key)
        .arg(token)
        .arg(ttl_ms)
        .invoke_async(&mut tiger.connection())
        .await?;
    Ok(renewed == 1)
}

/// Deletes the lock `key` if it still holds `token`.
pub(crate) async fn lock_release(tiger: &Tiger, key: &str, token: &str) -> Result<bool> {
    let released: i64 = LOCK_RELEASE
        .key(key)
        .arg(token)
        .invoke_async(&mut tiger.connection())
        .await?;
    Ok(released == 1)
}

/// One call of `enqueue.lua`.
#[derive(Debug)]
pub(crate) struct Enqueue<'a> {
    pub(crate) queue: &'a str,
    pub(crate) id: &'a str,
    /// Queued (now) or scheduled (due time).
    pub(crate) state: State,
    pub(crate) score: f64,
    pub(crate) json: &'a str,
    pub(crate) unique: bool,
    pub(crate) max_queue_size: Option<u64>,
}

/// What `enqueue.lua` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    Written,
    QueueFull,
    UniqueInAnotherQueue,
}

/// `EVALSHA` of `enqueue.lua` for `tasks` (all keys first, then all arguments): one task
/// sent alone by [`enqueue`], many per call in pipelines by [`enqueue_many`].
fn enqueue_cmd(tiger: &Tiger, tasks: &[Enqueue<'_>]) -> redis::Cmd {
    let keys = tiger.keys();
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(ENQUEUE.get_hash())
        .arg(tasks.len() * (3 + State::ALL.len()));
    for task in tasks {
        cmd.arg(keys.queue(task.state, task.queue))
            .arg(keys.state_set(task.state))
            .arg(keys.task(task.id));
        for state in State::ALL {
            cmd.arg(keys.queue(state, task.queue));
        }
    }
    for task in tasks {
        let publish = task.state == State::Queued && tiger.config().publish_queued_tasks;
        cmd.arg(task.queue)
            .arg(task.id)
            .arg(task.score)
            .arg(task.json)
            .arg(if publish {
                keys.activity()
            } else {
                String::new()
            })
            .arg(
                task.max_queue_size
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
            )
            .arg(if task.unique { "1" } else { "0" });
    }
    cmd
}

fn enqueued(answer: i64) -> Enqueued {
    match answer {
        -1 => Enqueued::QueueFull,
        -2 => Enqueued::UniqueInAnotherQueue,
        _ => Enqueued::Written,
    }
}

fn is_noscript(err: &redis::RedisError) -> bool {
    err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// Writes the task and adds it to its queue in one atomic step.
pub(crate) async fn enqueue(tiger: &Tiger, task: &Enqueue<'_>) -> Result<Enqueued> {
    let cmd = enqueue_cmd(tiger, std::slice::from_ref(task));
    let mut conn = tiger.connection();
    let (answer,): (i64,) = match cmd.query_async(&mut conn).await {
        Err(err) if is_noscript(&err) => {
            // Redis restarted or was flushed of scripts: load it, then the same call again
            // (nothing was written by the refused one).
            let _: String = ENQUEUE.load_async(&mut conn).await?;
            cmd.query_async(&mut conn).await?
        }
        answer => answer?,
    };
    Ok(enqueued(answer))
}

/// Tasks per `enqueue.lua` call in [`enqueue_many`]: one call saves Redis the cost of a
/// script invocation per task, and announces each queue once.
const ENQUEUES_PER_CALL: usize = 100;

/// Runs [`enqueue`] for every task through one pipeline (which loads the script first),
/// [`ENQUEUES_PER_CALL`] tasks per script call. A call refused with `NOSCRIPT` (a `SCRIPT
/// FLUSH` racing the pipeline) wrote nothing and is sent again.
pub(crate) async fn enqueue_many(tiger: &Tiger, tasks: &[Enqueue<'_>]) -> Result<Vec<Enqueued>> {
    let calls: Vec<&[Enqueue<'_>]> = tasks.chunks(ENQUEUES_PER_CALL).collect();
    let mut answers: Vec<Option<Vec<i64>>> = vec![None; calls.len()];
    let mut conn = tiger.connection();
    for _ in 0..3 {
        let todo: Vec<usize> = (0..calls.len()).filter(|i| answers[*i].is_none()).collect();
        if todo.is_empty() {
            break;
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors()
            .cmd("SCRIPT")
            .arg("LOAD")
            .arg(ENQUEUE_LUA)
            .ignore();
        for i in &todo {
            pipe.add_command(enqueue_cmd(tiger, calls[*i]));
        }
        let replies: Vec<redis::RedisResult<Vec<i64>>> = pipe.query_async(&mut conn).await?;
        for (i, reply) in todo.into_iter().zip(replies) {
            match reply {
                Ok(answer) => answers[i] = Some(answer),
                Err(err) if is_noscript(&err) => {}
                Err(err) => return Err(err.into()),
            }
        }
    }
    let mut out = Vec::with_capacity(tasks.len());
    for answer in answers {
        let answer = answer.ok_or_else(|| {
            crate::Error::Redis(redis::RedisError::from((
                redis::ErrorKind::Server(redis::ServerErrorKind::NoScript),
                "enqueue.lua was flushed from Redis three times during one pipeline",
            )))
        })?;
        out.extend(answer.into_iter().map(enqueued));
    }
    Ok(out)
}

/// A queue's semaphore as a dequeue uses it (see `dequeue.lua`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gate<'a> {
    /// How many groups may run at once across the fleet.
    pub(crate) size: usize,
    /// When a new holder's place expires unless renewed (Unix seconds).
    pub(crate) expires: f64,
    /// This worker's holder names start with this; the group's first id follows.
    pub(crate) holder_prefix: &'a str,
    /// Everything taken is one group (a batch queue).
    pub(crate) one_group: bool,
}

/// What a dequeue took.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    /// The ids that became active, as bytes: an id written by another producer need not be
    /// UTF-8.
    pub(crate) ids: Vec<Vec<u8>>,
    /// The queue is paused or its semaphore is full: try it again later.
    pub(crate) blocked: bool,
}

/// Moves up to `limit` tasks of `queue` from queued to active (heartbeat `now`) unless the
/// queue is paused, and within its semaphore when `gate` is given. A unique task already
/// active goes to scheduled at `now + LOCK_RETRY` instead.
pub(crate) async fn dequeue(
    tiger: &Tiger,
    queue: &str,
    limit: usize,
    now: f64,
    gate: Option<Gate<'_>>,
) -> Result<Taken> {
    let keys = tiger.keys();
    let retry_at = now + tiger.config().lock_retry.as_secs_f64();
    let (ids, blocked): (Vec<Vec<u8>>, i64) = DEQUEUE
        .key(keys.queue(State::Queued, queue))
        .key(keys.queue(State::Active, queue))
        .key(keys.queue(State::Scheduled, queue))
        .key(keys.state_set(State::Queued))
        .key(keys.state_set(State::Active))
        .key(keys.state_set(State::Scheduled))
        .key(keys.queue_semaphore(queue))
        .arg(queue)
        .arg(limit)
        .arg(now)
        .arg(retry_at)
        .arg(gate.map(|g| g.size.to_string()).unwrap_or_default())
        .arg(gate.map_or(0.0, |g| g.expires))
        .arg(gate.map_or("", |g| g.holder_prefix))
        .arg(if gate.is_some_and(|g| g.one_group) {
            "1"
        } else {
            "0"
        })
        .invoke_async(&mut tiger.connection())
        .await?;
    Ok(Taken {
        ids,
        blocked: blocked == 1,
    })
}

/// How a move adds the task to its new zset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Zadd {
    /// Set the score whatever it was.
    Plain,
    /// Keep the lower of the two scores.
    Min,
}

/// One call of `move_task.lua`.
#[derive(Debug)]
pub(crate) struct Move<'a> {
    pub(crate) id: &'a str,
    pub(crate) queue: &'a str,
    pub(crate) from: State,
    /// The new state with its score, or `None` when the task is finished and removed.
    pub(crate) to: Option<(State, f64, Zadd)>,
    pub(crate) unique: bool,
    /// A failed-execution record (JSON) to append before moving.
    pub(crate) record: Option<&'a str>,
    /// Keep only this many records (`max_stored_executions`).
    pub(crate) keep_records: Option<u32>,
    /// Move only if the score in `from` is at most this (an expired heartbeat).
    pub(crate) if_score_at_most: Option<f64>,
    /// Move only if the score in `from` is in this range (the heartbeats this worker wrote).
    pub(crate) if_score_is: Option<Claim>,
}

/// Runs the move; `Ok(false)` means the task was no longer in `from` and nothing changed.
pub(crate) async fn move_task(tiger: &Tiger, m: &Move<'_>) -> Result<bool> {
    let moved = move_tasks(tiger, std::slice::from_ref(m)).await?;
    Ok(moved.first().copied().unwrap_or(false))
}

/// Runs the moves in one script call, in order; one answer per move as for [`move_task`].
pub(crate) async fn move_tasks(tiger: &Tiger, moves: &[Move<'_>]) -> Result<Vec<bool>> {
    let mut call = MOVE_TASK.prepare_invoke();
    for m in moves {
        add_move(tiger, &mut call, m);
    }
    let moved: Vec<i64> = call.invoke_async(&mut tiger.connection()).await?;
    Ok(moved.into_iter().map(|flag| flag == 1).collect())
}

/// The 11 keys and 14 arguments of one move.
fn add_move(tiger: &Tiger, call: &mut redis::ScriptInvocation<'_>, m: &Move<'_>) {
    let keys = tiger.keys();
    let (to_state, score, flag) = match m.to {
        Some((state, score, zadd)) => {
            let flag = match zadd {
                Zadd::Plain => "",
                Zadd::Min => "LT",
            };
            (Some(state), score, flag)
        }
        None => (None, 0.0, ""),
    };
    // A removal touches no to-state keys; the from keys stand in for them.
    let to_keys = to_state.unwrap_or(m.from);
    let publish = if tiger.config().publish_queued_tasks {
        keys.activity()
    } else {
        String::new()
    };
    call.key(keys.queue(m.from, m.queue))
        .key(keys.state_set(m.from))
        .key(keys.queue(to_keys, m.queue))
        .key(keys.state_set(to_keys))
        .key(keys.task(m.id))
        .key(keys.executions(m.id))
        .key(keys.executions_count(m.id));
    for state in State::ALL {
        call.key(keys.queue(state, m.queue));
    }
    call.arg(m.id)
        .arg(m.queue)
        .arg(to_state.map_or("", State::as_str))
        .arg(score)
        .arg(flag)
        .arg(if m.unique { "1" } else { "0" })
        .arg(m.record.unwrap_or(""))
        .arg(m.keep_records.unwrap_or(0))
        .arg(publish)
        .arg(if m.from == State::Error { "1" } else { "0" })
        .arg(
            m.if_score_at_most
                .map(|s| s.to_string())
                .unwrap_or_default(),
        )
        .arg(&m.if_score_is.as_ref().map(Claim::args).unwrap_or_default()[..]);
}
