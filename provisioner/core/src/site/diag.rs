//! Diagnostics (`file:line:column: message`) and the per-file context that
//! turns JSON pointers into positions and serde errors into diagnostics.

use std::fmt;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::yaml::{Locations, Pos};

/// One problem in the site repository.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// File, relative to the site directory (e.g. `profiles/lab.yaml`).
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Every problem found while loading a site, sorted by file, line, column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SiteErrors(pub Vec<Diagnostic>);

impl fmt::Display for SiteErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// The answer to a `password:` field anywhere.
pub(crate) const PLAINTEXT_PASSWORD: &str = "a plaintext `password` is not allowed (secrets never \
     go in git): use `password_env: VAR` (environment variable of the daemon) or \
     `password_file: PATH` (a 0600 file outside the repository)";

/// Which end of a key/value pair a diagnostic points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum At {
    /// The key (`name:`), e.g. for an unknown or conflicting field.
    Key,
    /// The value, e.g. for a malformed address.
    Value,
}

/// Collects diagnostics for one file.
#[derive(Debug)]
pub(crate) struct FileCtx<'a> {
    pub file: PathBuf,
    pub locs: &'a Locations,
    pub diags: &'a mut Vec<Diagnostic>,
}

impl FileCtx<'_> {
    /// Reports `message` at `pointer`, prefixed with the field path
    /// (`nodes[1].bmc.url: ...`) when the pointer is not the root.
    pub fn report(&mut self, pointer: &str, at: At, message: impl fmt::Display) {
        let pos = match at {
            At::Key => self.locs.key_pos(pointer),
            At::Value => self.locs.value_pos(pointer),
        };
        let field = dotted(pointer);
        let message = if field.is_empty() {
            message.to_string()
        } else {
            format!("{field}: {message}")
        };
        self.push(pos, message);
    }

    pub fn push(&mut self, pos: Pos, message: String) {
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            message,
        });
    }

    /// The file's top-level mapping, or `None` after reporting that the file
    /// is empty or not a mapping; `holds` says what the file should contain.
    pub fn top_mapping<'v>(
        &mut self,
        root: &'v serde_json::Value,
        holds: &str,
    ) -> Option<&'v serde_json::Map<String, serde_json::Value>> {
        if let Some(map) = root.as_object() {
            return Some(map);
        }
        let what = if root.is_null() {
            "the file is empty"
        } else {
            "expected a mapping"
        };
        self.report("", At::Value, format!("{what}: {holds}"));
        None
    }

    /// Position of the key (or item) at `pointer`, for "first defined at" notes.
    pub fn where_is(&self, pointer: &str) -> String {
        let p = self.locs.key_pos(pointer);
        format!("{}:{}:{}", self.file.display(), p.line, p.column)
    }

    /// Deserializes `value` (found at `pointer`) into `T`, reporting a
    /// failure at the offending field: an unknown field at its key, a bad
    /// value at the value, a missing field at the mapping that lacks it.
    pub fn de<T: DeserializeOwned>(&mut self, value: &Value, pointer: &str) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(err) => {
                let mut inner = pointer.to_owned();
                for seg in err.path().iter() {
                    use serde_path_to_error::Segment;
                    match seg {
                        Segment::Seq { index } => inner = format!("{inner}/{index}"),
                        Segment::Map { key } => inner = super::yaml::child(&inner, key),
                        Segment::Enum { variant } => inner = super::yaml::child(&inner, variant),
                        Segment::Unknown => {}
                    }
                }
                let msg = plain_type_names(&err.inner().to_string());
                if let Some(field) = msg
                    .strip_prefix("unknown field `")
                    .and_then(|r| r.split('`').next())
                {
                    // serde_path_to_error's path may or may not include the
                    // unknown key itself; point at the key either way.
                    let key_ptr = if inner.ends_with(&format!("/{field}")) {
                        inner.clone()
                    } else {
                        super::yaml::child(&inner, field)
                    };
                    let msg = if field == "password" {
                        PLAINTEXT_PASSWORD.to_owned()
                    } else {
                        msg.replace(", expected", "; expected")
                    };
                    self.report(&key_ptr, At::Key, msg);
                } else if msg.starts_with("missing field") {
                    self.report(&inner, At::Key, format!("{msg} (required)"));
                } else {
                    let hint =
                        if msg.contains("expected a string") && msg.starts_with("invalid type") {
                            "; put the value in quotes to make it a string"
                        } else {
                            ""
                        };
                    self.report(&inner, At::Value, format!("{msg}{hint}"));
                }
                None
            }
        }
    }
}

/// serde names the Rust type it wanted (`expected struct BmcWire`); an
/// operator wrote YAML, so say `expected a mapping` instead.
fn plain_type_names(msg: &str) -> String {
    match msg.find("expected struct ") {
        Some(i) => {
            let rest = &msg[i + "expected struct ".len()..];
            let end = rest
                .find(|c: char| !c.is_alphanumeric() && c != '_')
                .unwrap_or(rest.len());
            format!("{}expected a mapping{}", &msg[..i], &rest[end..])
        }
        None => msg.to_owned(),
    }
}

/// `/nodes/1/bmc/url` -> `nodes[1].bmc.url`.
pub(crate) fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg.replace("~1", "/").replace("~0", "~"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        let d = |f: &str, l, c, m: &str| Diagnostic {
            file: f.into(),
            line: l,
            column: c,
            message: m.into(),
        };
        let errs = SiteErrors(vec![
            d("site.yaml", 3, 5, "bad"),
            d("profiles/a.yaml", 1, 1, "worse"),
        ]);
        assert_eq!(
            errs.to_string(),
            "site.yaml:3:5: bad\nprofiles/a.yaml:1:1: worse"
        );
    }

    #[test]
    fn type_names_are_plain() {
        assert_eq!(
            plain_type_names("invalid type: integer `5`, expected struct BmcWire"),
            "invalid type: integer `5`, expected a mapping"
        );
        assert_eq!(
            plain_type_names("missing field `url`"),
            "missing field `url`"
        );
    }

    #[test]
    fn dotted_paths() {
        assert_eq!(dotted("/nodes/1/bmc/url"), "nodes[1].bmc.url");
        assert_eq!(dotted("/network/dhcp/range/0"), "network.dhcp.range[0]");
        assert_eq!(dotted(""), "");
    }
}
