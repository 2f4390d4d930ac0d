#[tiger::task(lock_key = ["id"])]
fn resize(path: String) {}

fn main() {}
