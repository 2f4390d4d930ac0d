//! What the benchmark asks the server: a fresh state, command counts, memory, queue sizes.

use tiger::Tiger;

async fn query<T: redis::FromRedisValue>(tiger: &Tiger, args: &[&str]) -> T {
    redis::cmd(args[0])
        .arg(&args[1..])
        .query_async(&mut tiger.connection())
        .await
        .unwrap_or_else(|err| panic!("{}: {err}", args.join(" ")))
}

/// A fresh state: the server's data, its command statistics and its script cache.
pub(crate) async fn flush(tiger: &Tiger) {
    query::<()>(tiger, &["FLUSHALL"]).await;
    reset_stats(tiger).await;
}

/// Zeroes `INFO commandstats`.
pub(crate) async fn reset_stats(tiger: &Tiger) {
    query::<()>(tiger, &["CONFIG", "RESETSTAT"]).await;
}

/// Calls per task of each Redis command since the last reset, most frequent first.
pub(crate) async fn commands(tiger: &Tiger, tasks: u64) -> Vec<(String, f64)> {
    let info: String = query(tiger, &["INFO", "commandstats"]).await;
    let mut found: Vec<(String, f64)> = info
        .lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls: f64 = stats
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            let ours = !matches!(name, "info" | "config|resetstat" | "flushall");
            ours.then(|| (name.to_owned(), calls / tasks.max(1) as f64))
        })
        .collect();
    found.sort_by(|a, b| b.1.total_cmp(&a.1));
    found
}

/// `used_memory` in bytes.
pub(crate) async fn used_memory(tiger: &Tiger) -> f64 {
    let info: String = query(tiger, &["INFO", "memory"]).await;
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:")?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `redis_version` of the server.
pub(crate) async fn server_version(tiger: &Tiger) -> String {
    let info: String = query(tiger, &["INFO", "server"]).await;
    info.lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_owned()
}

/// Tasks waiting or running in TaskTiger's layout: queued plus active, over every queue
/// whose name is in `t:queued` or `t:active` (no prefix, TaskTiger's default).
pub(crate) async fn tasktiger_pending(tiger: &Tiger) -> u64 {
    let mut total = 0;
    for state in ["queued", "active"] {
        let queues: Vec<String> = query(tiger, &["SMEMBERS", &format!("t:{state}")]).await;
        if queues.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        for queue in &queues {
            pipe.cmd("ZCARD").arg(format!("t:{state}:{queue}"));
        }
        let sizes: Vec<u64> = pipe
            .query_async(&mut tiger.connection())
            .await
            .expect("zcard");
        total += sizes.iter().sum::<u64>();
    }
    total
}
