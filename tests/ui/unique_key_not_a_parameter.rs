#[tiger::task(unique_key = ["user", "acount"])]
async fn send(user: u64, account: u64) {}

fn main() {}
