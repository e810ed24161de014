//! Events: stored changes, as values.
//!
//! A command (`command.rs`) validates, stores and returns what it changed as an [`Event`];
//! [`App::apply`](super::App::apply) turns an event into the in-memory view and the frames that
//! tell everyone. Nothing else changes the view, so whatever order events are applied in is the
//! order every client sees them in.
//!
//! A user event carries the whole stored row, not a diff: applying it needs no earlier state,
//! and a client that re-reads the row sees exactly what the event said.

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
    /// The session clock ran out.
    SessionExpired,
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
}

/// A stored change that others must hear of.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The invitee list changed.
    User(UserChange),
    /// An admin session ended (logout): its streams close.
    AdminSessionEnded(Digest32),
    /// Several admin sessions ended at once (their admin was removed or changed password):
    /// their streams close.
    AdminSessionsEnded(Vec<Digest32>),
}
