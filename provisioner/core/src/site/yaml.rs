//! YAML text to a `serde_json::Value` plus the position of every key and
//! value, keyed by JSON pointer, so later checks can point at
//! `file:line:column`.
//!
//! Plain scalars are resolved with the YAML 1.2 core schema (null, booleans,
//! integers, floats, else string); quoted and block scalars are always
//! strings. Duplicate mapping keys, non-scalar keys and aliases are refused.
//! Pure: no I/O.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Deepest nesting accepted; deeper documents are refused instead of risking
/// the stack. Site files nest four or five levels.
const MAX_DEPTH: usize = 64;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
}

impl Pos {
    /// The start of a file.
    pub const START: Pos = Pos { line: 1, column: 1 };

    fn from_marker(m: &Marker) -> Pos {
        // yaml-rust2 0.13 markers: line is 1-based, column 0-based
        // (checked by `marker_base` below).
        Pos {
            line: m.line().max(1),
            column: m.col() + 1,
        }
    }
}

/// Where a value (and its mapping key, if it has one) sits in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    /// Position of the key, for values inside a mapping.
    pub key: Option<Pos>,
    /// Position of the value itself.
    pub value: Pos,
}

/// JSON pointer -> location, for every node of a document.
#[derive(Debug, Clone, Default)]
pub struct Locations {
    map: HashMap<String, Loc>,
}

impl Locations {
    /// The location of `pointer`, or of its nearest ancestor that exists
    /// (for a missing field, that is the mapping that lacks it).
    pub fn find(&self, pointer: &str) -> (Loc, bool) {
        let mut p = pointer;
        loop {
            if let Some(loc) = self.map.get(p) {
                return (*loc, p == pointer);
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => {
                    return (
                        Loc {
                            key: None,
                            value: Pos::START,
                        },
                        false,
                    );
                }
            }
        }
    }

    /// Position of the key of `pointer` if it has one, else of its value
    /// (falling back to the nearest existing ancestor).
    pub fn key_pos(&self, pointer: &str) -> Pos {
        let (loc, _) = self.find(pointer);
        loc.key.unwrap_or(loc.value)
    }

    /// Position of the value at `pointer` (falling back to the key, then
    /// value, of the nearest existing ancestor).
    pub fn value_pos(&self, pointer: &str) -> Pos {
        match self.find(pointer) {
            (loc, true) => loc.value,
            (loc, false) => loc.key.unwrap_or(loc.value),
        }
    }
}

/// A parsed document.
#[derive(Debug, Clone)]
pub struct Doc {
    /// The document as JSON data (`Null` for an empty file).
    pub value: Value,
    /// Where each key and value is.
    pub locs: Locations,
}

/// A problem found while reading YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// Where.
    pub pos: Pos,
    /// What is wrong and what to do.
    pub message: String,
}

/// Parses one YAML document. Returns the document when the syntax is valid
/// (even if semantic YAML errors such as duplicate keys were found, so the
/// caller can keep checking) and every error found.
pub fn parse(text: &str) -> (Option<Doc>, Vec<YamlError>) {
    let mut b = Builder {
        parser: Parser::new_from_str(text),
        locs: Locations::default(),
        errors: Vec::new(),
    };
    match b.document() {
        Ok(value) => (
            Some(Doc {
                value,
                locs: b.locs,
            }),
            b.errors,
        ),
        Err(e) => {
            b.errors.push(e);
            (None, b.errors)
        }
    }
}

/// JSON pointer of `key` inside `parent`.
pub fn child(parent: &str, key: &str) -> String {
    format!("{parent}/{}", key.replace('~', "~0").replace('/', "~1"))
}

struct Builder<'a> {
    parser: Parser<std::str::Chars<'a>>,
    locs: Locations,
    errors: Vec<YamlError>,
}

impl Builder<'_> {
    /// yaml-rust2 marks the start of a block mapping after its first key has
    /// been scanned; a collection starts no later than its first element.
    fn start_at_most(&mut self, pointer: &str, first_child: Pos) {
        if let Some(loc) = self.locs.map.get_mut(pointer) {
            loc.value = loc.value.min(first_child);
        }
    }

    fn next(&mut self) -> Result<(Event, Marker), YamlError> {
        self.parser.next_token().map_err(|e| YamlError {
            pos: Pos::from_marker(e.marker()),
            message: format!("YAML syntax error: {}", e.info()),
        })
    }

    fn document(&mut self) -> Result<Value, YamlError> {
        let mut value = Value::Null;
        let mut documents = 0;
        loop {
            let (ev, mark) = self.next()?;
            match ev {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::StreamEnd => return Ok(value),
                Event::DocumentStart => {
                    documents += 1;
                    let (ev, mark) = self.next()?;
                    let v = self.node(ev, mark, String::new(), None, 0)?;
                    if documents == 1 {
                        value = v;
                    } else {
                        self.errors.push(YamlError {
                            pos: Pos::from_marker(&mark),
                            message: "a second YAML document (after `---`) is not allowed: \
                                      keep one document per file"
                                .into(),
                        });
                    }
                }
                other => {
                    return Err(YamlError {
                        pos: Pos::from_marker(&mark),
                        message: format!("unexpected YAML event {other:?}"),
                    });
                }
            }
        }
    }

    fn node(
        &mut self,
        ev: Event,
        mark: Marker,
        pointer: String,
        key: Option<Pos>,
        depth: usize,
    ) -> Result<Value, YamlError> {
        let pos = Pos::from_marker(&mark);
        if depth > MAX_DEPTH {
            return Err(YamlError {
                pos,
                message: format!("nesting deeper than {MAX_DEPTH} levels: this is not a site file"),
            });
        }
        self.locs
            .map
            .insert(pointer.clone(), Loc { key, value: pos });
        match ev {
            Event::Scalar(text, style, _anchor, tag) => {
                let tag_str = tag.as_ref().is_some_and(|t| {
                    (t.handle == "!!" && t.suffix == "str")
                        || (t.handle.starts_with("tag:yaml.org") && t.suffix.ends_with("str"))
                });
                Ok(scalar(text, style, tag_str))
            }
            Event::Alias(_) => {
                self.errors.push(YamlError {
                    pos,
                    message: "YAML aliases (*name) are not supported in site files: \
                              write the value out"
                        .into(),
                });
                Ok(Value::Null)
            }
            Event::SequenceStart(..) => {
                let mut items = Vec::new();
                loop {
                    let (ev, mark) = self.next()?;
                    if ev == Event::SequenceEnd {
                        return Ok(Value::Array(items));
                    }
                    let p = format!("{pointer}/{}", items.len());
                    let item_pos = Pos::from_marker(&mark);
                    if items.is_empty() {
                        self.start_at_most(&pointer, item_pos);
                    }
                    let v = self.node(ev, mark, p.clone(), None, depth + 1)?;
                    // A sequence item's location is the item itself.
                    self.locs.map.entry(p).or_insert(Loc {
                        key: None,
                        value: item_pos,
                    });
                    items.push(v);
                }
            }
            Event::MappingStart(..) => {
                let mut map = Map::new();
                let mut first_seen: HashMap<String, Pos> = HashMap::new();
                loop {
                    let (ev, mark) = self.next()?;
                    if ev == Event::MappingEnd {
                        return Ok(Value::Object(map));
                    }
                    let key_pos = Pos::from_marker(&mark);
                    if map.is_empty() && first_seen.is_empty() {
                        self.start_at_most(&pointer, key_pos);
                    }
                    let key_text = match ev {
                        Event::Scalar(text, ..) => Some(text),
                        _ => {
                            self.errors.push(YamlError {
                                pos: key_pos,
                                message: "mapping keys must be plain strings".into(),
                            });
                            // Consume the complex key so parsing can go on.
                            self.node(ev, mark, format!("{pointer}/?"), None, depth + 1)?;
                            None
                        }
                    };
                    let (vev, vmark) = self.next()?;
                    match key_text {
                        Some(k) if first_seen.contains_key(&k) => {
                            let first = first_seen[&k];
                            self.errors.push(YamlError {
                                pos: key_pos,
                                message: format!(
                                    "duplicate key `{k}` (first at line {}, column {}): \
                                     remove one",
                                    first.line, first.column
                                ),
                            });
                            // Parse the value into a scratch pointer so the
                            // first occurrence keeps its locations.
                            self.node(vev, vmark, format!("{pointer}/?dup"), None, depth + 1)?;
                        }
                        Some(k) => {
                            let p = child(&pointer, &k);
                            let v = self.node(vev, vmark, p, Some(key_pos), depth + 1)?;
                            first_seen.insert(k.clone(), key_pos);
                            map.insert(k, v);
                        }
                        None => {
                            self.node(vev, vmark, format!("{pointer}/?"), None, depth + 1)?;
                        }
                    }
                }
            }
            other => Err(YamlError {
                pos,
                message: format!("unexpected YAML event {other:?}"),
            }),
        }
    }
}

/// Resolves a scalar per the YAML 1.2 core schema.
fn scalar(text: String, style: TScalarStyle, tagged_str: bool) -> Value {
    if style != TScalarStyle::Plain || tagged_str {
        return Value::String(text);
    }
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(n) = parse_int(&text) {
        return Value::Number(n);
    }
    if text
        .trim_start_matches(['-', '+'])
        .bytes()
        .all(|b| b.is_ascii_digit())
    {
        // An integer too large for 64 bits: keep its digits.
        return Value::String(text);
    }
    if is_core_float(&text)
        && let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64)
    {
        return Value::Number(n);
    }
    Value::String(text)
}

fn parse_int(s: &str) -> Option<Number> {
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(h) = s.strip_prefix("0x") {
        (16, h)
    } else if let Some(o) = s.strip_prefix("0o") {
        (8, o)
    } else {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        (10, digits)
    };
    if radix != 10 && (digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix))) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if neg {
        let v = i64::try_from(magnitude).ok()?;
        Some(Number::from(-v))
    } else {
        Some(Number::from(magnitude))
    }
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_core_float(s: &str) -> bool {
    let b = s.strip_prefix(['-', '+']).unwrap_or(s).as_bytes();
    let mut i = 0;
    let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let exp = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp == 0 {
            return false;
        }
        i += exp;
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(text: &str) -> Doc {
        let (doc, errors) = parse(text);
        assert_eq!(errors, vec![], "{text}");
        doc.expect("document")
    }

    #[test]
    fn marker_base() {
        // Verifies the assumption in `Pos::from_marker`: "b" is on line 2,
        // column 4 (1-based) and its value on column 7.
        let doc = ok("a: 1\nb:    x\n");
        let loc = doc.locs.find("/b").0;
        assert_eq!(loc.key, Some(Pos { line: 2, column: 1 }));
        assert_eq!(loc.value, Pos { line: 2, column: 7 });
        let mut parser = Parser::new_from_str("a: 1\nbb: x\n");
        let raw = loop {
            match parser.next_token().expect("valid YAML") {
                (Event::Scalar(s, ..), mark) if s == "x" => break mark,
                (Event::StreamEnd, _) => panic!("no scalar x"),
                _ => {}
            }
        };
        assert_eq!(
            (raw.line(), raw.col()),
            (2, 4),
            "yaml-rust2 marker: line 1-based, col 0-based"
        );
    }

    #[test]
    fn core_schema_resolution() {
        let doc = ok(
            "a: ~\nb: null\nc:\nd: true\ne: False\nf: 42\ng: -7\nh: 0x1f\ni: 0o17\n\
                      j: 1.5\nk: 1e3\nl: '42'\nm: \"true\"\nn: yes\no: 52:54:00:0d:00:01\n\
                      p: 8086\nq: 159b\nr: .inf\ns: !!str 12\nt: 1.2.3\nu: 99999999999999999999\n",
        );
        assert_eq!(
            doc.value,
            json!({
                "a": null, "b": null, "c": null, "d": true, "e": false, "f": 42, "g": -7,
                "h": 31, "i": 15, "j": 1.5, "k": 1000.0, "l": "42", "m": "true", "n": "yes",
                "o": "52:54:00:0d:00:01", "p": 8086, "q": "159b", "r": ".inf", "s": "12",
                "t": "1.2.3", "u": "99999999999999999999"
            })
        );
    }

    #[test]
    fn nested_locations() {
        let text = "nodes:\n  - name: a\n    bmc:\n      url: x\n  - name: b\n";
        let doc = ok(text);
        assert_eq!(
            doc.locs.find("/nodes/0").0.value,
            Pos { line: 2, column: 5 }
        );
        assert_eq!(
            doc.locs.key_pos("/nodes/0/bmc/url"),
            Pos { line: 4, column: 7 }
        );
        assert_eq!(
            doc.locs.value_pos("/nodes/0/bmc/url"),
            Pos {
                line: 4,
                column: 12
            }
        );
        assert_eq!(
            doc.locs.value_pos("/nodes/1/name"),
            Pos {
                line: 5,
                column: 11
            }
        );
        // A missing field points at the key of its parent.
        assert_eq!(
            doc.locs.value_pos("/nodes/0/bmc/username"),
            Pos { line: 3, column: 5 }
        );
    }

    #[test]
    fn duplicate_keys_are_all_reported_and_first_wins() {
        let (doc, errors) = parse("a: 1\nb: 2\na: 3\nb:\n  c: 1\n");
        assert_eq!(doc.unwrap().value, json!({"a": 1, "b": 2}));
        let got: Vec<_> = errors
            .iter()
            .map(|e| (e.pos.line, e.pos.column, &e.message[..17]))
            .collect();
        assert_eq!(
            got,
            [(3, 1, "duplicate key `a`"), (4, 1, "duplicate key `b`")]
        );
        assert!(errors[0].message.contains("first at line 1, column 1"));
    }

    #[test]
    fn syntax_error_position() {
        let (doc, errors) = parse("a: 1\nb: [1, 2\nc: 3\n");
        assert!(doc.is_none());
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].message.starts_with("YAML syntax error: "),
            "{:?}",
            errors[0]
        );
        assert_eq!(errors[0].pos.line, 3, "{:?}", errors[0]);
    }

    #[test]
    fn aliases_and_extra_documents_are_refused() {
        let (_, errors) = parse("a: &x 1\nb: *x\n");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].pos, Pos { line: 2, column: 4 });
        let (_, errors) = parse("a: 1\n---\nb: 2\n");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("second YAML document"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text = "[".repeat(10_000);
        let (doc, errors) = parse(&text);
        assert!(doc.is_none());
        assert!(!errors.is_empty());
    }

    #[test]
    fn empty_document_is_null() {
        assert_eq!(ok("").value, Value::Null);
        assert_eq!(ok("# just a comment\n").value, Value::Null);
    }
}
