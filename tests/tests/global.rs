//! The process-wide handle `delay` uses when a call names none. (A binary of its own: the
//! handle is set once per process.)

use tiger::{State, Tiger};
use tiger_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn delay_without_on_uses_the_global_handle() {
    let fx = Fixture::new().await;
    Tiger::set_global(fx.tiger.clone()).expect("no global handle yet");
    let id = note::delay("t".into(), "via global".into()).await.unwrap();
    assert_eq!(fx.ids(State::Queued, "default").await, [id.as_str()]);
    fx.assert_keys(
        state_keys(State::Queued, "default")
            .into_iter()
            .chain([task_key(id.as_str())]),
    )
    .await;
    assert_eq!(
        Tiger::global().await.unwrap().keys().prefix(),
        fx.tiger.keys().prefix()
    );

    let other = fx.redis.tiger().await.unwrap();
    assert!(
        Tiger::set_global(other).is_err(),
        "a second handle is refused"
    );
}
