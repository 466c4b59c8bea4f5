//! The pieces every command's report shares: a key that failed and why, and
//! byte counts for people. Reports are built by the library and printed by the
//! binary, as JSON or text.

use serde::{Deserialize, Serialize};

/// One key a command could not handle, and why (`{"key": .., "error": ..}` in JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyError {
    pub key: String,
    pub error: String,
}

impl KeyError {
    pub fn new(key: impl Into<String>, error: impl ToString) -> KeyError {
        KeyError {
            key: key.into(),
            error: error.to_string(),
        }
    }
}

/// Bytes in binary units, one decimal.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn a_key_error_is_key_and_error_in_json() {
        let e = KeyError::new("a/b", "boom");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"key":"a/b","error":"boom"}"#
        );
    }
}
