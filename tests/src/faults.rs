//! Tasks for the fault scenarios (`tests/tests/faults.rs`). Those run in a worker child
//! process report through files (`<dir>/started-<n>-<pid>`), the others through
//! [`record`](crate::record). Periodic tasks live in the test file itself, since every
//! worker queues the periodic tasks linked into it.

use std::path::Path;
use std::time::Duration;

/// Records `label` under `token`.
#[tiger::task(queue = "faults")]
pub async fn tally(token: String, label: String) {
    crate::record(&token, label);
}

/// Records `label` under `token`, then holds until [`let_go`] is called with `token` (or
/// 30 s pass).
#[tiger::task(queue = "faults")]
pub async fn tally_and_hold(token: String, label: String) -> Result<(), String> {
    crate::record(&token, label);
    crate::hold(format!("{token}-go")).await
}

/// Lets every [`tally_and_hold()`] with `token` finish.
pub fn let_go(token: &str) {
    crate::release(&format!("{token}-go"));
}

/// Records `label` under `token`, then takes `millis` to finish.
#[tiger::task(queue = "faults")]
pub async fn tally_slowly(token: String, label: String, millis: u64) {
    crate::record(&token, label);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

/// Creates `<dir>/started-<n>-<pid>`, waits (up to 30 s) for `<dir>/release-<n>`, then
/// creates `<dir>/finished-<n>-<pid>`. Retried three times, 0.1 s apart.
#[tiger::task(queue = "faults-files", retry_method = fixed(0.1, 3))]
pub async fn file_step(dir: String, n: u32) -> Result<(), String> {
    step(Path::new(&dir), n).await
}

/// [`file_step()`] under a lock keyed by `user`, without retries.
#[tiger::task(queue = "faults-locked", lock_key = ["user"])]
pub async fn locked_file_step(dir: String, user: u64, n: u32) -> Result<(), String> {
    let _ = user;
    step(Path::new(&dir), n).await
}

async fn step(dir: &Path, n: u32) -> Result<(), String> {
    let pid = std::process::id();
    let mark = |what: &str| -> Result<(), String> {
        std::fs::write(dir.join(format!("{what}-{n}-{pid}")), b"").map_err(|e| e.to_string())
    };
    mark("started")?;
    let release = dir.join(format!("release-{n}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !release.exists() {
        if tokio::time::Instant::now() > deadline {
            return Err("never released".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    mark("finished")
}

/// The processes (by pid) that left `<what>-<n>-<pid>` in `dir`.
pub fn marked(dir: &Path, what: &str, n: u32) -> Vec<u32> {
    let head = format!("{what}-{n}-");
    let mut pids: Vec<u32> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| {
                    let name = entry.ok()?.file_name().into_string().ok()?;
                    name.strip_prefix(&head)?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

/// Lets [`file_step()`] and [`locked_file_step()`] number `n` finish.
pub fn release_step(dir: &Path, n: u32) {
    std::fs::write(dir.join(format!("release-{n}")), b"").unwrap();
}

/// `dir` as the `String` the file tasks take.
pub fn dir_arg(dir: &Path) -> String {
    dir.to_string_lossy().into_owned()
}

/// Asserts the invariants of a fleet at rest on `tiger`'s keys
/// ([`tiger::testing::Invariants::idle_fleet`]): how reliability tests end.
pub async fn assert_idle_invariants(tiger: &tiger::Tiger) {
    tiger::testing::Invariants::idle_fleet(tiger.config())
        .assert(tiger)
        .await;
}
