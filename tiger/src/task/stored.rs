//! The task JSON in `t:task:<id>` as a worker reads it: leniently, since every field but
//! `id` and `func` may be missing, and a Python producer (or Lua's cjson) may have written
//! it. What `delay` writes is in [`crate::Delay`].

use serde::Deserialize;
use serde_json::value::RawValue;

/// The fields the worker uses, borrowing the arguments from the body.
#[derive(Debug, Deserialize)]
pub(crate) struct StoredTask<'a> {
    pub(crate) id: String,
    pub(crate) func: String,
    #[serde(default)]
    pub(crate) unique: bool,
    #[serde(default)]
    pub(crate) lock: bool,
    #[serde(default, deserialize_with = "list_or_empty")]
    pub(crate) lock_key: Option<Vec<String>>,
    #[serde(default, borrow)]
    pub(crate) args: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub(crate) kwargs: Option<&'a RawValue>,
    #[serde(default)]
    pub(crate) hard_timeout: Option<f64>,
    #[serde(default)]
    pub(crate) retry_method: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "list_or_empty")]
    pub(crate) retry_on: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) max_stored_executions: Option<u32>,
}

/// A list of strings, where `{}` (Lua cjson's empty list) and `null` count as absent.
fn list_or_empty<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Shape {
        List(Vec<String>),
        Empty(serde::de::IgnoredAny),
    }
    Ok(match Option::<Shape>::deserialize(deserializer)? {
        Some(Shape::List(list)) if !list.is_empty() => Some(list),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_python_shapes() {
        let body = r#"{"id":"ab","func":"tests.tasks:simple","unique":true,"lock":true,"lock_key":["a"],
            "args":[1],"kwargs":{"a":2},"hard_timeout":3.5,"retry_method":["tasktiger.retry:_fixed",[60,3]],
            "retry_on":["builtins:ValueError"],"max_stored_executions":0,"time_last_queued":1.0}"#;
        let task: StoredTask<'_> = serde_json::from_str(body).unwrap();
        assert_eq!(task.func, "tests.tasks:simple");
        assert!(task.unique && task.lock);
        assert_eq!(task.lock_key.as_deref(), Some(&["a".to_owned()][..]));
        assert_eq!(task.args.unwrap().get(), "[1]");
        assert_eq!(task.kwargs.unwrap().get(), "{\"a\":2}");
        assert_eq!(task.hard_timeout, Some(3.5));
        assert_eq!(task.retry_on.unwrap(), ["builtins:ValueError"]);
        assert_eq!(task.max_stored_executions, Some(0));
        let bare: StoredTask<'_> =
            serde_json::from_str(r#"{"id":"ab","func":"m:f","retry_on":{},"lock_key":null}"#)
                .unwrap();
        assert!(
            bare.args.is_none()
                && !bare.unique
                && bare.retry_on.is_none()
                && bare.lock_key.is_none()
        );
    }
}
