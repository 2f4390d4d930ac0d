#[tiger::task]
async fn send(user: u64) {
    let counter = std::rc::Rc::new(user);
    tokio::task::yield_now().await;
    drop(counter);
}

fn main() {}
