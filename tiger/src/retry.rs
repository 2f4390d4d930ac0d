//! Retry methods: how long to wait before the n-th retry, and when to stop.
//!
//! The built-in methods are TaskTiger's and are stored as TaskTiger stores them, so a Python
//! worker reads them: `fixed(60, 3)` is `["tasktiger.retry:_fixed", [60, 3]]`. `n` is the
//! number of failed executions so far, this one included (never less than 1), read from
//! `t:task:<id>:executions_count`, so a retry after a crash still counts.

use std::time::Duration;

use serde_json::{Value, json};

/// How a task is retried. Build one with [`fixed`], [`linear`], [`exponential`] or
/// [`RetryMethod::custom`].
#[derive(Debug, Clone, Copy)]
pub enum RetryMethod {
    /// Wait `delay` seconds before each retry, up to `max` retries.
    Fixed {
        /// Seconds before each retry.
        delay: f64,
        /// Retries at most.
        max: u32,
    },
    /// Wait `delay + increment·(n−1)` seconds, up to `max` retries.
    Linear {
        /// Seconds before the first retry.
        delay: f64,
        /// Seconds added per retry.
        increment: f64,
        /// Retries at most.
        max: u32,
    },
    /// Wait `delay·factor^(n−1)` seconds, up to `max` retries.
    Exponential {
        /// Seconds before the first retry.
        delay: f64,
        /// Growth per retry.
        factor: f64,
        /// Retries at most.
        max: u32,
    },
    /// A function of the retry number; `None` stops retrying. Stored under `name` (with no
    /// arguments), so only workers that have the same task can compute it.
    Custom {
        /// The stored name, `module:function`.
        name: &'static str,
        /// The function.
        delay: fn(u32) -> Option<Duration>,
    },
}

/// Refuses a NaN or infinite number, which JSON cannot store (it would become `null`). In
/// an attribute this is a compile-time error.
const fn finite(value: f64) -> f64 {
    assert!(
        value.is_finite(),
        "a retry method's numbers must be finite (JSON has no NaN or infinity)"
    );
    value
}

/// `fixed(delay, max)`: `delay` seconds before each of at most `max` retries.
///
/// # Panics
/// If `delay` is NaN or infinite, as every retry method constructor does.
pub const fn fixed(delay: f64, max: u32) -> RetryMethod {
    RetryMethod::Fixed {
        delay: finite(delay),
        max,
    }
}

/// `linear(delay, increment, max)`: `delay + increment·(n−1)` seconds.
///
/// # Panics
/// If a number is NaN or infinite.
pub const fn linear(delay: f64, increment: f64, max: u32) -> RetryMethod {
    RetryMethod::Linear {
        delay: finite(delay),
        increment: finite(increment),
        max,
    }
}

/// `exponential(delay, factor, max)`: `delay·factor^(n−1)` seconds.
///
/// # Panics
/// If a number is NaN or infinite.
pub const fn exponential(delay: f64, factor: f64, max: u32) -> RetryMethod {
    RetryMethod::Exponential {
        delay: finite(delay),
        factor: finite(factor),
        max,
    }
}

impl PartialEq for RetryMethod {
    /// Built-in methods are equal when their numbers are; custom ones when their names are.
    fn eq(&self, other: &RetryMethod) -> bool {
        match (self, other) {
            (RetryMethod::Custom { name: a, .. }, RetryMethod::Custom { name: b, .. }) => a == b,
            (RetryMethod::Custom { .. }, _) | (_, RetryMethod::Custom { .. }) => false,
            _ => self.to_json() == other.to_json(),
        }
    }
}

const FIXED: &str = "tasktiger.retry:_fixed";
const LINEAR: &str = "tasktiger.retry:_linear";
const EXPONENTIAL: &str = "tasktiger.retry:_exponential";

impl RetryMethod {
    /// A method computed by `delay`, stored under `name`.
    pub const fn custom(name: &'static str, delay: fn(u32) -> Option<Duration>) -> RetryMethod {
        RetryMethod::Custom { name, delay }
    }

    /// Seconds to wait before retry number `n` (1 for the first), or `None` when retries are
    /// used up (TaskTiger's `StopRetry`).
    pub fn delay(&self, n: u32) -> Option<f64> {
        let n = n.max(1);
        let steps = f64::from(n - 1);
        let (delay, max) = match *self {
            RetryMethod::Fixed { delay, max } => (delay, max),
            RetryMethod::Linear {
                delay,
                increment,
                max,
            } => (delay + increment * steps, max),
            RetryMethod::Exponential { delay, factor, max } => (delay * factor.powf(steps), max),
            RetryMethod::Custom { delay, .. } => return delay(n).map(|d| d.as_secs_f64()),
        };
        (n <= max).then_some(delay)
    }

    /// The stored form, `[name, [args...]]`.
    pub(crate) fn to_json(self) -> Value {
        match self {
            RetryMethod::Fixed { delay, max } => json!([FIXED, [number(delay), max]]),
            RetryMethod::Linear {
                delay,
                increment,
                max,
            } => {
                json!([LINEAR, [number(delay), number(increment), max]])
            }
            RetryMethod::Exponential { delay, factor, max } => {
                json!([EXPONENTIAL, [number(delay), number(factor), max]])
            }
            RetryMethod::Custom { name, .. } => json!([name, []]),
        }
    }
}

/// A stored retry method, read from task JSON or an execution record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StoredRetry {
    /// One of TaskTiger's built-in methods.
    Builtin(RetryMethod),
    /// Another function, known only by name.
    Named(String),
}

impl StoredRetry {
    /// Reads `[name, [args...]]`; `{}` stands for an empty argument list, as Lua's cjson
    /// writes it.
    pub(crate) fn from_json(value: &Value) -> Result<StoredRetry, String> {
        let parts = value
            .as_array()
            .filter(|p| p.len() == 2)
            .ok_or("expected `[name, [args]]`")?;
        let name = parts[0].as_str().ok_or("the method name is not a string")?;
        let args: Vec<f64> = match &parts[1] {
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_f64().ok_or("a non-numeric argument"))
                .collect::<Result<_, _>>()?,
            Value::Object(map) if map.is_empty() => Vec::new(),
            _ => return Err("the arguments are not a list".into()),
        };
        let max = |v: f64| -> Result<u32, String> {
            if v >= 0.0 && v <= f64::from(u32::MAX) {
                Ok(v as u32)
            } else {
                Err(format!("`{v}` is not a retry count"))
            }
        };
        let method = match (name, args.as_slice()) {
            (FIXED, &[delay, m]) => fixed(delay, max(m)?),
            (LINEAR, &[delay, increment, m]) => linear(delay, increment, max(m)?),
            (EXPONENTIAL, &[delay, factor, m]) => exponential(delay, factor, max(m)?),
            (FIXED | LINEAR | EXPONENTIAL, _) => {
                return Err(format!("`{name}` with arguments {args:?}"));
            }
            _ => return Ok(StoredRetry::Named(name.to_owned())),
        };
        Ok(StoredRetry::Builtin(method))
    }
}

/// A number as Python would have written it: integral values without `.0`.
fn number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9_007_199_254_740_992.0 {
        json!(value as i64)
    } else {
        json!(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TaskTiger's own arithmetic for the three methods (its `test_retry_method` cases).
    #[test]
    #[should_panic(expected = "must be finite")]
    fn non_finite_numbers_are_refused() {
        let _ = fixed(f64::NAN, 3);
    }

    #[test]
    fn tasktiger_maths() {
        let f = fixed(2.0, 3);
        assert_eq!(
            [1, 2, 3, 4].map(|n| f.delay(n)),
            [Some(2.0), Some(2.0), Some(2.0), None]
        );
        let l = linear(1.0, 2.0, 3);
        assert_eq!(
            [1, 2, 3, 4].map(|n| l.delay(n)),
            [Some(1.0), Some(3.0), Some(5.0), None]
        );
        let e = exponential(1.0, 2.0, 4);
        assert_eq!(
            [1, 2, 3, 4, 5].map(|n| e.delay(n)),
            [Some(1.0), Some(2.0), Some(4.0), Some(8.0), None]
        );
        assert_eq!(f.delay(0), Some(2.0), "n is never less than 1");
        let c = RetryMethod::custom("app:backoff", |n| {
            (n < 3).then(|| Duration::from_millis(u64::from(n) * 500))
        });
        assert_eq!([1, 2, 3].map(|n| c.delay(n)), [Some(0.5), Some(1.0), None]);
    }

    #[test]
    fn stored_as_tasktiger_stores_them_and_read_back() {
        assert_eq!(
            fixed(60.0, 3).to_json().to_string(),
            r#"["tasktiger.retry:_fixed",[60,3]]"#
        );
        assert_eq!(
            linear(0.5, 1.0, 2).to_json().to_string(),
            r#"["tasktiger.retry:_linear",[0.5,1,2]]"#
        );
        assert_eq!(
            exponential(1.0, 1.5, 9).to_json().to_string(),
            r#"["tasktiger.retry:_exponential",[1,1.5,9]]"#
        );
        for method in [
            fixed(60.0, 3),
            linear(0.5, 1.0, 2),
            exponential(1.0, 1.5, 9),
        ] {
            assert_eq!(
                StoredRetry::from_json(&method.to_json()),
                Ok(StoredRetry::Builtin(method))
            );
        }
        let named = serde_json::json!(["app.retry:custom", {}]);
        assert_eq!(
            StoredRetry::from_json(&named),
            Ok(StoredRetry::Named("app.retry:custom".into()))
        );
        assert!(
            StoredRetry::from_json(&serde_json::json!(["tasktiger.retry:_fixed", [1]])).is_err()
        );
        assert!(StoredRetry::from_json(&serde_json::json!("nope")).is_err());
    }
}
