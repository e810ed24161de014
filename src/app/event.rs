//! Events: stored changes, as values.
//!
//! A command (`command.rs`) validates, stores and returns what it changed as an [`Event`];
//! [`App::apply`](super::App::apply) turns an event into the in-memory view and the frames that
//! tell everyone. Nothing else changes the view, so the order events are applied in is the
//! order every client sees them in.
//!
//! A change of the invitee list is [`Logged`]: it took the next number of the event log in the
//! transaction that stored it, and it carries the admin message (and the agent message, if any)
//! exactly as they were stored, so a replay after a reconnect or a restart sends the same bytes.
//! It carries the whole stored row, not a diff: applying it needs no earlier state.

use crate::auth::Digest32;
use crate::model::User;

/// Why a user row changed; decides who hears of it beyond the admins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// An admin (PATCH) or the agent edited fields. `progressed`: the answered/total counts
    /// changed, so the session page and the agent hear of it; `by_agent`: the agent said it
    /// itself and is not told again.
    Edited { progressed: bool, by_agent: bool },
    /// The invitee opened the link for the first time: the session clock started.
    Activated,
    /// The invitee answered a question.
    Answered,
    /// A new invite link: the old one is dead and the session starts over.
    InviteRegenerated,
    /// The unused invite link ran out.
    InviteExpired,
    /// The session clock ran out.
    SessionExpired,
}

impl Cause {
    /// The name stored in the log's `cause` column.
    pub fn label(self) -> &'static str {
        match self {
            Cause::Edited {
                progressed: false, ..
            } => "edited",
            Cause::Edited {
                progressed: true,
                by_agent: false,
            } => "progressed",
            Cause::Edited {
                progressed: true,
                by_agent: true,
            } => "agent_progressed",
            Cause::Activated => "activated",
            Cause::Answered => "answered",
            Cause::InviteRegenerated => "invite_regenerated",
            Cause::InviteExpired => "invite_expired",
            Cause::SessionExpired => "session_expired",
        }
    }

    /// The cause a stored label names.
    pub fn parse(label: &str) -> Option<Cause> {
        Some(match label {
            "edited" => Cause::Edited {
                progressed: false,
                by_agent: false,
            },
            "progressed" => Cause::Edited {
                progressed: true,
                by_agent: false,
            },
            "agent_progressed" => Cause::Edited {
                progressed: true,
                by_agent: true,
            },
            "activated" => Cause::Activated,
            "answered" => Cause::Answered,
            "invite_regenerated" => Cause::InviteRegenerated,
            "invite_expired" => Cause::InviteExpired,
            "session_expired" => Cause::SessionExpired,
            _ => return None,
        })
    }

    /// The stored label as a `&'static str` (for [`crate::store::StoredEvent`]).
    pub fn from_label(label: &str) -> Option<&'static str> {
        Cause::parse(label).map(Cause::label)
    }
}

/// A change of the invitee list.
#[derive(Debug, Clone, PartialEq)]
pub enum UserChange {
    Added(Box<User>),
    Updated(Box<User>, Cause),
    Deleted(i64),
}

impl UserChange {
    /// The id of the user it concerns.
    pub fn user_id(&self) -> i64 {
        match self {
            UserChange::Added(u) | UserChange::Updated(u, _) => u.id,
            UserChange::Deleted(id) => *id,
        }
    }

    /// The name stored in the log's `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            UserChange::Added(_) => "added",
            UserChange::Updated(..) => "updated",
            UserChange::Deleted(_) => "deleted",
        }
    }

    /// The user row after the change (none once deleted).
    pub fn user(&self) -> Option<&User> {
        match self {
            UserChange::Added(u) | UserChange::Updated(u, _) => Some(u),
            UserChange::Deleted(_) => None,
        }
    }
}

/// A stored `kind` label as a `&'static str`; unknown labels read as `updated`.
pub fn kind_label(kind: &str) -> &'static str {
    match kind {
        "added" => "added",
        "deleted" => "deleted",
        _ => "updated",
    }
}

/// A change of the invitee list as the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// Its number in the log (+1 per change, never reused).
    pub seq: u64,
    /// Wall-clock Unix ms of the change.
    pub at_ms: i64,
    pub change: UserChange,
    /// `{"type":"user_added"|"user_update"|"user_deleted","seq":N,"data":…}`, as stored.
    pub admin_message: String,
    /// The agent message it caused (`session_started`, `progress`, `session_expired`, with the
    /// same `seq`), as stored.
    pub agent_message: Option<String>,
}

/// A stored change that others must hear of.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The invitee list changed.
    User(Box<Logged>),
    /// An admin session ended (logout): its streams close. Not numbered: only user-list changes
    /// take a number, so admin streams never see a gap for what they are not sent.
    AdminSessionEnded(Digest32),
    /// Several admin sessions ended at once (their admin was removed or changed password):
    /// their streams close.
    AdminSessionsEnded(Vec<Digest32>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_round_trips_through_its_label() {
        for c in [
            Cause::Edited {
                progressed: false,
                by_agent: false,
            },
            Cause::Edited {
                progressed: true,
                by_agent: false,
            },
            Cause::Edited {
                progressed: true,
                by_agent: true,
            },
            Cause::Activated,
            Cause::Answered,
            Cause::InviteRegenerated,
            Cause::InviteExpired,
            Cause::SessionExpired,
        ] {
            assert_eq!(Cause::parse(c.label()), Some(c));
        }
        assert_eq!(Cause::parse("nonsense"), None);
    }
}
