//! Hearth's shared vocabulary: the types the REST API speaks, the roles, the host and VM
//! states, and the error body. Every other crate depends on this one and it depends on no
//! I/O, so the CLI, the manager, the agent and the web console's generated client all agree
//! on one definition.

pub mod api;
pub mod auth;
pub mod error;
pub mod function;
pub mod host;
pub mod network;
pub mod runtime;
pub mod snapshot;
pub mod template;
pub mod vm;
pub mod volume;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};

/// A new time-ordered identifier. Ids sort by creation time, so a list can page with
/// `WHERE id > cursor ORDER BY id` and stay stable while rows are added.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Six random lowercase hex digits, to make a derived name unique (`web-3fa9c1`). Taken from
/// a new id's random end: its start is a timestamp, the same for ids made close together.
pub fn short_suffix() -> String {
    let id = new_id();
    id[id.len() - 6..].to_string()
}

/// Whether `s` can be an id sent between components: 1–64 ASCII letters, digits or dashes
/// (a UUID, or anything else that is safe in a path and a log line).
pub fn is_plain_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_suffixes_made_together_differ() {
        let (a, b) = (super::short_suffix(), super::short_suffix());
        assert_ne!(a, b);
        for s in [&a, &b] {
            assert_eq!(s.len(), 6);
            assert!(
                s.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
                "{s}"
            );
        }
    }
}
