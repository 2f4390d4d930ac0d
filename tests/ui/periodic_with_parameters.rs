#[tiger::task(schedule = periodic(hours = 1))]
async fn report(day: String) {}

fn main() {}
