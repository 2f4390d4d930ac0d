//! JSON as Python's `json` module sees and writes it, for ids that must be byte-identical to
//! TaskTiger's `gen_unique_id`: `sha256(json.dumps({"func", "args", "kwargs"},
//! sort_keys=True))`.
//!
//! [`PyValue`] is the value tree: integers of any size (kept as decimal text), floats,
//! strings, lists and dicts. Values reach it from JSON text ([`PyValue::parse`]: the
//! arguments as serde_json wrote them, or as a Python producer stored them) and leave it as
//! `json.dumps(..., sort_keys=True)` would print them ([`PyValue::dumps`]): `", "` and
//! `": "` separators, keys sorted, non-ASCII as lowercase `\uXXXX` (surrogate pairs above
//! U+FFFF), floats in Python's `repr` (`1e-05`, `1e+16`, `-0.0`), `NaN` and `Infinity` as
//! Python allows them.

use std::fmt::Write as _;

/// A JSON value with Python's distinctions: integers are unbounded, floats are floats even
/// when integral.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PyValue {
    Null,
    Bool(bool),
    /// Decimal text, optionally with a leading `-`.
    Int(String),
    Float(f64),
    Str(String),
    List(Vec<PyValue>),
    /// Entries in insertion order; a repeated key keeps its last value, as a dict does.
    Dict(Vec<(String, PyValue)>),
}

impl PyValue {
    /// A dict from `(name, value)` pairs with string keys.
    pub(crate) fn dict<I: IntoIterator<Item = (String, PyValue)>>(entries: I) -> PyValue {
        PyValue::Dict(entries.into_iter().collect())
    }

    /// `json.dumps(self, sort_keys=True)`.
    pub(crate) fn dumps(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            PyValue::Null => out.push_str("null"),
            PyValue::Bool(true) => out.push_str("true"),
            PyValue::Bool(false) => out.push_str("false"),
            PyValue::Int(digits) => out.push_str(digits),
            PyValue::Float(f) => write_float(*f, out),
            PyValue::Str(s) => write_str(s, out),
            PyValue::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write(out);
                }
                out.push(']');
            }
            PyValue::Dict(entries) => {
                // Later entries win over earlier ones with the same key, as in a dict.
                let mut unique: Vec<&(String, PyValue)> = Vec::with_capacity(entries.len());
                for entry in entries.iter().rev() {
                    if !unique.iter().any(|seen| seen.0 == entry.0) {
                        unique.push(entry);
                    }
                }
                // UTF-8 byte order is code point order, which is how Python sorts `str`.
                unique.sort_by(|a, b| a.0.cmp(&b.0));
                out.push('{');
                for (i, (key, value)) in unique.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_str(key, out);
                    out.push_str(": ");
                    value.write(out);
                }
                out.push('}');
            }
        }
    }

    /// Parses JSON text as Python's `json.loads` would: integers keep every digit, and the
    /// literals `NaN`, `Infinity` and `-Infinity` are accepted.
    pub(crate) fn parse(text: &str) -> Result<PyValue, PyJsonError> {
        let mut parser = Parser {
            bytes: text.as_bytes(),
            text,
            pos: 0,
        };
        let value = parser.value(0)?;
        parser.skip_ws();
        if parser.pos != parser.bytes.len() {
            return Err(parser.error("trailing characters"));
        }
        Ok(value)
    }
}

/// Python's `float.__repr__`: the shortest digits that round-trip, in fixed notation when
/// the decimal exponent is in -4..16, else in exponent notation with a signed, at least
/// two-digit exponent. JSON's extensions for the non-finite values.
fn write_float(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    // Rust's `{:e}` prints the shortest round-trip digits: `-1.2345e-5`.
    let sci = format!("{f:e}");
    let (mantissa, exponent) = sci.split_once('e').expect("`{:e}` has an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` exponent is an integer");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    out.push_str(sign);
    if !(-4..16).contains(&exponent) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exponent < 0 { '-' } else { '+' },
            exponent.unsigned_abs()
        );
    } else if exponent >= 0 {
        let int_len = exponent as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', int_len - digits.len()));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exponent - 1) as usize));
        out.push_str(&digits);
    }
}

/// A JSON string with `ensure_ascii`: everything outside printable ASCII is escaped.
fn write_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Why a value cannot be a [`PyValue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PyJsonError(pub(crate) String);

impl std::fmt::Display for PyJsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PyJsonError {}

/// A recursive-descent JSON reader that keeps integers exact.
struct Parser<'a> {
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
}

/// Deeper nesting than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 512;

impl Parser<'_> {
    fn error(&self, what: &str) -> PyJsonError {
        PyJsonError(format!("{what} at byte {}", self.pos))
    }

    fn skip_ws(&mut self) {
        while matches!(self.bytes.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, literal: &str) -> bool {
        if self.text[self.pos..].starts_with(literal) {
            self.pos += literal.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<PyValue, PyJsonError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        self.skip_ws();
        match self.bytes.get(self.pos) {
            None => Err(self.error("unexpected end")),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(PyValue::Str),
            Some(b't') if self.eat("true") => Ok(PyValue::Bool(true)),
            Some(b'f') if self.eat("false") => Ok(PyValue::Bool(false)),
            Some(b'n') if self.eat("null") => Ok(PyValue::Null),
            Some(b'N') if self.eat("NaN") => Ok(PyValue::Float(f64::NAN)),
            Some(b'I') if self.eat("Infinity") => Ok(PyValue::Float(f64::INFINITY)),
            Some(b'-') if self.eat("-Infinity") => Ok(PyValue::Float(f64::NEG_INFINITY)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("unexpected character")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<PyValue, PyJsonError> {
        self.pos += 1;
        let mut entries = Vec::new();
        self.skip_ws();
        if self.eat("}") {
            return Ok(PyValue::Dict(entries));
        }
        loop {
            self.skip_ws();
            if self.bytes.get(self.pos) != Some(&b'"') {
                return Err(self.error("expected a string key"));
            }
            let key = self.string()?;
            self.skip_ws();
            if !self.eat(":") {
                return Err(self.error("expected `:`"));
            }
            let value = self.value(depth + 1)?;
            entries.push((key, value));
            self.skip_ws();
            if self.eat(",") {
                continue;
            }
            if self.eat("}") {
                return Ok(PyValue::Dict(entries));
            }
            return Err(self.error("expected `,` or `}`"));
        }
    }

    fn array(&mut self, depth: usize) -> Result<PyValue, PyJsonError> {
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.eat("]") {
            return Ok(PyValue::List(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            if self.eat(",") {
                continue;
            }
            if self.eat("]") {
                return Ok(PyValue::List(items));
            }
            return Err(self.error("expected `,` or `]`"));
        }
    }

    fn number(&mut self) -> Result<PyValue, PyJsonError> {
        let start = self.pos;
        if self.bytes[self.pos] == b'-' {
            self.pos += 1;
        }
        let mut float = false;
        while let Some(&b) = self.bytes.get(self.pos) {
            match b {
                b'0'..=b'9' => {}
                b'.' | b'e' | b'E' | b'+' | b'-' => float = true,
                _ => break,
            }
            self.pos += 1;
        }
        let text = &self.text[start..self.pos];
        if text == "-" {
            return Err(self.error("a lone `-`"));
        }
        if float {
            text.parse()
                .map(PyValue::Float)
                .map_err(|_| self.error("a malformed number"))
        } else {
            Ok(PyValue::Int(text.to_owned()))
        }
    }

    fn hex4(&mut self) -> Result<u16, PyJsonError> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("a short `\\u` escape"))?;
        let unit =
            u16::from_str_radix(digits, 16).map_err(|_| self.error("a malformed `\\u` escape"))?;
        self.pos += 4;
        Ok(unit)
    }

    fn string(&mut self) -> Result<String, PyJsonError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let rest = &self.text[self.pos..];
            let stop = rest
                .find(['"', '\\'])
                .ok_or_else(|| self.error("an unterminated string"))?;
            out.push_str(&rest[..stop]);
            self.pos += stop;
            if self.bytes[self.pos] == b'"' {
                self.pos += 1;
                return Ok(out);
            }
            self.pos += 1;
            let escape = *self
                .bytes
                .get(self.pos)
                .ok_or_else(|| self.error("an unterminated escape"))?;
            self.pos += 1;
            match escape {
                b'"' => out.push('"'),
                b'\\' => out.push('\\'),
                b'/' => out.push('/'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    let unit = self.hex4()?;
                    let c = if (0xd800..0xdc00).contains(&unit) && self.eat("\\u") {
                        let low = self.hex4()?;
                        char::decode_utf16([unit, low]).next().and_then(Result::ok)
                    } else {
                        char::from_u32(u32::from(unit))
                    };
                    // A lone surrogate has no Rust `char`; it becomes U+FFFD.
                    out.push(c.unwrap_or(char::REPLACEMENT_CHARACTER));
                }
                _ => return Err(self.error("an unknown escape")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(f: f64) -> String {
        PyValue::Float(f).dumps()
    }

    #[test]
    fn floats_print_like_python_repr() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e-5, "1.5e-05"),
            (123.456, "123.456"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.25e16, "1.25e+16"),
            (1e100, "1e+100"),
            (-2.5e-300, "-2.5e-300"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for &(f, want) in cases {
            assert_eq!(float(f), want, "{f:e}");
        }
    }

    #[test]
    fn strings_are_ascii_with_python_escapes() {
        let s = PyValue::Str("a\"\\/\n\t\u{7f}é\u{1F42F}\u{1}".into());
        assert_eq!(s.dumps(), r#""a\"\\/\n\t\u007f\u00e9\ud83d\udc2f\u0001""#);
    }

    #[test]
    fn dicts_sort_keys_and_use_python_separators() {
        let value =
            PyValue::parse(r#"{"b": [1, 2.0], "a": {"z": null, "y": true}, "é": 1, "Z": 2}"#)
                .unwrap();
        assert_eq!(
            value.dumps(),
            r#"{"Z": 2, "a": {"y": true, "z": null}, "b": [1, 2.0], "\u00e9": 1}"#
        );
    }

    /// What serde_json writes for Rust values reads back as Python would hold it.
    #[test]
    fn serde_json_output_reads_as_python_values() {
        #[derive(serde::Serialize)]
        enum E {
            Unit,
            New(u8),
            Tuple(u8, u8),
            Struct { a: u8 },
        }
        let text = serde_json::to_string(&(
            E::Unit,
            E::New(1),
            E::Tuple(1, 2),
            E::Struct { a: 3 },
            u128::MAX,
            0.1f32,
            1e-7,
        ))
        .unwrap();
        assert_eq!(
            PyValue::parse(&text).unwrap().dumps(),
            r#"["Unit", {"New": 1}, {"Tuple": [1, 2]}, {"Struct": {"a": 3}}, 340282366920938463463374607431768211455, 0.1, 1e-07]"#
        );
    }

    #[test]
    fn parsing_keeps_big_integers_and_python_literals() {
        let text = r#" {"n": 123456789012345678901234567890, "f": 1.0, "x": [NaN, -Infinity, "\ud83d\udc2f\u00e9"], "n": -5} "#;
        let value = PyValue::parse(text).unwrap();
        assert_eq!(
            value.dumps(),
            r#"{"f": 1.0, "n": -5, "x": [NaN, -Infinity, "\ud83d\udc2f\u00e9"]}"#
        );
        assert_eq!(
            PyValue::parse("123456789012345678901234567890")
                .unwrap()
                .dumps(),
            "123456789012345678901234567890"
        );
        for bad in ["", "[1,", "{\"a\" 1}", "tru", "\"\\x\"", "1 2", "-"] {
            assert!(PyValue::parse(bad).is_err(), "{bad:?}");
        }
    }
}
