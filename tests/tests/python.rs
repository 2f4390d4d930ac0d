//! Python TaskTiger 0.26.3 (the real one, from PyPI) reads what tiger writes.

use std::collections::BTreeMap;

use tiger::State;
use tiger_tests::*;

fn inspect(fx: &Fixture, queue: &str) -> serde_json::Value {
    fx.python_json("inspect_queue.py", &[queue])
}

#[tokio::test]
async fn python_tasktiger_sees_a_normal_queued_task_and_tigers_error_records() {
    let fx = Fixture::new().await;
    let profile = Profile {
        name: "Zoë 🐯".into(),
        scores: BTreeMap::from([("x".into(), vec![1, 2])]),
        home: None,
    };
    let queued = echo_all::delay(
        "tok".into(),
        "naïve".into(),
        profile,
        Some(3),
        vec![-5],
        u64::MAX,
        2.5,
    )
    .queue("compat")
    .on(&fx.tiger)
    .await
    .unwrap();
    let failed = charge::delay("tok".into(), 250)
        .queue("compat.billing")
        .on(&fx.tiger)
        .await
        .unwrap();
    fx.drain_with(|w| w.queues(["compat.billing"])).await;
    assert_eq!(
        fx.ids(State::Error, "compat.billing").await,
        [failed.as_str()]
    );

    let seen = inspect(&fx, "compat");
    assert_eq!(seen["queued"]["total"], 1);
    let task = &seen["queued"]["tasks"][0];
    assert_eq!(task["id"], queued.as_str());
    assert_eq!(task["func"], echo_all::NAME);
    assert_eq!(task["state"], "queued");
    assert_eq!(task["queue"], "compat");
    assert_eq!(
        task["args"],
        serde_json::json!(["tok", "naïve", {"name": "Zoë 🐯", "scores": {"x": [1, 2]}, "home": null}, 3, [-5], u64::MAX, 2.5])
    );
    assert_eq!(task["kwargs"], serde_json::json!({}));
    assert_eq!(task["executions"], serde_json::json!([]));
    assert_eq!(task["n_executions"], 0);
    let body = fx.body(queued.as_str()).await.unwrap();
    assert!(
        (task["ts"].as_f64().unwrap() - body["time_last_queued"].as_f64().unwrap()).abs() < 1e-3
    );

    let stats = &seen["stats"];
    assert_eq!(stats["compat"]["queued"], 1);
    assert_eq!(stats["compat.billing"]["error"], 1);

    let errored = inspect(&fx, "compat.billing");
    let task = &errored["error"]["tasks"][0];
    assert_eq!(task["id"], failed.as_str());
    assert_eq!(task["n_executions"], 1);
    let execution = &task["executions"][0];
    assert_eq!(execution["exception_name"], "tiger_tests:ChargeError");
    assert_eq!(execution["success"], false);
    assert!(
        execution["traceback"]
            .as_str()
            .unwrap()
            .contains("card declined for 250 cents")
    );

    // Reading changed nothing.
    let mut keys = state_keys(State::Queued, "compat");
    keys.push(task_key(queued.as_str()));
    keys.extend(state_keys(State::Error, "compat.billing"));
    keys.extend(errored_task_keys(failed.as_str()));
    fx.assert_keys(keys).await;
}
