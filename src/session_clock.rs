//! The session clock: when each running interview ends, and the `time_update` ticks of the
//! sessions someone is watching. The one home of these rules; `now` is always passed in.
//!
//! Rules (API.md "WebSocket streams" and "HTTP"):
//! * A session runs from activation until its stored wall-clock expiry. Its **expiry** fires at
//!   that instant (never before; a little after is fine) whether or not anyone watches, because
//!   admins and agents must hear of it.
//! * While at least one session stream is open, a **time update** fires every 10 s *on the
//!   session's own 10-second marks*: with 29:57 left the ticks come at 29:50, 29:40, … so every
//!   page shows the same round numbers and the last tick lands on 0:10, not 0:03. A mark closer
//!   than half a second is skipped (the `time_update` sent on open just said the same).
//! * If recording the expiry fails (storage busy), it is tried again a second later.
//! * Deadlines are stored in wall time and waited for in monotonic time ([`Now::mono_at`]). If
//!   the wall clock jumps, the timer fires early or late by the jump; the expiry command
//!   re-checks against the wall clock and, if it is not yet time, the caller re-arms with
//!   [`SessionClock::start`]. Firing early is thus never acted on.
//!
//! * An unused **invite link** runs out at its stored expiry too; admins must hear of it within
//!   2 s, so it has a timer of its own ([`SessionClock::arm_invite`]), re-checked the same way.
//!
//! Invariants: at most one expiry timer and one tick timer per session and one invite timer per
//! user; a session that is not started has neither of the first two; a tick timer exists only
//! while the session is watched.

use crate::clock::Now;
use crate::timers::{TimerId, Timers};
use std::collections::HashMap;

/// Interval of `time_update` frames on a session stream (milliseconds).
pub const TIME_UPDATE_MS: i64 = 10_000;
/// A tick mark closer than this is skipped: the caller has just sent the current time.
const TICK_SKIP_MS: i64 = 500;
/// Delay before trying again to record an expiry that could not be stored.
pub const EXPIRY_RETRY_MS: u64 = 1_000;

/// What came due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The session of this user should be over: record its expiry.
    Expire(i64),
    /// Send this session's streams a `time_update`.
    TimeUpdate(i64),
    /// The unused invite link of this user should have run out: announce it.
    InviteExpired(i64),
}

#[derive(Debug, Default)]
struct Entry {
    /// Wall-clock Unix ms at which the session ends.
    expires_at: i64,
    expiry: Option<TimerId>,
    tick: Option<TimerId>,
    watched: bool,
}

/// Timers of every running session.
#[derive(Default)]
pub struct SessionClock {
    timers: Timers<Due>,
    sessions: HashMap<i64, Entry>,
    /// Unused invite links: user id → the timer of their expiry.
    invites: HashMap<i64, TimerId>,
}

impl SessionClock {
    /// A clock with no session; deadlines are in the caller's monotonic ms ([`Now::mono_ms`]).
    pub fn new() -> Self {
        SessionClock {
            timers: Timers::new(),
            sessions: HashMap::new(),
            invites: HashMap::new(),
        }
    }

    /// The unused invite link of `user_id` runs out at wall time `expires_at`: (re-)arm its
    /// timer.
    pub fn arm_invite(&mut self, user_id: i64, expires_at: i64, now: Now) {
        self.disarm_invite(user_id);
        let t = self
            .timers
            .insert(now.mono_at(expires_at), Due::InviteExpired(user_id));
        self.invites.insert(user_id, t);
    }

    /// The link was used, announced, replaced or deleted: no timer.
    pub fn disarm_invite(&mut self, user_id: i64) {
        if let Some(t) = self.invites.remove(&user_id) {
            self.timers.cancel(t);
        }
    }

    /// Announcing an invite's expiry failed: try again in [`EXPIRY_RETRY_MS`].
    pub fn retry_invite(&mut self, user_id: i64, now: Now) {
        self.disarm_invite(user_id);
        let t = self
            .timers
            .insert(now.mono_ms + EXPIRY_RETRY_MS, Due::InviteExpired(user_id));
        self.invites.insert(user_id, t);
    }

    /// The session of `user_id` runs until wall time `expires_at`: arm (or re-arm) its expiry,
    /// and re-align its ticks if it is watched.
    pub fn start(&mut self, user_id: i64, expires_at: i64, now: Now) {
        let entry = self.sessions.entry(user_id).or_default();
        entry.expires_at = expires_at;
        if let Some(t) = entry.expiry.take() {
            self.timers.cancel(t);
        }
        entry.expiry = Some(
            self.timers
                .insert(now.mono_at(expires_at), Due::Expire(user_id)),
        );
        if entry.watched {
            self.schedule_tick(user_id, now);
        }
    }

    /// The session is over, reset or gone: forget its timers.
    pub fn stop(&mut self, user_id: i64) {
        if let Some(entry) = self.sessions.remove(&user_id) {
            for t in [entry.expiry, entry.tick].into_iter().flatten() {
                self.timers.cancel(t);
            }
        }
    }

    /// A stream of the session opened and it was not watched before: start the ticks. A
    /// session that is not running (unknown here) gets none.
    pub fn watch(&mut self, user_id: i64, now: Now) {
        let Some(entry) = self.sessions.get_mut(&user_id) else {
            return;
        };
        if !entry.watched {
            entry.watched = true;
            self.schedule_tick(user_id, now);
        }
    }

    /// The last stream of the session closed: no more ticks.
    pub fn unwatch(&mut self, user_id: i64) {
        if let Some(entry) = self.sessions.get_mut(&user_id) {
            entry.watched = false;
            if let Some(t) = entry.tick.take() {
                self.timers.cancel(t);
            }
        }
    }

    /// Recording the expiry failed: try again in [`EXPIRY_RETRY_MS`].
    pub fn retry_expiry(&mut self, user_id: i64, now: Now) {
        let Some(entry) = self.sessions.get_mut(&user_id) else {
            return;
        };
        if let Some(t) = entry.expiry.take() {
            self.timers.cancel(t);
        }
        entry.expiry = Some(
            self.timers
                .insert(now.mono_ms + EXPIRY_RETRY_MS, Due::Expire(user_id)),
        );
    }

    /// Wall-clock expiry of a running session.
    pub fn expires_at(&self, user_id: i64) -> Option<i64> {
        self.sessions.get(&user_id).map(|e| e.expires_at)
    }

    /// The monotonic time of the next timer, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.next_deadline()
    }

    /// Collect what is due at `now` into `due`, in deadline order, and schedule the next tick
    /// of every session whose tick fired.
    pub fn advance(&mut self, now: Now, due: &mut Vec<Due>) {
        let first = due.len();
        self.timers.advance(now.mono_ms, due);
        for d in &due[first..] {
            match *d {
                Due::Expire(id) => {
                    if let Some(e) = self.sessions.get_mut(&id) {
                        e.expiry = None;
                    }
                }
                Due::TimeUpdate(id) => {
                    if let Some(e) = self.sessions.get_mut(&id) {
                        e.tick = None;
                    }
                    self.schedule_tick(id, now);
                }
                Due::InviteExpired(id) => {
                    self.invites.remove(&id);
                }
            }
        }
    }

    /// Arm the next tick of a watched session on its next 10-second mark, if it has time left.
    fn schedule_tick(&mut self, user_id: i64, now: Now) {
        let Some(entry) = self.sessions.get_mut(&user_id) else {
            return;
        };
        if let Some(t) = entry.tick.take() {
            self.timers.cancel(t);
        }
        let Some(delay) = next_mark_in(entry.expires_at - now.wall_ms) else {
            return;
        };
        entry.tick = Some(
            self.timers
                .insert(now.mono_ms + delay as u64, Due::TimeUpdate(user_id)),
        );
    }
}

/// Milliseconds from now to the next 10-second mark of a session with `remaining_ms` left, or
/// `None` when it has no time left (its expiry comes first).
fn next_mark_in(remaining_ms: i64) -> Option<i64> {
    if remaining_ms <= 0 {
        return None;
    }
    let mut next = remaining_ms % TIME_UPDATE_MS;
    if next < TICK_SKIP_MS {
        next += TIME_UPDATE_MS;
    }
    (next < remaining_ms).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test clock: both readings advance together.
    fn at(ms: i64) -> Now {
        Now {
            wall_ms: 1_700_000_000_000 + ms,
            mono_ms: ms as u64,
        }
    }

    fn run(clock: &mut SessionClock, until_ms: i64, step: i64) -> Vec<(i64, Due)> {
        let mut out = Vec::new();
        let mut t = 0;
        while t <= until_ms {
            let mut due = Vec::new();
            clock.advance(at(t), &mut due);
            out.extend(due.into_iter().map(|d| (t, d)));
            t += step;
        }
        out
    }

    #[test]
    fn marks_are_the_sessions_own_ten_second_marks() {
        assert_eq!(next_mark_in(29 * 60_000 + 57_000), Some(7_000));
        assert_eq!(
            next_mark_in(20_300),
            Some(10_300),
            "a mark 0.3 s away is skipped"
        );
        assert_eq!(next_mark_in(20_000), Some(10_000));
        assert_eq!(next_mark_in(5_000), None, "expiry comes first");
        assert_eq!(next_mark_in(0), None);
        assert_eq!(next_mark_in(-5), None);
    }

    #[test]
    fn expiry_fires_at_the_deadline_and_never_before() {
        let mut c = SessionClock::new();
        c.start(7, at(0).wall_ms + 3_000, at(0));
        let fired = run(&mut c, 5_000, 10);
        assert_eq!(fired.len(), 1);
        let (t, due) = fired[0];
        assert_eq!(due, Due::Expire(7));
        assert!((3_000..=3_020).contains(&t), "fired at {t}");
    }

    #[test]
    fn watched_sessions_tick_on_marks_until_expiry() {
        let mut c = SessionClock::new();
        let expires = at(0).wall_ms + 35_000;
        c.start(1, expires, at(0));
        c.watch(1, at(0));
        let fired = run(&mut c, 40_000, 10);
        let ticks: Vec<i64> = fired
            .iter()
            .filter(|(_, d)| *d == Due::TimeUpdate(1))
            .map(|(t, _)| *t)
            .collect();
        // 35 s left: marks at 30, 20, 10 s remaining = 5, 15, 25 s from now.
        assert_eq!(ticks.len(), 3, "{ticks:?}");
        for (tick, want) in ticks.iter().zip([5_000, 15_000, 25_000]) {
            assert!((want..want + 20).contains(tick), "{ticks:?}");
        }
        assert!(fired.iter().any(|(_, d)| *d == Due::Expire(1)));
    }

    #[test]
    fn unwatched_sessions_do_not_tick_and_stop_forgets_everything() {
        let mut c = SessionClock::new();
        c.start(1, at(0).wall_ms + 60_000, at(0));
        c.watch(1, at(0));
        c.unwatch(1);
        c.start(2, at(0).wall_ms + 60_000, at(0));
        c.watch(2, at(0));
        c.stop(2);
        let fired = run(&mut c, 70_000, 100);
        assert_eq!(
            fired.iter().map(|(_, d)| *d).collect::<Vec<_>>(),
            [Due::Expire(1)]
        );
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn watching_a_session_that_is_not_running_does_nothing() {
        let mut c = SessionClock::new();
        c.watch(9, at(0));
        assert_eq!(c.next_deadline(), None);
        assert_eq!(c.expires_at(9), None);
    }

    #[test]
    fn a_failed_expiry_is_retried_a_second_later() {
        let mut c = SessionClock::new();
        c.start(3, at(0).wall_ms + 1_000, at(0));
        let mut due = Vec::new();
        c.advance(at(1_000), &mut due);
        assert_eq!(due, [Due::Expire(3)]);
        c.retry_expiry(3, at(1_000));
        due.clear();
        c.advance(at(1_900), &mut due);
        assert!(due.is_empty());
        c.advance(at(2_010), &mut due);
        assert_eq!(due, [Due::Expire(3)]);
    }

    #[test]
    fn invite_links_run_out_on_time_unless_disarmed() {
        let mut c = SessionClock::new();
        c.arm_invite(1, at(0).wall_ms + 2_000, at(0));
        c.arm_invite(2, at(0).wall_ms + 2_000, at(0));
        c.arm_invite(3, at(0).wall_ms - 5_000, at(0));
        c.disarm_invite(2);
        let fired = run(&mut c, 3_000, 10);
        let got: Vec<(i64, Due)> = fired.iter().map(|(t, d)| (*t / 1000 * 1000, *d)).collect();
        assert_eq!(
            got,
            [(0, Due::InviteExpired(3)), (2_000, Due::InviteExpired(1))],
            "a link already past its end is due at once"
        );
        c.retry_invite(1, at(3_000));
        let mut due = Vec::new();
        c.advance(at(4_010), &mut due);
        assert_eq!(due, [Due::InviteExpired(1)]);
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn restarting_re_arms_for_the_new_deadline() {
        let mut c = SessionClock::new();
        c.start(4, at(0).wall_ms + 1_000, at(0));
        // The wall clock had jumped: the store says the real end is later.
        c.start(4, at(0).wall_ms + 5_000, at(0));
        let fired = run(&mut c, 6_000, 10);
        assert_eq!(fired.len(), 1);
        assert!(fired[0].0 >= 5_000);
        assert_eq!(c.expires_at(4), Some(at(0).wall_ms + 5_000));
    }
}
