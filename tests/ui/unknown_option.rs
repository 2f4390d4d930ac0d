#[tiger::task(queue = "a", retries = 3)]
async fn send(user: u64) {}

fn main() {}
