//! Two tasks with one serialized name: the worker refuses to start and names both places.
//! (A binary of its own, so the duplicate does not affect the other tests.)

#[tiger::task(name = "shared:name")]
async fn first() {}

#[tiger::task(name = "shared:name")]
fn second() {}

#[tokio::test]
async fn two_tasks_with_one_name_fail_at_worker_start() {
    let redis = tiger::testing::TestRedis::start().unwrap();
    let tiger = redis.tiger().await.unwrap();
    let err = tiger::Worker::new(tiger)
        .once(true)
        .run()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, tiger::Error::DuplicateTask { .. }), "{text}");
    assert!(text.contains("`shared:name`"), "{text}");
    assert!(text.contains("tests/tests/duplicate_names.rs:4"), "{text}");
    assert!(text.contains("tests/tests/duplicate_names.rs:7"), "{text}");
    // The functions themselves are untouched.
    first().await;
    second();
}
