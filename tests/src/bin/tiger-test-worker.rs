//! The worker binary the integration tests start as a child process. It is exactly what a
//! user writes: the tasks come from the linked `tiger_tests` library.

use tiger_tests as _;

fn main() {
    tiger::run_worker()
}
