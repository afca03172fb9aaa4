//! Domain newtypes shared by every module: user names, roles, resource kinds, document ids and
//! policy actions.
//!
//! Each type is parsed once at the edge (`parse`) and carried as a value whose invariant holds
//! from then on. This module is a leaf: it imports nothing from the rest of the crate.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a value was rejected by one of the `parse` functions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

impl ParseError {
    fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_newtype!(
    /// A user name: 1 to 64 characters from `A-Z a-z 0-9 . _ @ -`, starting with a letter or digit.
    Username
);
string_newtype!(
    /// A role name: 1 to 64 characters from `A-Z a-z 0-9 . _ : -`.
    Role
);
string_newtype!(
    /// A resource kind: matches `^[a-z][a-z0-9_-]{0,63}$` (the file stem of `policies/<kind>.rhai`).
    /// System policies (`_users`, `_policies`) are not kinds.
    Kind
);
string_newtype!(
    /// A document id: 1 to 128 characters from `A-Z a-z 0-9 _ -`.
    DocId
);

impl Username {
    /// Checks the user-name rules.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let ok_len = !s.is_empty() && s.len() <= 64;
        let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        let chars_ok = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
        if ok_len && first_ok && chars_ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::new(format!(
                "invalid user name `{}`: use 1 to 64 characters from A-Z a-z 0-9 . _ @ -, starting with a letter or digit",
                truncate(s)
            )))
        }
    }
}

impl Role {
    /// Checks the role-name rules.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::new(format!(
                "invalid role `{}`: use 1 to 64 characters from A-Z a-z 0-9 . _ : -",
                truncate(s)
            )))
        }
    }
}

impl Kind {
    /// Checks `^[a-z][a-z0-9_-]{0,63}$`.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if first_ok && rest_ok && s.len() <= 64 {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::new(format!(
                "invalid kind `{}`: kinds match ^[a-z][a-z0-9_-]{{0,63}}$",
                truncate(s)
            )))
        }
    }
}

impl DocId {
    /// Checks the document-id rules.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let ok =
            !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::new(format!("invalid document id `{}`", truncate(s))))
        }
    }

    /// A fresh, time-ordered id (UUID v7), so that listing in key order is listing in creation order.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }
}

/// What a request wants to do to a resource; the `action` variable of a policy script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Make a new document or record.
    Create,
    /// Fetch one document or record.
    Read,
    /// List a collection (each listed item is also checked with `read`).
    List,
    /// Change an existing document or record.
    Update,
    /// Remove a document or record.
    Delete,
}

impl AsRef<str> for Action {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Action {
    /// The name a script sees: `"create"`, `"read"`, `"list"`, `"update"` or `"delete"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Read => "read",
            Action::List => "list",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }

    /// Parses a script-facing action name (resource actions only).
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s {
            "create" => Ok(Action::Create),
            "read" => Ok(Action::Read),
            "list" => Ok(Action::List),
            "update" => Ok(Action::Update),
            "delete" => Ok(Action::Delete),
            other => Err(ParseError::new(format!(
                "invalid action `{}`: use create, read, list, update or delete",
                truncate(other)
            ))),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Keeps user input in error messages short.
fn truncate(s: &str) -> String {
    if s.chars().count() > 70 {
        let head: String = s.chars().take(64).collect();
        format!("{head}...")
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert!(Kind::parse("notes").is_ok());
        assert!(Kind::parse("a").is_ok());
        assert!(Kind::parse("a-b_c9").is_ok());
        assert!(Kind::parse(&format!("a{}", "b".repeat(63))).is_ok());
        assert!(Kind::parse(&format!("a{}", "b".repeat(64))).is_err());
        for bad in ["", "_users", "Notes", "9x", "a.b", "a/b", "é"] {
            assert!(Kind::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn usernames() {
        assert!(Username::parse("admin").is_ok());
        assert!(Username::parse("ann.lee@example.com").is_ok());
        for bad in ["", ".x", "a b", "a/b", &"x".repeat(65)] {
            assert!(Username::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn actions_round_trip() {
        for a in [
            Action::Create,
            Action::Read,
            Action::List,
            Action::Update,
            Action::Delete,
        ] {
            assert_eq!(Action::parse(a.as_str()), Ok(a));
        }
        assert!(Action::parse("write").is_err());
    }
}
