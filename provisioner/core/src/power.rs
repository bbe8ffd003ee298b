//! The power state of a machine as its BMC reports it, and as the store keeps the
//! last reading.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Power state as the node's BMC reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    /// Powered on.
    On,
    /// Powered off.
    Off,
    /// Between off and on.
    PoweringOn,
    /// Between on and off.
    PoweringOff,
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerState::On => "on",
            PowerState::Off => "off",
            PowerState::PoweringOn => "powering on",
            PowerState::PoweringOff => "powering off",
        })
    }
}

impl PowerState {
    /// The state as stored and shown: `on`, `off`, `powering_on`, `powering_off`.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::On => "on",
            PowerState::Off => "off",
            PowerState::PoweringOn => "powering_on",
            PowerState::PoweringOff => "powering_off",
        }
    }

    /// The inverse of [`PowerState::as_str`]; `None` for any other text.
    pub fn parse(value: &str) -> Option<PowerState> {
        [
            PowerState::On,
            PowerState::Off,
            PowerState::PoweringOn,
            PowerState::PoweringOff,
        ]
        .into_iter()
        .find(|state| state.as_str() == value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_text_round_trips_and_nothing_else_parses() {
        for state in [
            PowerState::On,
            PowerState::Off,
            PowerState::PoweringOn,
            PowerState::PoweringOff,
        ] {
            assert_eq!(PowerState::parse(state.as_str()), Some(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::Value::from(state.as_str())
            );
        }
        for other in ["", "On", "powering on", "standby"] {
            assert_eq!(PowerState::parse(other), None, "{other}");
        }
    }
}
