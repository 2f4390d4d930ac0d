//! The worker binary the integration tests start as a child process. It is what a user
//! writes, with the tests' short timers (`tiger::testing::test_config`); the tasks come from
//! the linked `tiger_tests` library.

use tiger_tests as _;

fn main() {
    tiger::run_worker_with(tiger::testing::test_config())
}
