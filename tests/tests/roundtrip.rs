//! Enqueue → Redis layout → worker → typed call → nothing left behind.

use std::collections::BTreeMap;

use tiger::State;
use tiger_tests::*;

#[tokio::test]
async fn typed_arguments_survive_the_round_trip() {
    let fx = Fixture::new().await;
    let token = token();
    let profile = Profile {
        name: "Zoë 🐯 «tiger» \u{1F600} \\ \" / \n".into(),
        scores: BTreeMap::from([("ß".into(), vec![0, 65535]), ("a".into(), vec![])]),
        home: Some(Address {
            city: "Zürich".into(),
            zip: None,
        }),
    };
    let calls = [
        (Some(7), vec![-1, 0, i64::MAX, i64::MIN], u64::MAX - 1, -0.1),
        (None, vec![], u64::MAX, 1e-300),
        (Some(0), vec![42], 0, 12_345.678_901_234_5),
    ];
    for (maybe, list, big, float) in calls.clone() {
        echo_all::delay(
            token.clone(),
            "日本語テキスト".into(),
            profile.clone(),
            maybe,
            list,
            big,
            float,
        )
        .on(&fx.tiger)
        .await
        .unwrap();
    }
    fx.drain().await;

    let mut got = take::<Echoed>(&token);
    got.sort_by_key(|e| e.big);
    let mut want: Vec<Echoed> = calls
        .into_iter()
        .map(|(maybe, list, big, float)| Echoed {
            text: "日本語テキスト".into(),
            profile: profile.clone(),
            maybe,
            list,
            big,
            float,
        })
        .collect();
    want.sort_by_key(|e| e.big);
    assert_eq!(got, want);
    fx.assert_keys([]).await;
}

#[tokio::test]
async fn the_stored_task_has_tasktiger_layout() {
    let fx = Fixture::new().await;
    let id = echo_all::delay(
        "t".into(),
        "x".into(),
        Profile::plain(),
        None,
        vec![1],
        u64::MAX,
        0.5,
    )
    .on(&fx.tiger)
    .await
    .unwrap();
    let id = id.as_str();
    assert_eq!(id.len(), 64);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );

    assert_eq!(
        fx.keys().await,
        set(&["queued", "queued:roundtrip", &format!("task:{id}")])
    );
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(fx.tiger.keys().state_set(State::Queued))
        .query_async(&mut fx.tiger.connection())
        .await
        .unwrap();
    assert_eq!(members, ["roundtrip"]);
    assert_eq!(fx.ids(State::Queued, "roundtrip").await, [id]);

    let body = fx.body(id).await.unwrap();
    let fields = field_names(&body);
    assert_eq!(
        fields,
        ["args", "func", "id", "scheduled_at", "time_last_queued"]
    );
    assert_eq!(body["id"], id);
    assert_eq!(body["func"], echo_all::NAME);
    assert_eq!(echo_all::NAME, "tiger_tests:echo_all");
    assert_eq!(
        body["args"],
        serde_json::json!(["t", "x", {"name": "n", "scores": {}, "home": null}, null, [1], u64::MAX, 0.5])
    );
    let queued_at = body["time_last_queued"].as_f64().unwrap();
    assert_eq!(body["scheduled_at"].as_f64().unwrap(), queued_at);
    let score: f64 = redis::cmd("ZSCORE")
        .arg(fx.tiger.keys().queue(State::Queued, "roundtrip"))
        .arg(id)
        .query_async(&mut fx.tiger.connection())
        .await
        .unwrap();
    assert!(
        (score - queued_at).abs() < 1e-3,
        "score {score} vs time_last_queued {queued_at}"
    );
}

#[tokio::test]
async fn enqueue_publishes_the_queue_name_on_the_activity_channel() {
    let fx = Fixture::new().await;
    let client = redis::Client::open(fx.redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(fx.tiger.keys().activity()).await.unwrap();
    note::delay("t".into(), "x".into())
        .queue("mail.fast")
        .on(&fx.tiger)
        .await
        .unwrap();
    let mut messages = pubsub.on_message();
    let message = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        futures_next(&mut messages),
    )
    .await
    .expect("a message within 5 s")
    .unwrap();
    assert_eq!(message.get_payload::<String>().unwrap(), "mail.fast");
    drop(messages);
    let ids = fx.ids(State::Queued, "mail.fast").await;
    fx.assert_keys(
        state_keys(State::Queued, "mail.fast")
            .into_iter()
            .chain([task_key(&ids[0])]),
    )
    .await;
}

async fn futures_next<S: futures_util::Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    use futures_util::StreamExt;
    stream.next().await
}

#[tokio::test]
async fn per_call_queue_overrides_the_attribute_and_default_queue_applies() {
    let fx = Fixture::new().await;
    echo_all::delay(
        "t".into(),
        "x".into(),
        Profile::plain(),
        None,
        vec![],
        0,
        0.0,
    )
    .queue("elsewhere")
    .on(&fx.tiger)
    .await
    .unwrap();
    note::delay("t".into(), "x".into())
        .on(&fx.tiger)
        .await
        .unwrap();
    let elsewhere = fx.ids(State::Queued, "elsewhere").await;
    let default = fx.ids(State::Queued, "default").await;
    assert_eq!((elsewhere.len(), default.len()), (1, 1));
    fx.assert_keys([
        "queued".to_owned(),
        "queued:elsewhere".to_owned(),
        "queued:default".to_owned(),
        task_key(&elsewhere[0]),
        task_key(&default[0]),
    ])
    .await;
}

#[tokio::test]
async fn plain_fn_tasks_run_off_the_async_threads() {
    let fx = Fixture::new().await;
    let token = token();
    sync_echo::delay(token.clone(), 5)
        .on(&fx.tiger)
        .await
        .unwrap();
    fx.drain().await;
    let got = take::<(u32, std::thread::ThreadId)>(&token);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, 5);
    // `#[tokio::test]` runs every async task on this one thread, so another thread id means
    // the plain fn ran on the blocking pool.
    assert_ne!(got[0].1, std::thread::current().id());
    sync_echo(token.clone(), 6);
    assert_eq!(
        take::<(u32, std::thread::ThreadId)>(&token)[0],
        (6, std::thread::current().id())
    );
    fx.assert_keys([]).await;
}

#[tokio::test]
async fn the_function_stays_callable_directly() {
    let token = token();
    note(token.clone(), "direct".into()).await;
    assert_eq!(take::<String>(&token), ["direct"]);
    let err = charge(token.clone(), 5).await.unwrap_err();
    assert!(err.to_string().contains("charging the card failed"));
}

#[tokio::test]
async fn a_task_declared_inside_a_function_body_works() {
    #[tiger::task(queue = "local")]
    async fn local_task(token: String, n: u8) {
        record(&token, n);
    }

    let fx = Fixture::new().await;
    let token = token();
    local_task::delay(token.clone(), 9)
        .on(&fx.tiger)
        .await
        .unwrap();
    assert_eq!(local_task::NAME, "roundtrip:local_task");
    fx.drain().await;
    assert_eq!(take::<u8>(&token), [9]);
    fx.assert_keys([]).await;
}

#[tokio::test]
async fn arguments_json_cannot_hold_fail_the_delay_and_write_nothing() {
    let fx = Fixture::new().await;
    let map = BTreeMap::from([((1, 2), 3)]);
    let err = pairs::delay(map).on(&fx.tiger).await.unwrap_err();
    assert!(matches!(err, tiger::Error::Serialize { .. }), "{err}");
    assert!(err.to_string().contains(pairs::NAME), "{err}");
    fx.assert_keys([]).await;
}

#[tokio::test]
async fn delay_inside_a_task_reaches_the_workers_redis_and_prefix() {
    let fx = Fixture::new().await;
    let (async_token, sync_token) = (token(), token());
    chain::delay(async_token.clone(), 3)
        .on(&fx.tiger)
        .await
        .unwrap();
    chain_sync::delay(sync_token.clone(), 3)
        .on(&fx.tiger)
        .await
        .unwrap();
    fx.drain().await;
    assert_eq!(take::<u32>(&async_token), [3, 2, 1, 0]);
    assert_eq!(take::<u32>(&sync_token), [3, 2, 1, 0]);
    fx.assert_keys([]).await;
}
