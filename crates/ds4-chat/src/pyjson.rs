//! Python `json.loads` / `json.dumps(ensure_ascii=False)` semantics, byte for byte.
//!
//! The official encoder re-serializes tool schemas, `response_format` and non-string
//! tool-call arguments with Python's `json` module, so the prompt bytes depend on
//! Python's choices: `", "` / `": "` separators, key insertion order, float `repr`
//! (`1e+100`, `1e-07`, `1.0`), exact big integers, lowercase `\u00XX` escapes for
//! control characters only. `serde_json` differs on floats and (without
//! `preserve_order`) on key order, hence this small dedicated value model.

use std::fmt::Write as _;

/// A JSON value as Python's `json.loads` would hold it.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    Null,
    Bool(bool),
    /// Python `int`: arbitrary precision, kept as its canonical decimal text.
    Int(String),
    /// Python `float` (JSON numbers with a fraction or exponent, and the
    /// non-standard `NaN` / `Infinity` literals Python accepts).
    Float(f64),
    Str(String),
    Array(Vec<PyValue>),
    /// A `dict`: insertion order kept; a repeated key keeps its first position and
    /// takes the last value, as Python's dict assignment does.
    Object(Vec<(String, PyValue)>),
}

/// Why a text is not JSON for Python's `json.loads`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at byte {offset}: {what}")]
pub struct PyJsonError {
    pub offset: usize,
    pub what: &'static str,
}

/// Parse like Python's `json.loads(text)` (strict mode: raw control characters inside
/// strings are rejected; `NaN`, `Infinity`, `-Infinity` are accepted).
pub fn loads(text: &str) -> Result<PyValue, PyJsonError> {
    let mut p = Parser {
        s: text.as_bytes(),
        text,
        i: 0,
        depth: 0,
    };
    p.ws();
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("extra data"));
    }
    Ok(v)
}

/// Serialize like Python's `json.dumps(value, ensure_ascii=False)`.
pub fn dumps(v: &PyValue) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    out
}

/// Python's JSON string literal for `s` (ensure_ascii=False).
pub fn dumps_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    escape_str_into(&mut out, s);
    out.push('"');
    out
}

/// Append the body of a Python JSON string literal (no quotes). Escaping is per
/// character, so escaping the pieces of a string and concatenating equals escaping
/// the whole: streamed argument deltas rely on this.
pub fn escape_str_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            // Python writes the remaining C0 controls as lowercase `\u00xx`; DEL,
            // U+2028 and every other character are written raw.
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

fn write_value(out: &mut String, v: &PyValue) {
    match v {
        PyValue::Null => out.push_str("null"),
        PyValue::Bool(true) => out.push_str("true"),
        PyValue::Bool(false) => out.push_str("false"),
        PyValue::Int(digits) => out.push_str(digits),
        PyValue::Float(f) => out.push_str(&float_repr(*f)),
        PyValue::Str(s) => {
            out.push('"');
            escape_str_into(out, s);
            out.push('"');
        }
        PyValue::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        PyValue::Object(members) => {
            out.push('{');
            for (i, (k, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push('"');
                escape_str_into(out, k);
                out.push_str("\": ");
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

/// Python's `float.__repr__`: the shortest round-tripping digits, in positional
/// notation when the decimal exponent is in [-4, 16), otherwise scientific with a
/// signed, at least two-digit exponent. `json.dumps` writes non-finite values as
/// `NaN` / `Infinity` / `-Infinity`.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    // Rust's `{:e}` yields exactly the shortest round-trip digits, e.g. "-1.25e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::from(sign);
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else if exp + 1 >= n {
            out.push_str(&digits);
            for _ in 0..(exp + 1 - n) {
                out.push('0');
            }
            out.push_str(".0");
        } else {
            let point = (exp + 1) as usize;
            out.push_str(&digits[..point]);
            out.push('.');
            out.push_str(&digits[point..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
    }
    out
}

/// Nesting limit: far above any real schema, low enough that hostile input cannot
/// exhaust the stack.
const MAX_DEPTH: usize = 512;

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn err(&self, what: &'static str) -> PyJsonError {
        PyJsonError {
            offset: self.i,
            what,
        }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<PyValue, PyJsonError> {
        match self.s.get(self.i) {
            None => Err(self.err("expecting value")),
            Some(b'{') => self.nested(Self::object),
            Some(b'[') => self.nested(Self::array),
            Some(b'"') => Ok(PyValue::Str(self.string()?)),
            Some(b'n') if self.eat("null") => Ok(PyValue::Null),
            Some(b't') if self.eat("true") => Ok(PyValue::Bool(true)),
            Some(b'f') if self.eat("false") => Ok(PyValue::Bool(false)),
            Some(b'N') if self.eat("NaN") => Ok(PyValue::Float(f64::NAN)),
            Some(b'I') if self.eat("Infinity") => Ok(PyValue::Float(f64::INFINITY)),
            Some(b'-') if self.eat("-Infinity") => Ok(PyValue::Float(f64::NEG_INFINITY)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("expecting value")),
        }
    }

    fn nested(
        &mut self,
        f: fn(&mut Self) -> Result<PyValue, PyJsonError>,
    ) -> Result<PyValue, PyJsonError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        self.depth += 1;
        let v = f(self);
        self.depth -= 1;
        v
    }

    fn object(&mut self) -> Result<PyValue, PyJsonError> {
        self.i += 1;
        let mut members: Vec<(String, PyValue)> = Vec::new();
        self.ws();
        if self.eat("}") {
            return Ok(PyValue::Object(members));
        }
        loop {
            self.ws();
            if self.s.get(self.i) != Some(&b'"') {
                return Err(self.err("expecting property name"));
            }
            let key = self.string()?;
            self.ws();
            if !self.eat(":") {
                return Err(self.err("expecting ':'"));
            }
            self.ws();
            let v = self.value()?;
            match members.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = v,
                None => members.push((key, v)),
            }
            self.ws();
            if self.eat(",") {
                continue;
            }
            if self.eat("}") {
                return Ok(PyValue::Object(members));
            }
            return Err(self.err("expecting ',' or '}'"));
        }
    }

    fn array(&mut self) -> Result<PyValue, PyJsonError> {
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.eat("]") {
            return Ok(PyValue::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value()?);
            self.ws();
            if self.eat(",") {
                continue;
            }
            if self.eat("]") {
                return Ok(PyValue::Array(items));
            }
            return Err(self.err("expecting ',' or ']'"));
        }
    }

    fn hex4(&mut self) -> Result<u32, PyJsonError> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .ok_or_else(|| self.err("truncated \\u escape"))?;
        let mut v = 0u32;
        for &b in h {
            let d = (b as char)
                .to_digit(16)
                .ok_or_else(|| self.err("invalid \\u escape"))?;
            v = v * 16 + d;
        }
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, PyJsonError> {
        self.i += 1;
        let mut out = String::new();
        loop {
            let start = self.i;
            while let Some(&b) = self.s.get(self.i) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.i += 1;
            }
            // Slicing at ASCII bytes keeps UTF-8 boundaries intact.
            out.push_str(&self.text[start..self.i]);
            match self.s.get(self.i) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let Some(&e) = self.s.get(self.i) else {
                        return Err(self.err("unterminated string"));
                    };
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{08}'),
                        b'f' => out.push('\u{0c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi)
                                && self.s[self.i..].starts_with(b"\\u")
                            {
                                let save = self.i;
                                self.i += 2;
                                let lo = self.hex4()?;
                                if (0xDC00..0xE000).contains(&lo) {
                                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                } else {
                                    self.i = save;
                                    hi
                                }
                            } else {
                                hi
                            };
                            // A lone surrogate is legal for Python but not in a Rust
                            // string; U+FFFD stands in for it (see ENCODING.md).
                            out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                        }
                        _ => return Err(self.err("invalid escape")),
                    }
                }
                Some(_) => return Err(self.err("invalid control character")),
            }
        }
    }

    fn number(&mut self) -> Result<PyValue, PyJsonError> {
        let start = self.i;
        if self.s.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.s.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                while let Some(b'0'..=b'9') = self.s.get(self.i) {
                    self.i += 1;
                }
            }
            _ => return Err(self.err("expecting value")),
        }
        let int_end = self.i;
        let mut is_float = false;
        if self.s.get(self.i) == Some(&b'.') && matches!(self.s.get(self.i + 1), Some(b'0'..=b'9'))
        {
            is_float = true;
            self.i += 1;
            while let Some(b'0'..=b'9') = self.s.get(self.i) {
                self.i += 1;
            }
        }
        if let Some(b'e' | b'E') = self.s.get(self.i) {
            let mut j = self.i + 1;
            if let Some(b'+' | b'-') = self.s.get(j) {
                j += 1;
            }
            if matches!(self.s.get(j), Some(b'0'..=b'9')) {
                is_float = true;
                self.i = j;
                while let Some(b'0'..=b'9') = self.s.get(self.i) {
                    self.i += 1;
                }
            }
        }
        let text = &self.text[start..self.i];
        if is_float {
            // Out-of-range values overflow to ±inf exactly as Python's float() does.
            let f: f64 = text.parse().map_err(|_| self.err("bad number"))?;
            Ok(PyValue::Float(f))
        } else {
            let digits = &self.text[start..int_end];
            // Python's int("-0") is 0.
            Ok(PyValue::Int(if digits == "-0" {
                "0".to_owned()
            } else {
                digits.to_owned()
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(s: &str) -> String {
        dumps(&loads(s).expect("valid"))
    }

    #[test]
    fn floats_follow_python_repr() {
        // Expected strings are what CPython 3 prints for json.dumps(json.loads(x)).
        let cases = [
            ("1e100", "1e+100"),
            ("1e-7", "1e-07"),
            ("1.0", "1.0"),
            ("1.50", "1.5"),
            ("0.0001", "0.0001"),
            ("0.00001", "1e-05"),
            ("1e16", "1e+16"),
            ("1e15", "1000000000000000.0"),
            ("123456789012345678.0", "1.2345678901234568e+17"),
            ("-0.0", "-0.0"),
            ("0.1", "0.1"),
            ("2.5E3", "2500.0"),
            ("1e400", "Infinity"),
            ("-1e400", "-Infinity"),
            ("3.14159", "3.14159"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("5e-324", "5e-324"),
        ];
        for (input, want) in cases {
            assert_eq!(rt(input), want, "input {input}");
        }
    }

    #[test]
    fn ints_are_exact() {
        assert_eq!(
            rt("123456789012345678901234567890"),
            "123456789012345678901234567890"
        );
        assert_eq!(rt("-0"), "0");
        assert_eq!(rt("-12"), "-12");
    }

    #[test]
    fn separators_order_and_duplicates() {
        assert_eq!(
            rt(r#"{"b":1,"a":[true,false,null],"c":{}, "d":[]}"#),
            r#"{"b": 1, "a": [true, false, null], "c": {}, "d": []}"#
        );
        // Python dict: first position, last value.
        assert_eq!(rt(r#"{"a":1,"b":2,"a":3}"#), r#"{"a": 3, "b": 2}"#);
    }

    #[test]
    fn string_escapes() {
        assert_eq!(
            rt(r#""a\"b\\c\/d\n\r\t\b\f\u0001\u001f\u007f\u2028é😀\ud83d\ude00""#),
            "\"a\\\"b\\\\c/d\\n\\r\\t\\b\\f\\u0001\\u001f\u{7f}\u{2028}é😀😀\""
        );
        assert_eq!(rt(r#""\ud800x""#), "\"\u{FFFD}x\"");
    }

    #[test]
    fn rejects_what_python_rejects() {
        for bad in [
            "",
            " ",
            "{",
            "[1,]",
            "{\"a\" 1}",
            "01",
            "1.",
            "\"a\nb\"",
            "tru",
            "{} x",
            "'a'",
            "+1",
            ".5",
            "[1 2]",
        ] {
            assert!(loads(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(loads("NaN").ok().map(|v| dumps(&v)), Some("NaN".into()));
        assert_eq!(rt(" \n[1, -Infinity] "), "[1, -Infinity]");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let s = "[".repeat(100_000);
        assert!(loads(&s).is_err());
    }
}
