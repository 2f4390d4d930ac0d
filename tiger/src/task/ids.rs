//! Deterministic ids for unique tasks and task locks, byte-identical to TaskTiger's
//! `gen_unique_id(func, args, kwargs)`: the lowercase hex sha256 of
//! `json.dumps({"func": func, "args": args, "kwargs": kwargs}, sort_keys=True)`.

use sha2::{Digest, Sha256};

use super::{
    hex,
    pyjson::{PyJsonError, PyValue},
};

/// TaskTiger's `gen_unique_id`. `args` is `None` for ids built from a key list
/// (`unique_key`, `lock_key`), which TaskTiger hashes with `"args": null`.
pub(crate) fn gen_unique_id(func: &str, args: Option<PyValue>, kwargs: PyValue) -> String {
    let payload = PyValue::dict([
        ("func".to_owned(), PyValue::Str(func.to_owned())),
        ("args".to_owned(), args.unwrap_or(PyValue::Null)),
        ("kwargs".to_owned(), kwargs),
    ]);
    hex(&Sha256::digest(payload.dumps().as_bytes()))
}

/// The id TaskTiger derives from a task's stored arguments (JSON texts): with `keys`
/// (`unique_key`, `lock_key`), from those `kwargs` fields only, absent ones as `null`, and
/// `args` as `null`; else from all of `args` (default `[]`) and `kwargs` (default `{}`).
pub(crate) fn derived_id(
    func: &str,
    args: Option<&str>,
    kwargs: Option<&str>,
    keys: Option<&[String]>,
) -> Result<String, PyJsonError> {
    let parse = |text: Option<&str>, empty: PyValue| match text {
        Some(text) => PyValue::parse(text).map(|value| {
            if value == PyValue::Null {
                empty.clone()
            } else {
                value
            }
        }),
        None => Ok(empty),
    };
    let kwargs = parse(kwargs, PyValue::Dict(Vec::new()))?;
    Ok(match keys {
        Some(keys) => gen_unique_id(func, None, pick(&kwargs, keys)),
        None => gen_unique_id(func, Some(parse(args, PyValue::List(Vec::new()))?), kwargs),
    })
}

/// `{k: kwargs.get(k) for k in keys}`.
fn pick(kwargs: &PyValue, keys: &[String]) -> PyValue {
    let entries = match kwargs {
        PyValue::Dict(entries) => entries.as_slice(),
        _ => &[],
    };
    PyValue::dict(keys.iter().map(|key| {
        let found = entries.iter().rev().find(|(k, _)| k == key);
        (
            key.clone(),
            found.map_or(PyValue::Null, |(_, value)| value.clone()),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_value_computed_by_python() {
        // python3 -c 'import hashlib, json; print(hashlib.sha256(json.dumps(
        //   {"func": "tasks:f", "args": [1, "x"], "kwargs": {}}, sort_keys=True).encode()).hexdigest())'
        let args = PyValue::List(vec![PyValue::Int("1".into()), PyValue::Str("x".into())]);
        assert_eq!(
            gen_unique_id("tasks:f", Some(args), PyValue::Dict(vec![])),
            "346c869c53f27e1f9b21de532e4975fde7d6f96136f9af97c37b3dc71b03431b"
        );
    }

    /// Decodes the tagged values of `tests/data/unique_ids.json` (see its generator,
    /// `tests/python/gen_unique_vectors.py`).
    fn untag(value: &serde_json::Value) -> PyValue {
        let (tag, inner) = value
            .as_object()
            .and_then(|o| o.iter().next())
            .expect("a tagged value");
        match tag.as_str() {
            "n" => PyValue::Null,
            "b" => PyValue::Bool(inner.as_bool().unwrap()),
            "i" => PyValue::Int(inner.as_str().unwrap().to_owned()),
            "f" => PyValue::Float(inner.as_str().unwrap().parse().unwrap()),
            "s" => PyValue::Str(inner.as_str().unwrap().to_owned()),
            "l" => PyValue::List(inner.as_array().unwrap().iter().map(untag).collect()),
            "d" => PyValue::Dict(
                inner
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|pair| {
                        let key = match untag(&pair[0]) {
                            PyValue::Str(s) => s,
                            other => panic!("key {other:?}"),
                        };
                        (key, untag(&pair[1]))
                    })
                    .collect(),
            ),
            other => panic!("unknown tag {other}"),
        }
    }

    fn vectors() -> Vec<serde_json::Value> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/unique_ids.json");
        let text = std::fs::read_to_string(path).expect("read the vectors");
        let file: serde_json::Value = serde_json::from_str(&text).unwrap();
        file["cases"].as_array().unwrap().clone()
    }

    /// Every id the real TaskTiger computed, recomputed here.
    #[test]
    fn every_vector_from_python_tasktiger_matches() {
        let cases = vectors();
        assert!(cases.len() >= 200, "{} cases", cases.len());
        for case in &cases {
            let func = case["func"].as_str().unwrap();
            let args = if case["args"].is_null() {
                PyValue::List(vec![])
            } else {
                untag(&case["args"])
            };
            let kwargs = if case["kwargs"].is_null() {
                PyValue::Dict(vec![])
            } else {
                untag(&case["kwargs"])
            };
            let id = match case["unique_key"].as_array() {
                Some(keys) => {
                    let keys: Vec<String> = keys
                        .iter()
                        .map(|k| k.as_str().unwrap().to_owned())
                        .collect();
                    gen_unique_id(func, None, pick(&kwargs, &keys))
                }
                None => gen_unique_id(func, Some(args), kwargs),
            };
            assert_eq!(
                id,
                case["id"].as_str().unwrap(),
                "{}: {}",
                case["note"],
                func
            );
        }
    }
}
