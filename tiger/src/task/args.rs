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
#[derive(Debug)]
pub struct ArgsWriter {
    buf: Vec<u8>,
    error: Option<serde_json::Error>,
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
            error: None,
        }
    }

    /// Appends one argument.
    pub fn arg<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        if self.error.is_none() {
            if self.buf.len() > 1 {
                self.buf.push(b',');
            }
            if let Err(err) = serde_json::to_writer(&mut self.buf, value) {
                self.error = Some(err);
            }
        }
        self
    }

    /// The JSON array, or `None` when there are no arguments (TaskTiger then leaves `args` out).
    pub fn finish(mut self) -> Result<Option<Box<RawValue>>, serde_json::Error> {
        if let Some(err) = self.error {
            return Err(err);
        }
        if self.buf.len() == 1 {
            return Ok(None);
        }
        self.buf.push(b']');
        // serde_json wrote every element, so the bytes are UTF-8 JSON; the check is cheap.
        let text = String::from_utf8(self.buf).map_err(serde::ser::Error::custom)?;
        RawValue::from_string(text).map(Some)
    }
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
