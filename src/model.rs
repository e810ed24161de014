//! The invitee record and its wire form.
//!
//! `User` is the in-memory copy of one `users` row (plus its derived invite token). The reactor
//! keeps every user in memory — the list is small (thousands, not millions) and it makes the
//! `initial` snapshot, token look-ups and status derivation free of storage reads. Storage is
//! written first; memory is changed only by applying the stored event.
//!
//! Contract rule (API.md "User object"): every field of the wire form but `session_timer` and
//! `token_valid` follows from stored values alone, never from the clock at the moment of
//! reading, so the same user reads the same on every node and in every frame. `status` is
//! therefore decided by stored facts (a session counts as expired once its expiry is recorded,
//! which the session clock does at the deadline).

use crate::clock::rfc3339;
use serde::Serialize;

/// Status as the contract names it. Derived from stored values, never stored itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Invited,
    InProgress,
    Completed,
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub invite_nonce: Vec<u8>,
    /// Derived from the server key and `invite_nonce`; never stored.
    pub invite_token: String,
    /// Wall-clock Unix ms (as every time below).
    pub invite_expires_at: i64,
    /// The unused link ran out and that was announced.
    pub invite_expired: bool,
    pub token_activated: bool,
    pub session_started_at: Option<i64>,
    pub session_expires_at: Option<i64>,
    /// The session clock ran out and that was recorded.
    pub session_expired: bool,
    /// All questions answered, or the clock ran out.
    pub session_ended_at: Option<i64>,
    pub questions_answered: i64,
    pub questions_total: i64,
    pub transcript_url: Option<String>,
    pub summary_url: Option<String>,
    /// When the user was invited.
    pub created_at: i64,
}

impl User {
    /// The one place that decides what a user's status is (stored values only).
    pub fn status(&self) -> Status {
        if self.is_complete() {
            Status::Completed
        } else if self.session_expired || (!self.token_activated && self.invite_expired) {
            Status::Expired
        } else if self.token_activated {
            Status::InProgress
        } else {
            Status::Invited
        }
    }

    /// Every question answered.
    pub fn is_complete(&self) -> bool {
        self.questions_total > 0 && self.questions_answered >= self.questions_total
    }

    /// The session's time is up at `now_ms` (recorded, or the deadline passed).
    pub fn session_is_over(&self, now_ms: i64) -> bool {
        self.session_expired || self.session_expires_at.is_some_and(|e| e <= now_ms)
    }

    /// A session that is running at `now_ms`: activated, clock not run out.
    pub fn session_is_live(&self, now_ms: i64) -> bool {
        self.token_activated && !self.session_is_over(now_ms)
    }

    /// A session an agent works on: activated, not recorded as expired, not complete.
    pub fn session_in_progress(&self) -> bool {
        self.status() == Status::InProgress
    }

    /// Whether the invite link still opens (or re-opens) the session at `now_ms`.
    pub fn token_valid(&self, now_ms: i64) -> bool {
        if self.token_activated {
            !self.session_is_over(now_ms)
        } else {
            self.invite_expires_at > now_ms
        }
    }

    /// Whole seconds left in a live session at `now_ms` (rounded up, so "0" means over).
    pub fn remaining_seconds(&self, now_ms: i64) -> i64 {
        match self.session_expires_at {
            Some(e) if self.session_is_live(now_ms) => (e - now_ms + 999) / 1000,
            _ => 0,
        }
    }

    /// The contract's user object at `now_ms`.
    pub fn view<'a>(&'a self, public_url: &'a str, now_ms: i64) -> UserView<'a> {
        let live = self.session_is_live(now_ms) && !self.is_complete();
        UserView {
            id: self.id,
            first_name: &self.first_name,
            last_name: &self.last_name,
            email: &self.email,
            status: self.status(),
            progress: format!("{}/{}", self.questions_answered, self.questions_total),
            invite_url: format!("{public_url}/session?token={}", self.invite_token),
            token_valid: self.token_valid(now_ms),
            session_timer: live.then(|| {
                let s = self.remaining_seconds(now_ms);
                format!("{:02}:{:02}", s / 60, s % 60)
            }),
            transcript: self.transcript_url.as_deref(),
            summary: self.summary_url.as_deref(),
            invited_at: rfc3339(self.created_at),
            invite_expires_at: (!self.token_activated).then(|| rfc3339(self.invite_expires_at)),
            session_started_at: self.session_started_at.map(rfc3339),
            session_ended_at: self.session_ended_at.map(rfc3339),
        }
    }
}

/// The user object of the contract, field for field and in its order.
#[derive(Debug, Serialize)]
pub struct UserView<'a> {
    pub id: i64,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub email: &'a str,
    pub status: Status,
    pub progress: String,
    pub invite_url: String,
    pub token_valid: bool,
    pub session_timer: Option<String>,
    pub transcript: Option<&'a str>,
    pub summary: Option<&'a str>,
    pub invited_at: String,
    pub invite_expires_at: Option<String>,
    pub session_started_at: Option<String>,
    pub session_ended_at: Option<String>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn user() -> User {
        User {
            id: 7,
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            email: "ada@example.com".into(),
            invite_nonce: vec![1; 16],
            invite_token: "tok".into(),
            invite_expires_at: 10_000,
            invite_expired: false,
            token_activated: false,
            session_started_at: None,
            session_expires_at: None,
            session_expired: false,
            session_ended_at: None,
            questions_answered: 0,
            questions_total: 10,
            transcript_url: None,
            summary_url: None,
            created_at: 0,
        }
    }

    #[test]
    fn status_follows_stored_values_only() {
        let mut u = user();
        assert_eq!(u.status(), Status::Invited);
        assert!(u.token_valid(0));
        assert!(!u.token_valid(10_000), "the link ran out");
        assert_eq!(u.status(), Status::Invited, "until that is recorded");
        u.invite_expired = true;
        assert_eq!(u.status(), Status::Expired);
        u.token_activated = true;
        u.session_expires_at = Some(70_500);
        assert_eq!(u.status(), Status::InProgress);
        assert_eq!(u.remaining_seconds(10_000), 61);
        assert_eq!(u.remaining_seconds(70_500), 0);
        assert_eq!(
            u.status(),
            Status::InProgress,
            "the deadline alone changes nothing"
        );
        u.session_expired = true;
        assert_eq!(u.status(), Status::Expired);
        u.questions_answered = 10;
        assert_eq!(u.status(), Status::Completed);
    }

    #[test]
    fn view_has_the_contract_shape() {
        let mut u = user();
        u.token_activated = true;
        u.session_started_at = Some(0);
        u.session_expires_at = Some(754_000);
        u.questions_answered = 3;
        let json = serde_json::to_string(&u.view("http://h", 0)).unwrap();
        assert_eq!(
            json,
            r#"{"id":7,"first_name":"Ada","last_name":"Lovelace","email":"ada@example.com","status":"in_progress","progress":"3/10","invite_url":"http://h/session?token=tok","token_valid":true,"session_timer":"12:34","transcript":null,"summary":null,"invited_at":"1970-01-01T00:00:00Z","invite_expires_at":null,"session_started_at":"1970-01-01T00:00:00Z","session_ended_at":null}"#
        );
    }

    #[test]
    fn a_completed_session_shows_no_clock() {
        let mut u = user();
        u.token_activated = true;
        u.session_expires_at = Some(754_000);
        u.questions_answered = 10;
        assert_eq!(u.view("http://h", 0).session_timer, None);
    }
}
