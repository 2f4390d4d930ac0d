struct Connection;

#[tiger::task]
async fn send(conn: Connection) {}

fn main() {}
