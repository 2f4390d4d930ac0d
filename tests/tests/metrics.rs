//! `--metrics-bind`: a worker program serves Prometheus metrics of what its tasks did.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use tiger::{fixed, testing::wait_until};
use tiger_tests::*;

const WORKER: &str = env!("CARGO_BIN_EXE_tiger-test-worker");

/// The worker program on `queue` of the fixture's Redis, serving metrics on `port`.
fn metrics_worker(fx: &Fixture, queue: &str, port: u16) -> std::process::Child {
    Command::new(WORKER)
        .args(["-q", queue, "--metrics-bind", &format!("127.0.0.1:{port}")])
        .env("REDIS_URL", fx.redis.url())
        .env("TIGER_PREFIX", fx.tiger.keys().prefix())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// `GET /metrics` from `port`, or `None` while nothing answers there yet.
fn scrape(port: u16) -> Option<String> {
    let (head, body) = scrape_as(port, "127.0.0.1")?;
    head.starts_with("HTTP/1.1 200").then_some(body)
}

/// The head and body of `GET /metrics` from `port`, sent to the host name `host`.
fn scrape_as(port: u16, host: &str) -> Option<(String, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some((head.to_owned(), body.to_owned()))
}

/// The value of the sample `name` whose labels include each of `labels` (`key="value"`).
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.split(['{', ' '])
                .next()
                .is_some_and(|metric| metric == name)
        })
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn the_worker_serves_counts_durations_and_queue_depths() {
    let fx = Fixture::new().await;
    let port = tiger::testing::free_port().unwrap();
    let t = token();
    for n in 0..3 {
        note::delay(t.clone(), format!("{n}"))
            .queue("metrics-q")
            .on(&fx.tiger)
            .await
            .unwrap();
    }
    // Fails, is retried once, fails for good: two failed runs, one retry, one in error.
    charge::delay(t.clone(), 5)
        .queue("metrics-q")
        .retry_method(fixed(0.0, 1))
        .on(&fx.tiger)
        .await
        .unwrap();
    let mut worker = metrics_worker(&fx, "metrics-q", port);
    let note = ["func=\"tiger_tests:note\"", "queue=\"metrics-q\""];
    let charge = ["func=\"tiger_tests:charge\"", "queue=\"metrics-q\""];
    let mut text = String::new();
    wait_until(
        Duration::from_secs(30),
        "the metrics to show every run",
        || {
            let scraped = scrape(port);
            let done = scraped.as_deref().is_some_and(|t| {
                sample(t, "tiger_tasks_succeeded_total", &note) == Some(3.0)
                    && sample(t, "tiger_tasks_failed_total", &charge) == Some(2.0)
                    && sample(t, "tiger_worker_tasks_in_flight", &[]) == Some(0.0)
            });
            if let Some(scraped) = scraped {
                text = scraped;
            }
            async move { done }
        },
    )
    .await;
    // On loopback, a page that points a name of its own at 127.0.0.1 reads nothing.
    let rebound = scrape_as(port, "evil.example").expect("an answer");
    assert!(rebound.0.starts_with("HTTP/1.1 403"), "{}", rebound.0);
    let _ = worker.kill();
    let _ = worker.wait();

    assert_eq!(sample(&text, "tiger_tasks_started_total", &note), Some(3.0));
    assert_eq!(
        sample(&text, "tiger_tasks_started_total", &charge),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "tiger_tasks_retried_total", &charge),
        Some(1.0)
    );
    assert_eq!(sample(&text, "tiger_tasks_retried_total", &note), None);
    assert_eq!(
        sample(&text, "tiger_task_duration_seconds_count", &note),
        Some(3.0)
    );
    assert!(
        sample(
            &text,
            "tiger_task_duration_seconds_bucket",
            &[note[0], "le=\"+Inf\""]
        ) == Some(3.0)
    );
    let errored = ["queue=\"metrics-q\"", "state=\"error\""];
    assert_eq!(sample(&text, "tiger_queue_tasks", &errored), Some(1.0));
    let queued = ["queue=\"metrics-q\"", "state=\"queued\""];
    assert_eq!(sample(&text, "tiger_queue_tasks", &queued), Some(0.0));
    assert!(
        text.contains("# TYPE tiger_task_duration_seconds histogram")
            && text.contains("# HELP tiger_tasks_failed_total "),
        "{text}"
    );
}

#[tokio::test]
async fn tasks_that_cannot_run_count_and_an_emptied_queue_reads_zero() {
    let fx = Fixture::new().await;
    let port = tiger::testing::free_port().unwrap();
    fx.inject(
        "metrics-odd",
        "0123",
        Some(r#"{"id": "0123", "func": "nowhere:nothing"}"#),
    )
    .await;
    let mut worker = metrics_worker(&fx, "metrics-odd", port);
    let cannot = ["func=\"(cannot run)\"", "queue=\"metrics-odd\""];
    let errored = ["queue=\"metrics-odd\"", "state=\"error\""];
    wait_until(
        Duration::from_secs(30),
        "the unknown task to be counted",
        || {
            let done = scrape(port).is_some_and(|t| {
                sample(&t, "tiger_tasks_failed_total", &cannot) == Some(1.0)
                    && sample(&t, "tiger_queue_tasks", &errored) == Some(1.0)
            });
            async move { done }
        },
    )
    .await;
    let task = tiger::Task::from_id(&fx.tiger, "metrics-odd", tiger::State::Error, "0123")
        .await
        .unwrap();
    task.delete(&fx.tiger).await.unwrap();
    let text = scrape(port).unwrap();
    assert_eq!(
        sample(&text, "tiger_queue_tasks", &errored),
        Some(0.0),
        "{text}"
    );
    let _ = worker.kill();
    let _ = worker.wait();
}

#[tokio::test]
async fn an_address_that_cannot_be_bound_stops_the_worker_at_start() {
    let fx = Fixture::new().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let output = Command::new(WORKER)
        .args(["--metrics-bind", &format!("127.0.0.1:{port}"), "--once"])
        .env("REDIS_URL", fx.redis.url())
        .env("TIGER_PREFIX", fx.tiger.keys().prefix())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot listen for metrics on 127.0.0.1:"),
        "{stderr}"
    );
}
