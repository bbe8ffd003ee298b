//! How the CLI prints: `-o table|json`, tables, and the text of typed values
//! (absent as `-`, times as the API writes them).

use std::io::IsTerminal as _;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::ValueEnum;
use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub(crate) enum Output {
    #[default]
    Table,
    Json,
}

/// Prints a value as pretty JSON. It goes through `serde_json::Value`, whose
/// maps are sorted: `-o json` prints keys in alphabetical order, as it always has.
pub(crate) fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::to_value(value)?)?
    );
    Ok(())
}

/// Text of an optional value: absent as "-".
pub(crate) fn or_dash<T: ToString>(value: Option<&T>) -> String {
    value.map_or_else(|| "-".to_owned(), ToString::to_string)
}

/// A time as the API writes it (RFC 3339, UTC as `Z`, only the sub-second
/// digits there are): what the operator can paste back into a query.
pub(crate) fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// An optional time: absent as "-".
pub(crate) fn time_or_dash(at: Option<&DateTime<Utc>>) -> String {
    at.map_or_else(|| "-".to_owned(), time)
}

pub(crate) fn new_table(header: &[&str]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_header(header.to_vec());
    if !std::io::stdout().is_terminal() {
        table.load_preset(comfy_table::presets::NOTHING);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    /// Tables show times exactly as the JSON answers carry them.
    #[test]
    fn times_print_as_the_api_serializes_them() {
        let second = Utc.with_ymd_and_hms(2026, 12, 2, 8, 52, 14).unwrap();
        for at in [
            second,
            second + chrono::Duration::milliseconds(120),
            second + chrono::Duration::microseconds(123_456),
            second + chrono::Duration::nanoseconds(123_456_789),
        ] {
            let json = serde_json::to_value(at).unwrap();
            assert_eq!(json.as_str().unwrap(), time(&at));
        }
        assert_eq!(time(&second), "2026-12-02T08:52:14Z");
        assert_eq!(time_or_dash(None), "-");
        assert_eq!(or_dash::<String>(None), "-");
        assert_eq!(or_dash(Some(&"x".to_owned())), "x");
    }
}
