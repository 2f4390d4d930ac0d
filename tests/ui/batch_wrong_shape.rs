#[tiger::task(batch)]
async fn import(path: String, rows: u32) {}

fn main() {}
