//! Every task option on a real Redis: `cargo run --example options`.
//!
//! It starts a throwaway redis-server (it needs `redis-server` on `PATH`), enqueues tasks
//! with each option, runs a worker for a few seconds, and prints what happened. The README's
//! "Task options" quotes it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tiger::{Config, State, Tiger, Worker, testing::RedisServer};

#[derive(Debug, thiserror::Error)]
#[error("the payment provider timed out")]
struct PaymentTimeout;

#[derive(Debug, thiserror::Error)]
enum PaymentError {
    #[error("payment failed")]
    Provider(#[source] PaymentTimeout),
}

#[derive(Debug, thiserror::Error)]
#[error("row {0} is malformed")]
struct ImportError(u32);

static CHARGE_RUNS: AtomicU32 = AtomicU32::new(0);

/// Unique per invoice, one at a time per customer, retried on timeouts found in the error's
/// chain: fails twice, then succeeds.
#[tiger::task(queue = "billing", unique_key = ["invoice"], lock_key = ["customer"],
              retry_on = [PaymentTimeout], retry_method = exponential(1, 2, 3),
              hard_timeout = 30, max_stored_executions = 5)]
async fn charge(customer: u64, invoice: u64, cents: u64) -> Result<(), PaymentError> {
    let run = CHARGE_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    let retry = tiger::current_task().map_or(0, |t| t.retries);
    println!(
        "  charge customer {customer} invoice {invoice}: {cents} cents (run {run}, retry {retry})"
    );
    if run < 3 {
        Err(PaymentError::Provider(PaymentTimeout))
    } else {
        Ok(())
    }
}

#[tiger::task(queue = "billing")]
async fn send_receipt(customer: u64) -> Result<(), String> {
    println!("  receipt for customer {customer}");
    Ok(())
}

/// A batch task: on a queue in `batch_queues`, one call gets many tasks' arguments.
#[tiger::task(queue = "import", batch)]
async fn import_rows(rows: Vec<(String, u32)>) -> Result<(), ImportError> {
    println!("  import {} rows in one call: {rows:?}", rows.len());
    Ok(())
}

/// A periodic task: queued once however many workers run.
#[tiger::task(queue = "reports", schedule = cron("0 3 * * *"))]
async fn nightly_report() {}

/// A task that asks to be retried from inside, then gives up quietly.
#[tiger::task(queue = "polls")]
async fn poll(job: u64) -> Result<(), tiger::Retry> {
    println!("  poll job {job}: not ready");
    Err(tiger::Retry::new()
        .method(tiger::fixed(0.5, 1))
        .log_error(false))
}

/// Cancelled after 0.5 s.
#[tiger::task(queue = "slow", hard_timeout = 0.5)]
async fn too_slow() {
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::main]
async fn main() -> tiger::Result<()> {
    let server = RedisServer::start()?;
    let config = Config {
        batch_queues: [("import".to_owned(), 10)].into(),
        select_timeout: Duration::from_millis(100),
        ..Config::default()
    };
    let tiger = Tiger::connect_with(&server.url(), config).await?;

    charge::delay(7, 1001, 4_999)
        .when(Duration::from_secs(1))
        .on(&tiger)
        .await?;
    let again = charge::delay(7, 1001, 4_999)
        .when(Duration::from_secs(1))
        .on(&tiger)
        .await?;
    println!("charge queued twice, one task: {again}");
    send_receipt::delay(7)
        .retry_method(tiger::fixed(0.5, 2))
        .on(&tiger)
        .await?;
    for row in 0..4 {
        import_rows::delay("rows.csv".into(), row)
            .on(&tiger)
            .await?;
    }
    poll::delay(42).on(&tiger).await?;
    too_slow::delay().on(&tiger).await?;
    let full = send_receipt::delay(8).max_queue_size(1).on(&tiger).await;
    println!(
        "with max_queue_size(1) on a busy queue: {}",
        full.map_err(|e| e.to_string()).unwrap_err()
    );

    println!("running a worker for 8 s:");
    let worker = Worker::new(tiger.clone()).shutdown_on(tokio::time::sleep(Duration::from_secs(8)));
    worker.run().await?;

    let mut conn = tiger.connection();
    for (state, queue) in [
        (State::Scheduled, "reports"),
        (State::Error, "slow"),
        (State::Error, "billing"),
    ] {
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(tiger.keys().queue(state, queue))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        println!("{state} on {queue}: {} task(s)", ids.len());
    }
    Ok(())
}
