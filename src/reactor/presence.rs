//! Telling admins who is here (API.md "presence"): the invitees with their session page open
//! and the admins watching.
//!
//! Rules: full state each time; right after an admin stream's `initial` (or `resumed`); then
//! whenever it changed, at most once a second (changes within that second are merged) and
//! never when nothing changed since the last telling. It must cost nothing on the broadcast
//! path: each presence frame is encoded once, for every admin at once, and at most once a
//! second however many streams come and go (a reconnect wave of 10,000 admins encodes it a
//! handful of times, not 10,000).

use super::*;
use crate::app::messages;
use crate::hub::Stream;

/// Shortest time between two tellings (ms).
const PRESENCE_INTERVAL_MS: u64 = 1_000;

/// Bookkeeping of the presence broadcasts.
#[derive(Default)]
pub(super) struct Teller {
    /// The payload last broadcast to every admin (to skip a telling that would say the same).
    last_told: Option<Vec<u8>>,
    /// Monotonic ms of the last broadcast.
    last_told_at: Option<u64>,
    /// A `Timer::Presence` is armed.
    scheduled: bool,
    /// The frame of the state at `cached_version`, built at monotonic `cached_at`.
    cached: Option<(u64, u64, Rc<[u8]>)>,
}

impl Server {
    /// An admin or session stream opened or closed: schedule a telling if none is.
    pub(super) fn presence_changed(&mut self, now: Now) {
        if self.presence.scheduled {
            return;
        }
        self.presence.scheduled = true;
        let at = self
            .presence
            .last_told_at
            .map_or(now.mono_ms, |t| (t + PRESENCE_INTERVAL_MS).max(now.mono_ms));
        self.timers.insert(at, Timer::Presence);
    }

    /// The presence frame for a stream that just opened. It reflects the state of at most a
    /// second ago; if anything changed since, a telling is already scheduled.
    pub(super) fn presence_frame(&mut self, now: Now) -> Rc<[u8]> {
        let version = self.hub.presence_version();
        if let Some((v, at, frame)) = &self.presence.cached {
            if *v == version || now.mono_ms.saturating_sub(*at) < PRESENCE_INTERVAL_MS {
                return Rc::clone(frame);
            }
        }
        let frame: Rc<[u8]> = Rc::from(ws::text_frame(&messages::presence(
            &self.hub.presence(),
            true,
        )));
        self.presence.cached = Some((version, now.mono_ms, Rc::clone(&frame)));
        frame
    }

    /// `Timer::Presence`: tell every admin, unless nothing changed since the last telling.
    pub(super) fn tell_presence(&mut self) {
        self.presence.scheduled = false;
        let now = self.time.now();
        let payload = messages::presence(&self.current_presence(), true);
        if self.presence.last_told.as_deref() == Some(payload.as_slice()) {
            return;
        }
        let frame: Rc<[u8]> = Rc::from(ws::text_frame(&payload));
        self.presence.cached = Some((self.hub.presence_version(), now.mono_ms, Rc::clone(&frame)));
        self.presence.last_told = Some(payload);
        self.presence.last_told_at = Some(now.mono_ms);
        self.broadcast(Stream::Admin, &frame);
    }
}
