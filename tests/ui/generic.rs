#[tiger::task]
async fn send<T: serde::Serialize>(value: T) {}

fn main() {}
