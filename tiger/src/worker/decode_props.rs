//! Property tests of [`prepare`]: whatever a Redis shared with other producers (or hands)
//! holds under `t:task:<id>`, decoding it gives `Run` or a `Reject` with one of the worker's
//! reasons, and never panics.
//!
//! Three kinds of body: (a) arbitrary bytes and text, (b) arbitrary JSON values, (c) task
//! bodies close to valid ones: fields left out, shuffled, of the wrong type or with odd
//! values (numbers out of every range, deep nesting, Python's `NaN` / `Infinity`), then
//! perhaps truncated, or with bytes spliced in or appended (invalid UTF-8, quotes, `NaN`).
//! Two tasks are registered here, a plain one and a `batch` one, so that (c) reaches the
//! argument decoders.
//!
//! Each property runs proptest's default number of cases (256, a few seconds in all). For a
//! longer search:
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test -p tiger --lib decode_props
//! ```

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::LazyLock;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

use super::execute::{INVALID_ARGUMENTS, MALFORMED_TASK, Prepared, UNKNOWN_TASK, Work, prepare};
use crate::Config;
use crate::task::{
    TaskSpec,
    args::{ArgError, Args},
    outcome::Body,
    registry::{BatchCalls, Registry, TaskEntry},
};

/// The id every body is stored under.
const ID: &str = "0f0e0d0c0b0a09080706050403020100f0e0d0c0b0a090807060504030201000";

static PLAIN: TaskSpec = TaskSpec {
    name: "tiger.decode_props:plain",
    params: &["values", "label", "count"],
    ..TaskSpec::DEFAULT
};

/// Decodes what an `async fn plain(values: Vec<f64>, label: Option<String>, count: u64)`
/// would.
fn call_plain(args: &Args<'_>) -> Result<Body, ArgError> {
    args.check(PLAIN.params)?;
    let decoded = (
        args.get::<Vec<f64>>(0, "values")?,
        args.get::<Option<String>>(1, "label")?,
        args.get::<u64>(2, "count")?,
    );
    Ok(Body::future(async move {
        drop(decoded);
        Ok(())
    }))
}

static BATCH: TaskSpec = TaskSpec {
    name: "tiger.decode_props:batch",
    params: &["arg0", "arg1"],
    ..TaskSpec::DEFAULT
};

/// Decodes one call of a `batch` task over `Vec<(String, BTreeMap<String, i32>)>`.
fn decode_batch(args: &Args<'_>) -> Result<Box<dyn Any + Send>, ArgError> {
    args.check(BATCH.params)?;
    let item: (String, BTreeMap<String, i32>) = (args.get(0, "arg0")?, args.get(1, "arg1")?);
    Ok(Box::new(item))
}

fn call_batch(items: Vec<Box<dyn Any + Send>>) -> Body {
    Body::future(async move {
        drop(items);
        Ok(())
    })
}

fn single_batch_call(_: &Args<'_>) -> Result<Body, ArgError> {
    Err(ArgError::new("a batch task is called through `batch`"))
}

inventory::submit! {
    TaskEntry { spec: &PLAIN, file: file!(), line: line!(), call: call_plain, batch: None }
}

inventory::submit! {
    TaskEntry {
        spec: &BATCH,
        file: file!(),
        line: line!(),
        call: single_batch_call,
        batch: Some(BatchCalls { decode: decode_batch, call: call_batch }),
    }
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry::load().unwrap());

/// Decodes `body` and checks that the answer is one the worker can act on.
fn check(body: &[u8]) -> Result<(), TestCaseError> {
    match prepare(&REGISTRY, &Config::default(), ID, body) {
        Prepared::Run(plan) => {
            prop_assert!(plan.func == PLAIN.name || plan.func == BATCH.name);
            prop_assert!(matches!(
                (plan.func == BATCH.name, &plan.work),
                (true, Some(Work::Item(_))) | (false, Some(Work::Body(_)))
            ));
        }
        Prepared::Reject { failure, .. } => {
            let name = failure.exception_name.as_str();
            prop_assert!(
                [MALFORMED_TASK, UNKNOWN_TASK, INVALID_ARGUMENTS].contains(&name),
                "{name}"
            );
            prop_assert!(!failure.traceback.is_empty());
            if std::str::from_utf8(body).is_err() {
                prop_assert_eq!(name, MALFORMED_TASK);
            }
        }
    }
    Ok(())
}

/// A field name: mostly those of a task body, sometimes anything.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(FIELDS).prop_map(str::to_owned),
        ".{0,8}",
    ]
}

/// Any JSON value serde_json can hold.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop::sample::select(vec![PLAIN.name, BATCH.name, ID]).prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
            prop::collection::btree_map(field_name(), inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// JSON text of any value.
fn json_text() -> impl Strategy<Value = String> {
    json_value().prop_map(|value| value.to_string())
}

/// `depth` lists, objects or unclosed lists nested in one another.
fn nested() -> impl Strategy<Value = String> {
    (0usize..3, 0usize..3000).prop_map(|(shape, depth)| match shape {
        0 => format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
        1 => format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth)),
        _ => "[".repeat(depth),
    })
}

/// Raw JSON-ish text from a fixed list, or any JSON text, or deep nesting.
fn one_of(texts: &[&'static str]) -> BoxedStrategy<String> {
    prop_oneof![
        6 => prop::sample::select(texts.to_vec()).prop_map(str::to_owned),
        1 => json_text(),
        1 => nested(),
    ]
    .boxed()
}

const FIELDS: &[&str] = &[
    "id",
    "func",
    "args",
    "kwargs",
    "unique",
    "lock",
    "lock_key",
    "hard_timeout",
    "retry_method",
    "retry_on",
    "max_stored_executions",
    "time_last_queued",
];

/// The text of each field in [`FIELDS`], valid or not.
fn field_values() -> Vec<BoxedStrategy<String>> {
    let flags = &["true", "false", "null", "1", r#""yes""#, "{}"][..];
    let id = format!("{ID:?}");
    let plain = format!("{:?}", PLAIN.name);
    let batch = format!("{:?}", BATCH.name);
    vec![
        prop_oneof![
            8 => Just(id),
            1 => one_of(&[r#""other""#, "42", "null", r#""""#]),
        ]
        .boxed(),
        prop_oneof![
            4 => Just(plain),
            4 => Just(batch),
            1 => one_of(&[r#""nowhere:nothing""#, r#""""#, "7", "null", "[]"]),
        ]
        .boxed(),
        one_of(&[
            r#"[[1.5,-2,0],"label",7]"#,
            r#"[[],null,18446744073709551615]"#,
            r#"["a",{"k":1,"j":-2}]"#,
            r#"["a"]"#,
            "[]",
            "{}",
            "null",
            r#""[1]""#,
            "3",
            r#"{"values":[1]}"#,
            "[1e400]",
            "[[1e400],null,1]",
            "[[-1e-400],null,1]",
            "[[1],null,123456789012345678901234567890]",
            "[[1],null,18446744073709551616]",
            "[[1],null,-1]",
            r#"["a",{"k":2147483648}]"#,
            "[NaN]",
            "[[Infinity],null,1]",
            r#"[[-Infinity],"x",1]"#,
            "[1,2,3,4]",
        ]),
        one_of(&[
            r#"{"label":"x","count":3}"#,
            r#"{"values":[1.0],"count":0}"#,
            r#"{"arg1":{}}"#,
            r#"{"nope":1}"#,
            r#"{"values":[NaN]}"#,
            "[]",
            "{}",
            "null",
            r#""x""#,
        ]),
        one_of(flags),
        one_of(flags),
        one_of(&[
            r#"["values"]"#,
            r#"["nope"]"#,
            "[]",
            "{}",
            r#""values""#,
            "[1]",
            "null",
        ]),
        one_of(&[
            "30",
            "0",
            "-1",
            "1e400",
            "1e300",
            "0.000000001",
            "123456789012345678901234567890",
            r#""x""#,
            "null",
            "NaN",
        ]),
        one_of(&[
            r#"["tasktiger.retry:_fixed",[60,3]]"#,
            r#"["tasktiger.retry:_linear",[1,2,3]]"#,
            r#"["tasktiger.retry:_exponential",[1,2,5]]"#,
            r#"["tasktiger.retry:_exponential",[1e308,1e308,4294967296]]"#,
            r#"["tasktiger.retry:_fixed",[-1,-3]]"#,
            r#"["tasktiger.retry:_fixed",[]]"#,
            r#"["tasktiger.retry:_fixed"]"#,
            r#"["app:custom",[]]"#,
            r#"["x"]"#,
            "[]",
            "{}",
            r#""fixed""#,
            "null",
        ]),
        one_of(&[
            r#"["builtins:ValueError"]"#,
            "{}",
            "[]",
            r#""x""#,
            "[1]",
            "null",
        ]),
        one_of(&["0", "5", "-1", "4294967296", "1e400", r#""x""#, "null"]),
        one_of(&["1.5", "NaN", "-Infinity", "1e400", r#""x""#]),
    ]
}

/// A task body: each field of [`FIELDS`] present or not, in some order.
fn task_body() -> impl Strategy<Value = String> {
    let fields: Vec<_> = FIELDS
        .iter()
        .zip(field_values())
        .map(|(name, value)| prop::option::weighted(0.8, value).prop_map(move |v| (*name, v)))
        .collect();
    fields.prop_shuffle().prop_map(|fields| {
        let members: Vec<String> = fields
            .into_iter()
            .filter_map(|(name, value)| Some(format!("{name:?}:{}", value?)))
            .collect();
        format!("{{{}}}", members.join(","))
    })
}

/// What is done to a body's bytes after it is written.
#[derive(Debug, Clone)]
enum Mutation {
    Keep,
    Truncate(Index),
    Splice(Index, Vec<u8>),
    /// Bytes after the end, as when two writes run together.
    Append(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let splice = prop_oneof![
        Just(b"\xff".to_vec()),
        Just(b"\xc3".to_vec()),
        Just(b"\xed\xa0\x80".to_vec()),
        Just(b"NaN".to_vec()),
        Just(b"-Infinity".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\\".to_vec()),
        Just("é".as_bytes().to_vec()),
        Just(b"-1".to_vec()),
        prop::collection::vec(any::<u8>(), 1..4),
    ];
    prop_oneof![
        4 => Just(Mutation::Keep),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), splice.clone()).prop_map(|(at, bytes)| Mutation::Splice(at, bytes)),
        1 => splice.prop_map(Mutation::Append),
    ]
}

fn mutate(body: String, mutation: Mutation) -> Vec<u8> {
    let mut bytes = body.into_bytes();
    match mutation {
        Mutation::Keep => {}
        Mutation::Truncate(at) => bytes.truncate(at.index(bytes.len())),
        Mutation::Splice(at, inserted) => {
            let at = at.index(bytes.len() + 1);
            bytes.splice(at..at, inserted);
        }
        Mutation::Append(more) => bytes.extend(more),
    }
    bytes
}

proptest! {
    #[test]
    fn arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&body)?;
    }

    #[test]
    fn arbitrary_text(body in ".{0,256}") {
        check(body.as_bytes())?;
    }

    #[test]
    fn arbitrary_json(value in json_value()) {
        check(value.to_string().as_bytes())?;
    }

    #[test]
    fn close_to_a_task(body in task_body(), mutation in mutation()) {
        check(&mutate(body, mutation))?;
    }
}

/// The reject's exception name and text, or `None` for `Run`.
fn rejected(body: &str) -> Option<(String, String)> {
    match prepare(&REGISTRY, &Config::default(), ID, body.as_bytes()) {
        Prepared::Run(_) => None,
        Prepared::Reject { failure, .. } => Some((failure.exception_name, failure.traceback)),
    }
}

/// The valid shapes in [`field_values`] run, so (c) reaches the argument decoders.
#[test]
fn valid_bodies_run() {
    let plain = format!(
        r#"{{"id":"{ID}","func":"{}","args":[[1.5,-2,0],"label",7],"lock_key":["values"],"retry_method":["tasktiger.retry:_fixed",[60,3]]}}"#,
        PLAIN.name
    );
    assert_eq!(rejected(&plain), None);
    let batch = format!(
        r#"{{"id":"{ID}","func":"{}","args":["a",{{"k":1,"j":-2}}]}}"#,
        BATCH.name
    );
    assert_eq!(rejected(&batch), None);
}

/// Python's `json` writes NaN, Infinity and -Infinity; the reject says so.
#[test]
fn python_literals_are_named() {
    for literal in ["NaN", "Infinity", "-Infinity"] {
        for body in [
            format!(
                r#"{{"id":"{ID}","func":"{}","args":[[{literal}],null,1]}}"#,
                PLAIN.name
            ),
            format!("{{\n  \"id\": \"{ID}\",\n  \"max_stored_executions\": {literal}\n}}"),
        ] {
            let (name, text) = rejected(&body).unwrap();
            assert_eq!(name, MALFORMED_TASK);
            assert!(
                text.contains(&format!("holds `{literal}`, a non-standard JSON literal"))
                    && text.contains("Python's json writes NaN, Infinity and -Infinity"),
                "{text}"
            );
        }
    }
    // The word inside a string, or after what stopped the parse, is not blamed.
    for body in [
        r#"{"id":"NaN \"Infinity","func":x}"#.to_owned(),
        format!(r#"{{"id":"{ID}",x,"args":[NaN]}}"#),
        format!(r#"{{"id":"{ID}","func":"{}","args":[Nan]}}"#, PLAIN.name),
    ] {
        let (name, text) = rejected(&body).unwrap();
        assert_eq!(name, MALFORMED_TASK);
        assert!(
            text.starts_with("the task body is not valid task JSON"),
            "{text}"
        );
    }
}
