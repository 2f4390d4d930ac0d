#[tiger::task(queue = "a", queue = "b")]
async fn send(user: u64) {}

fn main() {}
