#[tiger::task(queue = 5, hard_timeout = "long")]
async fn send(user: u64) {}

fn main() {}
