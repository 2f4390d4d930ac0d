#[tiger::task(retry_method = quadratic(1, 2))]
async fn send(user: u64) {}

fn main() {}
