//! The invitee record and its wire form.
//!
//! `User` is the in-memory copy of one `users` row (plus its derived invite token). The reactor
//! keeps every user in memory — the list is small (thousands, not millions) and it makes the
//! `initial` snapshot, token look-ups and status derivation free of SQLite reads. SQLite is
//! written first; memory is changed only after the write succeeded.

use serde::Serialize;

/// Status as the contract names it. Derived, never stored.
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
    pub invite_expires_at: i64,
    pub token_activated: bool,
    pub session_started_at: Option<i64>,
    pub session_expires_at: Option<i64>,
    pub session_expired: bool,
    pub questions_answered: i64,
    pub questions_total: i64,
    pub transcript_url: Option<String>,
    pub summary_url: Option<String>,
    pub created_at: i64,
}

impl User {
    /// The one place that decides what a user's status is at wall-clock time `now_ms`.
    pub fn status(&self, now_ms: i64) -> Status {
        if self.questions_total > 0 && self.questions_answered >= self.questions_total {
            Status::Completed
        } else if self.session_is_over(now_ms)
            || (!self.token_activated && self.invite_expires_at <= now_ms)
        {
            Status::Expired
        } else if self.token_activated {
            Status::InProgress
        } else {
            Status::Invited
        }
    }

    pub fn session_is_over(&self, now_ms: i64) -> bool {
        self.session_expired || self.session_expires_at.is_some_and(|e| e <= now_ms)
    }

    /// A session that is running: activated, clock not run out.
    pub fn session_is_live(&self, now_ms: i64) -> bool {
        self.token_activated && !self.session_is_over(now_ms)
    }

    /// Whether the invite link still opens (or re-opens) the session.
    pub fn token_valid(&self, now_ms: i64) -> bool {
        if self.token_activated {
            !self.session_is_over(now_ms)
        } else {
            self.invite_expires_at > now_ms
        }
    }

    /// Whole seconds left in a live session (rounded up, so "0" means over).
    pub fn remaining_seconds(&self, now_ms: i64) -> i64 {
        match self.session_expires_at {
            Some(e) if self.session_is_live(now_ms) => (e - now_ms + 999) / 1000,
            _ => 0,
        }
    }

    pub fn view<'a>(&'a self, public_url: &'a str, now_ms: i64) -> UserView<'a> {
        let live = self.session_is_live(now_ms);
        UserView {
            id: self.id,
            first_name: &self.first_name,
            last_name: &self.last_name,
            email: &self.email,
            status: self.status(now_ms),
            progress: format!("{}/{}", self.questions_answered, self.questions_total),
            invite_url: format!("{public_url}/session?token={}", self.invite_token),
            token_valid: self.token_valid(now_ms),
            session_timer: live.then(|| {
                let s = self.remaining_seconds(now_ms);
                format!("{:02}:{:02}", s / 60, s % 60)
            }),
            transcript: self.transcript_url.as_deref(),
            summary: self.summary_url.as_deref(),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            id: 7,
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            email: "ada@example.com".into(),
            invite_nonce: vec![1; 16],
            invite_token: "tok".into(),
            invite_expires_at: 10_000,
            token_activated: false,
            session_started_at: None,
            session_expires_at: None,
            session_expired: false,
            questions_answered: 0,
            questions_total: 10,
            transcript_url: None,
            summary_url: None,
            created_at: 0,
        }
    }

    #[test]
    fn status_follows_the_lifecycle() {
        let mut u = user();
        assert_eq!(u.status(0), Status::Invited);
        assert!(u.token_valid(0));
        assert_eq!(u.status(10_000), Status::Expired, "invite ran out unused");
        assert!(!u.token_valid(10_000));
        u.token_activated = true;
        u.session_expires_at = Some(70_500);
        assert_eq!(u.status(10_000), Status::InProgress);
        assert_eq!(u.remaining_seconds(10_000), 61);
        assert_eq!(u.status(70_500), Status::Expired);
        assert_eq!(u.remaining_seconds(70_500), 0);
        u.questions_answered = 10;
        assert_eq!(u.status(70_500), Status::Completed);
    }

    #[test]
    fn view_has_the_contract_shape() {
        let mut u = user();
        u.token_activated = true;
        u.session_expires_at = Some(754_000);
        u.questions_answered = 3;
        let json = serde_json::to_string(&u.view("http://h", 0)).unwrap();
        assert_eq!(
            json,
            r#"{"id":7,"first_name":"Ada","last_name":"Lovelace","email":"ada@example.com","status":"in_progress","progress":"3/10","invite_url":"http://h/session?token=tok","token_valid":true,"session_timer":"12:34","transcript":null,"summary":null}"#
        );
    }
}
