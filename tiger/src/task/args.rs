//! How a task's arguments travel: [`ArgsWriter`] turns the typed arguments of `delay` into a
//! JSON array (parameter order), [`Args`] hands them back to the generated decoder one
//! parameter at a time.
//!
//! A stored task may also carry `kwargs` (Python producers use them); a parameter is looked
//! up by position first, then by its name. A missing parameter decodes from `null`, so an
//! `Option` parameter may be left out.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, de::DeserializeOwned};
use serde_json::value::RawValue;

/// Writes typed arguments as one JSON array, without building a `serde_json::Value`.
///
/// JSON has no NaN or infinity, and serde_json writes a non-finite `f32` or `f64` as `null`
/// without a word, so the task would run (or fail to decode) with a value the caller never
/// passed. The writer refuses such an argument instead (`ArgsWriteError::NonFinite`).
/// It looks twice only when it must: serde_json writes every argument first, and only an
/// argument whose JSON holds `null` is looked at again, by `non_finite`.
#[derive(Debug)]
pub struct ArgsWriter {
    buf: Vec<u8>,
    /// How many arguments were appended.
    count: usize,
    error: Option<ArgsWriteError>,
}

/// Why [`ArgsWriter`] could not write a call's arguments. `delay` reports it as an
/// [`Error`](crate::Error), naming the task and the parameter.
#[derive(Debug)]
pub enum ArgsWriteError {
    /// serde_json refused an argument (a map whose keys are not strings, a `Serialize`
    /// implementation that failed).
    Json(serde_json::Error),
    /// An argument is, or holds, a NaN or an infinite float.
    NonFinite {
        /// The argument's position, from 0.
        index: usize,
        /// Where the float sits inside the argument, in `non_finite`'s notation (empty
        /// for the argument itself).
        path: String,
        /// The float.
        value: f64,
    },
}

impl Default for ArgsWriter {
    fn default() -> Self {
        ArgsWriter::new()
    }
}

impl ArgsWriter {
    /// An empty argument list.
    pub fn new() -> Self {
        ArgsWriter {
            buf: vec![b'['],
            count: 0,
            error: None,
        }
    }

    /// Appends one argument.
    pub fn arg<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        if self.error.is_none() {
            if self.count > 0 {
                self.buf.push(b',');
            }
            let start = self.buf.len();
            match serde_json::to_writer(&mut self.buf, value) {
                Err(err) => self.error = Some(ArgsWriteError::Json(err)),
                Ok(()) if mentions_null(&self.buf[start..]) => {
                    if let Some((path, value)) = non_finite(value) {
                        self.error = Some(ArgsWriteError::NonFinite {
                            index: self.count,
                            path,
                            value,
                        });
                    }
                }
                Ok(()) => {}
            }
        }
        self.count += 1;
        self
    }

    /// The JSON array, or `None` when there are no arguments (TaskTiger then leaves `args` out).
    pub fn finish(mut self) -> Result<Option<Box<RawValue>>, ArgsWriteError> {
        if let Some(err) = self.error {
            return Err(err);
        }
        if self.count == 0 {
            return Ok(None);
        }
        self.buf.push(b']');
        // serde_json wrote every element, so the bytes are UTF-8 JSON; the check is cheap.
        let text = String::from_utf8(self.buf)
            .map_err(|err| ArgsWriteError::Json(serde::ser::Error::custom(err)))?;
        RawValue::from_string(text)
            .map(Some)
            .map_err(ArgsWriteError::Json)
    }
}

/// Whether `json` holds `null`: where serde_json wrote a non-finite float, it wrote `null`.
/// The word inside a string is a false alarm, which costs only the second look.
fn mentions_null(json: &[u8]) -> bool {
    let mut rest = json;
    while let Some(at) = rest.iter().position(|&b| b == b'n') {
        if rest[at..].starts_with(b"null") {
            return true;
        }
        rest = &rest[at + 1..];
    }
    false
}

/// The first NaN or infinite float inside `value`, with its path: `[2]` for a list element,
/// `.name` for a struct field or a map entry whose key is a plain name, `["a key"]` for
/// any other key, all empty for `value` itself.
///
/// serde_json cannot tell: its serializer turns the float into `null` before anything
/// outside it sees the value. So `value` is serialized a second time, into a
/// [`ciborium::Value`] (CBOR's data model, which keeps floats as they are), and that tree
/// is searched. A well-kept crate rather than a hand-written serde `Serializer` of thirty
/// methods; the copy it makes is paid only by arguments whose JSON holds `null`.
///
/// One difference from serde_json: ciborium's serializer is not human-readable, and a
/// type may serialize differently then (`IpAddr` as bytes instead of text). A type that
/// writes a float in one form and not the other could be judged wrongly; no common type
/// does. An argument ciborium cannot serialize is taken as it is.
fn non_finite<T: Serialize + ?Sized>(value: &T) -> Option<(String, f64)> {
    let tree = ciborium::Value::serialized(value).ok()?;
    let mut path = String::new();
    let found = find_non_finite(&tree, &mut path)?;
    Some((path, found))
}

/// Searches `value`, extending `path` on the way down and leaving it at the float found.
fn find_non_finite(value: &ciborium::Value, path: &mut String) -> Option<f64> {
    use ciborium::Value;
    use std::fmt::Write as _;

    fn descend(path: &mut String, step: fmt::Arguments<'_>, value: &Value) -> Option<f64> {
        let len = path.len();
        let _ = path.write_fmt(step);
        let found = find_non_finite(value, path);
        if found.is_none() {
            path.truncate(len);
        }
        found
    }

    match value {
        Value::Float(float) if !float.is_finite() => Some(*float),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| descend(path, format_args!("[{i}]"), item)),
        // Only values: a key that is not a string, or a non-finite float key, already made
        // serde_json fail.
        Value::Map(entries) => entries.iter().find_map(|(key, item)| match key {
            Value::Text(name) if is_plain_name(name) => {
                descend(path, format_args!(".{name}"), item)
            }
            Value::Text(name) => descend(path, format_args!("[{name:?}]"), item),
            Value::Integer(number) => {
                descend(path, format_args!("[{}]", i128::from(*number)), item)
            }
            other => descend(path, format_args!("[{other:?}]"), item),
        }),
        Value::Tag(_, inner) => find_non_finite(inner, path),
        _ => None,
    }
}

fn is_plain_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Why stored arguments do not fit the task's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError(String);

impl ArgError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        ArgError(message.into())
    }
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgError {}

/// The stored arguments of one task, borrowed from its JSON body.
#[derive(Debug)]
pub struct Args<'a> {
    positional: Vec<&'a RawValue>,
    keyword: BTreeMap<String, &'a RawValue>,
}

impl<'a> Args<'a> {
    /// Splits the stored `args` and `kwargs`. `{}` is accepted for an empty `args`, which
    /// is how Lua's cjson re-encodes an empty list.
    pub(crate) fn parse(
        args: Option<&'a RawValue>,
        kwargs: Option<&'a RawValue>,
    ) -> Result<Self, ArgError> {
        let positional = match args.map(|raw| (raw, raw.get().trim_start().as_bytes().first())) {
            None | Some((_, Some(b'n'))) => Vec::new(),
            Some((raw, Some(b'['))) => serde_json::from_str(raw.get()).map_err(|err| {
                ArgError::new(format!("`args` is not a JSON list: {}", message(&err)))
            })?,
            Some((raw, Some(b'{'))) if is_empty_object(raw) => Vec::new(),
            Some((raw, _)) => {
                return Err(ArgError::new(format!(
                    "`args` must be a JSON list, found `{}`",
                    preview(raw)
                )));
            }
        };
        let keyword = match kwargs.map(|raw| (raw, raw.get().trim_start().as_bytes().first())) {
            None | Some((_, Some(b'n'))) => BTreeMap::new(),
            Some((raw, Some(b'{'))) => serde_json::from_str(raw.get()).map_err(|err| {
                ArgError::new(format!("`kwargs` is not a JSON object: {}", message(&err)))
            })?,
            Some((raw, Some(b'['))) if raw.get().trim() == "[]" => BTreeMap::new(),
            Some((raw, _)) => {
                return Err(ArgError::new(format!(
                    "`kwargs` must be a JSON object, found `{}`",
                    preview(raw)
                )));
            }
        };
        Ok(Args {
            positional,
            keyword,
        })
    }

    /// Checks that the arguments can all be bound to the parameters `names`: no more
    /// positional arguments than parameters, every keyword a parameter name, and no
    /// parameter given both ways.
    pub fn check(&self, names: &[&str]) -> Result<(), ArgError> {
        if self.positional.len() > names.len() {
            return Err(ArgError::new(format!(
                "got {} positional arguments, the task takes {}",
                self.positional.len(),
                names.len()
            )));
        }
        for key in self.keyword.keys() {
            match names.iter().position(|name| name == key) {
                None => {
                    return Err(ArgError::new(format!(
                        "unexpected keyword argument `{key}`; the parameters are {}",
                        list(names)
                    )));
                }
                Some(index) if index < self.positional.len() => {
                    return Err(ArgError::new(format!(
                        "`{key}` is given both by position and by keyword"
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Decodes parameter `index`, named `name`.
    pub fn get<T: DeserializeOwned>(&self, index: usize, name: &str) -> Result<T, ArgError> {
        let raw = self
            .positional
            .get(index)
            .or_else(|| self.keyword.get(name));
        match raw {
            Some(raw) => serde_json::from_str(raw.get()).map_err(|err| {
                ArgError::new(format!(
                    "argument `{name}` (`{}`) does not decode as `{}`: {}",
                    preview(raw),
                    std::any::type_name::<T>(),
                    message(&err)
                ))
            }),
            None => T::deserialize(serde_json::Value::Null).map_err(|_| {
                ArgError::new(format!(
                    "missing argument `{name}` of type `{}`",
                    std::any::type_name::<T>()
                ))
            }),
        }
    }
}

/// serde_json's message without its ` at line 1 column 7` suffix, which says nothing useful
/// about one argument.
fn message(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    }
}

fn is_empty_object(raw: &RawValue) -> bool {
    let inner = raw.get().trim();
    inner.len() >= 2 && inner[1..inner.len() - 1].trim().is_empty()
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The start of a JSON value, for error messages.
fn preview(raw: &RawValue) -> String {
    const MAX: usize = 80;
    let text = raw.get();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn writer_makes_a_json_array_in_order() {
        let args = ArgsWriter::new()
            .arg(&1u8)
            .arg("é")
            .arg(&Some(2.5))
            .finish()
            .unwrap()
            .unwrap();
        assert_eq!(args.get(), r#"[1,"é",2.5]"#);
        assert!(ArgsWriter::new().finish().unwrap().is_none());
    }

    /// The index, path and float of the writer's refusal, or `None` when it wrote the list.
    fn refusal(writer: ArgsWriter) -> Option<(usize, String, String)> {
        match writer.finish() {
            Ok(_) => None,
            Err(ArgsWriteError::NonFinite { index, path, value }) => {
                Some((index, path, value.to_string()))
            }
            Err(ArgsWriteError::Json(err)) => panic!("not a non-finite refusal: {err}"),
        }
    }

    #[derive(serde::Serialize)]
    struct Point {
        x: f64,
        y: f32,
    }

    #[derive(serde::Serialize)]
    enum Shape {
        Circle { radius: f64 },
    }

    #[test]
    fn writer_refuses_non_finite_floats_and_says_where() {
        let nan = ArgsWriter::new().arg("a").arg(&f64::NAN);
        assert_eq!(refusal(nan), Some((1, String::new(), "NaN".into())));
        let list = ArgsWriter::new().arg(&vec![Some(1.0), None, Some(f64::INFINITY)]);
        assert_eq!(refusal(list), Some((0, "[2]".into(), "inf".into())));
        let map = BTreeMap::from([("ok", 1.0), ("the key", f64::NEG_INFINITY)]);
        let refused = refusal(ArgsWriter::new().arg(&1).arg(&map));
        assert_eq!(refused, Some((1, r#"["the key"]"#.into(), "-inf".into())));
        let points = vec![
            Point { x: 1.0, y: 2.0 },
            Point {
                x: 0.5,
                y: f32::NAN,
            },
        ];
        let refused = refusal(ArgsWriter::new().arg(&points));
        assert_eq!(refused, Some((0, "[1].y".into(), "NaN".into())));
        let shape = Shape::Circle {
            radius: f64::INFINITY,
        };
        let refused = refusal(ArgsWriter::new().arg(&shape));
        assert_eq!(refused, Some((0, ".Circle.radius".into(), "inf".into())));
        let keyed = BTreeMap::from([(7u8, f64::NAN)]);
        let refused = refusal(ArgsWriter::new().arg(&keyed));
        assert_eq!(refused, Some((0, "[7]".into(), "NaN".into())));
    }

    #[test]
    fn writer_keeps_finite_floats_and_real_nulls() {
        // `null` from `None` and the word in a string take the second look and pass it.
        let args = ArgsWriter::new()
            .arg(&None::<f64>)
            .arg("null")
            .arg(&vec![f64::MAX, f64::MIN_POSITIVE, -0.0])
            .arg(&f32::MAX)
            .finish()
            .unwrap()
            .unwrap();
        assert_eq!(
            args.get(),
            r#"[null,"null",[1.7976931348623157e+308,2.2250738585072014e-308,-0.0],3.4028235e+38]"#
        );
        let first_error_wins = ArgsWriter::new()
            .arg(&BTreeMap::from([((1, 2), 3)]))
            .arg(&f64::NAN)
            .finish();
        assert!(matches!(first_error_wins, Err(ArgsWriteError::Json(_))));
    }

    #[test]
    fn null_is_found_anywhere() {
        assert!(mentions_null(b"null"));
        assert!(mentions_null(b"[1,nnull]"));
        assert!(mentions_null(b"{\"a\":[nul,null]}"));
        assert!(!mentions_null(b"[\"nul\",\"nil\",\"n\"]"));
        assert!(!mentions_null(b""));
    }

    #[test]
    fn positional_then_keyword_then_null() {
        let a = raw("[1]");
        let k = raw(r#"{"b":"two"}"#);
        let args = Args::parse(Some(&a), Some(&k)).unwrap();
        args.check(&["a", "b", "c"]).unwrap();
        assert_eq!(args.get::<u32>(0, "a").unwrap(), 1);
        assert_eq!(args.get::<String>(1, "b").unwrap(), "two");
        assert_eq!(args.get::<Option<u8>>(2, "c").unwrap(), None);
        let err = args.get::<u8>(2, "c").unwrap_err();
        assert!(err.to_string().contains("missing argument `c`"), "{err}");
    }

    #[test]
    fn lenient_empty_shapes_and_clear_errors() {
        let empty_obj = raw("{}");
        let empty_list = raw("[]");
        let args = Args::parse(Some(&empty_obj), Some(&empty_list)).unwrap();
        args.check(&[]).unwrap();
        let string = raw(r#""nope""#);
        let err = Args::parse(Some(&string), None).unwrap_err();
        assert!(err.to_string().contains("must be a JSON list"), "{err}");
        let two = raw("[1,2]");
        let err = Args::parse(Some(&two), None)
            .unwrap()
            .check(&["a"])
            .unwrap_err();
        assert!(err.to_string().contains("2 positional arguments"), "{err}");
        let k = raw(r#"{"z":1}"#);
        let err = Args::parse(None, Some(&k))
            .unwrap()
            .check(&["a"])
            .unwrap_err();
        assert!(
            err.to_string().contains("unexpected keyword argument `z`"),
            "{err}"
        );
        let wrong = raw(r#"["x"]"#);
        let err = Args::parse(Some(&wrong), None)
            .unwrap()
            .get::<u64>(0, "n")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "argument `n` (`\"x\"`) does not decode as `u64`: invalid type: string \"x\", expected u64"
        );
    }
}
