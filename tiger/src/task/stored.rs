//! The task JSON in `t:task:<id>`, with TaskTiger's field names and order.
//!
//! [`NewTask`] is what `delay` writes; [`StoredTask`] is what the worker reads, leniently:
//! every field but `id` and `func` may be missing, as TaskTiger allows.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The JSON `delay` writes. Empty and unset fields are left out, as TaskTiger does.
#[derive(Debug, Serialize)]
pub(crate) struct NewTask<'a> {
    pub(crate) id: &'a str,
    pub(crate) func: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) args: Option<&'a RawValue>,
    pub(crate) time_last_queued: f64,
    pub(crate) scheduled_at: f64,
}

/// The JSON as a worker reads it, borrowing the arguments from the body.
#[derive(Debug, Deserialize)]
pub(crate) struct StoredTask<'a> {
    pub(crate) id: String,
    pub(crate) func: String,
    #[serde(default)]
    pub(crate) unique: bool,
    #[serde(default, borrow)]
    pub(crate) args: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub(crate) kwargs: Option<&'a RawValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_task_has_tasktiger_field_names_and_leaves_out_empty_args() {
        let args = RawValue::from_string("[1,\"x\"]".into()).unwrap();
        let with = NewTask {
            id: "ab",
            func: "m:f",
            args: Some(&args),
            time_last_queued: 1.5,
            scheduled_at: 1.5,
        };
        assert_eq!(
            serde_json::to_string(&with).unwrap(),
            r#"{"id":"ab","func":"m:f","args":[1,"x"],"time_last_queued":1.5,"scheduled_at":1.5}"#
        );
        let without = NewTask { args: None, ..with };
        assert!(!serde_json::to_string(&without).unwrap().contains("args"));
    }

    #[test]
    fn stored_task_reads_python_shapes() {
        let body = r#"{"id":"ab","func":"tests.tasks:simple","unique":true,"args":[1],
            "kwargs":{"a":2},"hard_timeout":3.5,"retry_method":["tasktiger.retry:_fixed",[60,3]],
            "time_last_queued":1.0}"#;
        let task: StoredTask<'_> = serde_json::from_str(body).unwrap();
        assert_eq!(task.func, "tests.tasks:simple");
        assert!(task.unique);
        assert_eq!(task.args.unwrap().get(), "[1]");
        assert_eq!(task.kwargs.unwrap().get(), "{\"a\":2}");
        let bare: StoredTask<'_> = serde_json::from_str(r#"{"id":"ab","func":"m:f"}"#).unwrap();
        assert!(bare.args.is_none() && !bare.unique);
    }
}
