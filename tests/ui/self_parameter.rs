struct Mailer;

impl Mailer {
    #[tiger::task]
    async fn send(&self, user: u64) {}
}

fn main() {}
