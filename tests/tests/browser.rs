//! The dashboard in a real browser: headless Chromium, driven by `tests/browser/dashboard.cjs`
//! (playwright-core), against a dashboard and a worker on a real Redis. The driver opens the
//! overview, follows an errored task, presses retry, and watches a worker run it; this test
//! sets the stage and starts the worker when the driver says the task is queued again.
//!
//! `scripts/browser-env` installs Chromium and playwright-core on first run. With
//! `TIGER_UPDATE_SCREENSHOTS=1` the overview's screenshot replaces `docs/dashboard.png`.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tiger::{Dashboard, State, Task, testing::wait_until};
use tiger_tests::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

static CARD_WORKS: AtomicBool = AtomicBool::new(false);

/// Declined until the test lets it through.
#[tiger::task(queue = "payments")]
async fn take_payment(order: String, cents: u64) -> Result<(), String> {
    if CARD_WORKS.load(Ordering::SeqCst) {
        record(&order, cents);
        Ok(())
    } else {
        Err(format!("card declined for order {order}"))
    }
}

/// The Chromium binary and the node_modules folder with playwright-core.
fn browser_env() -> (String, String) {
    let output = std::process::Command::new(workspace_root().join("scripts/browser-env"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/browser-env");
    assert!(output.status.success(), "scripts/browser-env failed");
    let text = String::from_utf8(output.stdout).unwrap();
    let mut lines = text.lines();
    let chromium = lines.next().expect("a chromium path").to_owned();
    let modules = lines.next().expect("a node_modules path").to_owned();
    (chromium, modules)
}

/// Queues with something in each state, and an hour of earlier counts for the chart (what
/// the screenshot in README shows).
async fn set_the_stage(fx: &Fixture) {
    for n in 0..14 {
        note::delay(token(), format!("welcome {n}"))
            .queue("emails")
            .on(&fx.tiger)
            .await
            .unwrap();
    }
    for n in 0..3 {
        note::delay(token(), format!("vip {n}"))
            .queue("emails.vip")
            .on(&fx.tiger)
            .await
            .unwrap();
    }
    for n in 0..5 {
        note::delay(token(), format!("report {n}"))
            .queue("reports")
            .when(Duration::from_secs(3600 * (n + 1)))
            .on(&fx.tiger)
            .await
            .unwrap();
    }
    let keys = fx.tiger.keys();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let this_minute = now / 60 * 60;
    let mut pipe = redis::pipe();
    for back in 1..60i64 {
        let key = keys.minute(this_minute - back * 60);
        let processed = 40 + (back * 37 % 23) * 3 + if back % 17 < 4 { 60 } else { 0 };
        let failed = if back % 11 == 3 { 9 } else { back % 3 };
        pipe.cmd("HINCRBY")
            .arg(&key)
            .arg("processed")
            .arg(processed)
            .ignore();
        pipe.cmd("HINCRBY")
            .arg(&key)
            .arg("failed")
            .arg(failed)
            .ignore();
        pipe.cmd("EXPIRE").arg(&key).arg(3600).ignore();
    }
    let _: () = pipe.query_async(&mut fx.tiger.connection()).await.unwrap();
}

/// `tests/browser/dashboard.cjs` running one of its scenarios in Chromium against a
/// dashboard of its own, and the lines it prints.
struct Driver {
    child: tokio::process::Child,
    said: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Driver {
    /// Serves a dashboard for `tiger` and starts `scenario` on it with `args`.
    async fn start(tiger: &tiger::Tiger, scenario: &str, args: &[&str]) -> Driver {
        let (chromium, modules) = browser_env();
        let port = tiger::testing::free_port().unwrap();
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        tokio::spawn(Dashboard::new().serve(tiger.clone(), addr));
        wait_until(
            Duration::from_secs(10),
            "the dashboard to listen",
            || async { std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() },
        )
        .await;
        let shots = workspace_root().join("target/tiger-browser/screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        let mut child = tokio::process::Command::new("node")
            .arg(workspace_root().join("tests/browser/dashboard.cjs"))
            .arg(scenario)
            .arg(format!("http://127.0.0.1:{port}"))
            .arg(&shots)
            .args(args)
            .env("TIGER_CHROMIUM", &chromium)
            .env("TIGER_NODE_MODULES", &modules)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("run node");
        let said = BufReader::new(child.stdout.take().unwrap()).lines();
        Driver { child, said }
    }

    /// Waits for the driver to print `line`.
    async fn expect(&mut self, line: &str) {
        let heard = tokio::time::timeout(Duration::from_secs(90), self.said.next_line())
            .await
            .unwrap_or_else(|_| panic!("the browser driver said {line:?} within 90 s"))
            .unwrap();
        assert_eq!(
            heard.as_deref(),
            Some(line),
            "the browser driver stopped early (its reason is above)"
        );
    }

    /// Tells the driver `line`.
    async fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    /// Waits for the driver to exit, and asserts it passed.
    async fn finish(mut self) {
        let status = tokio::time::timeout(Duration::from_secs(90), self.child.wait())
            .await
            .expect("the browser driver finished within 90 s")
            .unwrap();
        assert!(
            status.success(),
            "the browser driver failed (its reason is above)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_retries_an_errored_task_in_chromium_and_a_worker_runs_it() {
    let fx = Fixture::new().await;
    set_the_stage(&fx).await;
    let order = token();
    let id = take_payment::delay(order.clone(), 1999)
        .on(&fx.tiger)
        .await
        .unwrap();
    fx.drain_with(|w| w.queues(["payments"])).await;
    assert_eq!(fx.ids(State::Error, "payments").await, [id.as_str()]);

    let shots = workspace_root().join("target/tiger-browser/screenshots");
    let mut driver = Driver::start(&fx.tiger, "retry", &["payments", id.as_str()]).await;
    driver.expect("retried").await;
    // The retry, pressed in the browser, put the task back in its queue.
    assert_eq!(fx.ids(State::Queued, "payments").await, [id.as_str()]);
    assert!(fx.ids(State::Error, "payments").await.is_empty());

    // A queue whose name holds what a URL gives meaning to, which only the refresh will
    // show: its links must keep the name.
    let keys = fx.tiger.keys();
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(keys.task("dot-task"))
        .arg(r#"{"id": "dot-task", "func": "m:f"}"#)
        .ignore()
        .cmd("ZADD")
        .arg(keys.queue(State::Scheduled, "a/b?c#d"))
        .arg(4_102_444_800u64)
        .arg("dot-task")
        .ignore()
        .cmd("SADD")
        .arg(keys.state_set(State::Scheduled))
        .arg("a/b?c#d")
        .ignore()
        .query_async(&mut fx.tiger.connection())
        .await
        .unwrap();
    CARD_WORKS.store(true, Ordering::SeqCst);
    let worker = spawn_worker(tiger::Worker::new(fx.tiger.clone()).queues(["payments"]));
    driver.say("go").await;
    driver.finish().await;
    assert_eq!(
        take::<u64>(&order),
        [1999],
        "the worker ran the retried task"
    );
    assert!(Task::find(&fx.tiger, id.as_str()).await.unwrap().is_empty());
    worker.stop().await;

    for shot in ["overview.png", "task.png", "workers.png"] {
        let size = std::fs::metadata(shots.join(shot)).map_or(0, |m| m.len());
        assert!(size > 10_000, "{shot} is a real screenshot ({size} bytes)");
    }
    if std::env::var_os("TIGER_UPDATE_SCREENSHOTS").is_some() {
        std::fs::copy(
            shots.join("overview.png"),
            workspace_root().join("docs/dashboard.png"),
        )
        .unwrap();
    }
}

/// The overview through an outage, in Chromium, on a private server (this test stops it):
/// rows in the server's order after a refresh, the counts marked stale and the worker count
/// unknown while Redis hangs, the last chart kept, and once Redis answers again and the
/// queues are empty, "No tasks in any queue." with no stale word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_rides_out_an_outage_in_chromium() {
    let server = tiger::testing::RedisServer::start().unwrap();
    let tiger = tiger::Tiger::connect_with(&server.url(), tiger::testing::test_config())
        .await
        .unwrap();
    // Names whose order differs between UTF-16 units and code points (the server's).
    let queues = ["10", "b", "\u{ff5e}", "\u{1f600}"];
    for queue in queues {
        note::delay(token(), "x".into())
            .queue(queue)
            .on(&tiger)
            .await
            .unwrap();
    }
    let order = queues.join(" ");
    let mut driver = Driver::start(&tiger, "outage", &[&order]).await;
    driver.expect("opened").await;
    server.freeze().unwrap();
    driver.say("frozen").await;
    driver.expect("stale").await;
    server.thaw().unwrap();
    for queue in queues {
        let ids = Task::tasks_from_queue(&tiger, queue, State::Queued, 0, 10, 0)
            .await
            .unwrap()
            .1;
        for task in ids {
            task.cancel(&tiger).await.unwrap();
        }
    }
    driver.say("thawed").await;
    driver.finish().await;
}
