//! The quickstart: three tasks, a handful of calls, one worker that drains them, and a
//! report of what ran and what failed.
//!
//! ```sh
//! cargo run --example quickstart             # the demo
//! cargo run --example quickstart -- stats    # then the operator's commands on its queues
//! cargo run --example quickstart -- --help   # (any argument: the worker program)
//! ```
//!
//! It uses the Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`) under the key prefix
//! `tiger-quickstart`, which it empties first; it leaves the tasks that failed there, for
//! the operator's commands to look at. When nothing answers there and `redis-server` is on
//! `PATH`, it starts a throwaway one on a free port (gone when the demo ends).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tiger::{Config, State, Task, Tiger, Worker, testing::RedisServer};

const PREFIX: &str = "tiger-quickstart";

#[derive(Debug, thiserror::Error)]
enum MailError {
    #[error("no mailbox at {0:?}")]
    NoSuchMailbox(String),
}

/// An async task on its own queue that fails for a malformed address.
#[tiger::task(queue = "emails")]
async fn send_welcome(user_id: u64, address: String) -> Result<(), MailError> {
    if !address.contains('@') {
        return Err(MailError::NoSuchMailbox(address));
    }
    tokio::time::sleep(Duration::from_millis(50)).await; // pretend to talk to a mail server
    println!("    sent a welcome mail to user {user_id} at {address}");
    Ok(())
}

/// A plain function: the worker runs it on a blocking thread.
#[tiger::task(name = "images:resize")]
fn resize(path: String, width: u32) {
    println!("    resized {path} to {width}px wide");
}

#[derive(Debug, Serialize, Deserialize)]
struct Totals {
    month: String,
    amounts: Vec<f64>,
}

/// Structured arguments; an empty month panics, and the worker records the panic.
#[tiger::task(queue = "reports")]
async fn monthly_report(totals: Totals, recipients: Option<Vec<String>>) {
    let sum: f64 = totals.amounts.iter().sum();
    assert!(
        !totals.amounts.is_empty(),
        "no amounts for {}",
        totals.month
    );
    let to = recipients.map_or_else(|| "nobody".to_owned(), |r| r.join(", "));
    println!("    report for {}: {sum:.2}, sent to {to}", totals.month);
}

#[tokio::main]
async fn main() {
    if std::env::args().len() > 1 {
        // With arguments this is the worker program, on the demo's prefix: `stats`, `list
        // emails error`, `show <id>`, `retry <id>`, … or flags to run a worker.
        let config = Config {
            redis_prefix: PREFIX.into(),
            ..Config::default()
        };
        return tiger::run_worker_async_with(config).await;
    }
    if let Err(err) = run().await {
        eprintln!("quickstart failed: {err}");
        std::process::exit(1);
    }
}

async fn run() -> tiger::Result<()> {
    tiger::init_logging();
    let (url, server) = find_redis().await;
    let config = Config {
        redis_prefix: PREFIX.into(),
        ..Config::default()
    };
    let tiger = Tiger::connect_with(&url, config).await?;
    clear_prefix(&tiger).await?;

    println!("enqueueing 6 tasks on {url} (prefix {PREFIX})");
    send_welcome::delay(1, "ada@example.org".into())
        .on(&tiger)
        .await?;
    send_welcome::delay(2, "grace@example.org".into())
        .queue("emails.vip")
        .on(&tiger)
        .await?;
    send_welcome::delay(3, "not-an-address".into())
        .on(&tiger)
        .await?;
    resize::delay("cat.png".into(), 640).on(&tiger).await?;
    let march = Totals {
        month: "2026-03".into(),
        amounts: vec![120.5, 99.5],
    };
    monthly_report::delay(march, Some(vec!["boss@example.org".into()]))
        .on(&tiger)
        .await?;
    let empty = Totals {
        month: "2026-04".into(),
        amounts: vec![],
    };
    monthly_report::delay(empty, None).on(&tiger).await?;

    println!("running a worker until the queues are drained");
    Worker::new(tiger.clone())
        .concurrency(4)
        .once(true)
        .run()
        .await?;

    report(&tiger).await?;
    if server.is_some() {
        println!(
            "(that Redis goes away now; run a redis-server, or set REDIS_URL, to look at the failed tasks afterwards)"
        );
    } else {
        println!(
            "look closer: cargo run --example quickstart -- stats (or list emails error, show <id>, retry <id>)"
        );
        println!(
            "or in a browser: cargo run --example quickstart -- dashboard, then open http://127.0.0.1:8080"
        );
    }
    Ok(())
}

/// The Redis to use: `REDIS_URL` if something answers there, else a throwaway server.
async fn find_redis() -> (String, Option<RedisServer>) {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| tiger::DEFAULT_REDIS_URL.into());
    if answers(&url).await {
        return (url, None);
    }
    match RedisServer::start() {
        Ok(server) => {
            println!(
                "nothing answers at {url}; started a throwaway redis-server at {}",
                server.url()
            );
            (server.url(), Some(server))
        }
        Err(_) => {
            eprintln!(
                "no Redis at {url} and no redis-server on PATH: install Redis (e.g. `apt-get install redis-server`) or set REDIS_URL"
            );
            std::process::exit(1);
        }
    }
}

async fn answers(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), ping).await,
        Ok(Ok(_))
    )
}

/// Prints the tasks left in the error state with their last execution record, through the
/// inspection API.
async fn report(tiger: &Tiger) -> tiger::Result<()> {
    let mut failed = 0;
    println!("failed tasks:");
    for queue in tiger.queue_stats().await?.keys() {
        let (_, tasks) = Task::tasks_from_queue(tiger, queue, State::Error, 0, 100, 1).await?;
        for task in tasks {
            let func = task.data.as_ref().map_or("?", |data| data.func.as_str());
            let record = task.executions.last().cloned().unwrap_or_default();
            println!(
                "  {func} on {queue}: {}",
                record.exception_name.unwrap_or_default()
            );
            let traceback = record.traceback.unwrap_or_default();
            println!("    {}", traceback.lines().next().unwrap_or_default());
            failed += 1;
        }
    }
    println!("{failed} failed; the rest succeeded and left nothing in Redis");
    Ok(())
}

async fn clear_prefix(tiger: &Tiger) -> tiger::Result<()> {
    let mut conn = tiger.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{PREFIX}:*"))
        .query_async(&mut conn)
        .await?;
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(keys)
            .query_async::<()>(&mut conn)
            .await?;
    }
    Ok(())
}
