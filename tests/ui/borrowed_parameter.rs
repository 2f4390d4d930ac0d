#[tiger::task]
async fn send(address: &str) {}

fn main() {}
