//! Telling admins who is here (API.md "presence"): the invitees with their session page open
//! and the admins watching.
//!
//! Rules: full state each time; right after an admin stream's `initial` (or `resumed`), the
//! state as it is then (the opening stream counted); then whenever it changed, at most once a
//! second (changes within that second are merged) and never when nothing changed since the
//! last telling. It must cost nothing on the broadcast path: each presence frame is encoded
//! once, for every admin at once. Streams that open are told the current state, encoded afresh
//! when it changed, but at most [`FRESH_ON_OPEN`] times a second: past that (a reconnect wave
//! of 10,000 admins) an opening stream gets the frame of at most a second ago and the telling
//! already scheduled by its opening brings it up to date within the second, so a wave encodes
//! the state a few dozen times, not 10,000.

use super::*;
use crate::app::messages;
use crate::hub::Stream;

/// Shortest time between two tellings (ms).
const PRESENCE_INTERVAL_MS: u64 = 1_000;
/// Opening streams told a freshly encoded state per `PRESENCE_INTERVAL_MS`, at most.
const FRESH_ON_OPEN: u32 = 32;

/// Bookkeeping of the presence broadcasts.
#[derive(Default)]
pub(super) struct Teller {
    /// Digest of the payload last broadcast to every admin (to skip a telling that would say
    /// the same).
    last_told: Option<u64>,
    /// Monotonic ms of the last broadcast.
    last_told_at: Option<u64>,
    /// A `Timer::Presence` is armed.
    scheduled: bool,
    /// The frame of the state at `cached_version`, built at monotonic `cached_at`, and its
    /// payload's digest: `(version, at, digest, frame)`.
    cached: Option<(u64, u64, u64, Rc<[u8]>)>,
    /// Fresh encodings for opening streams: (monotonic ms the window began, count in it).
    fresh_on_open: (u64, u32),
}

/// A presence payload's identity (64 bits of SipHash: two different states colliding would
/// only skip one telling, and the next change tells again).
fn digest(payload: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    payload.hash(&mut h);
    h.finish()
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

    /// Send the presence frame to an admin stream that just opened: the current state (this
    /// stream counted), or, past the budget of fresh encodings, the state of at most a second
    /// ago; then a telling is already scheduled by the opening itself (and skips this stream if
    /// it would say the same).
    pub(super) fn send_presence(&mut self, key: usize, now: Now) {
        let version = self.hub.presence_version();
        let teller = &mut self.presence;
        let (since, count) = teller.fresh_on_open;
        let within_budget =
            now.mono_ms.saturating_sub(since) >= PRESENCE_INTERVAL_MS || count < FRESH_ON_OPEN;
        let usable = teller.cached.as_ref().filter(|(v, at, _, _)| {
            *v == version
                || (!within_budget && now.mono_ms.saturating_sub(*at) < PRESENCE_INTERVAL_MS)
        });
        let (told, frame) = match usable {
            Some((_, _, d, frame)) => (*d, Rc::clone(frame)),
            None => {
                teller.fresh_on_open = if now.mono_ms.saturating_sub(since) >= PRESENCE_INTERVAL_MS
                {
                    (now.mono_ms, 1)
                } else {
                    (since, count + 1)
                };
                let payload = messages::presence(&self.current_presence(), true);
                let d = digest(&payload);
                let frame: Rc<[u8]> = Rc::from(ws::text_frame(&payload));
                self.presence.cached = Some((version, now.mono_ms, d, Rc::clone(&frame)));
                (d, frame)
            }
        };
        if let Some(ws) = self.conns.get_mut(key).and_then(|c| c.ws_mut()) {
            ws.presence_told = told;
        }
        self.send_frame(key, &frame);
    }

    /// `Timer::Presence`: tell every admin that has not been told this state, unless nothing
    /// changed since the last telling.
    pub(super) fn tell_presence(&mut self) {
        self.presence.scheduled = false;
        let now = self.time.now();
        let payload = messages::presence(&self.current_presence(), true);
        let told = digest(&payload);
        if self.presence.last_told == Some(told) {
            return;
        }
        let frame: Rc<[u8]> = Rc::from(ws::text_frame(&payload));
        self.presence.cached = Some((
            self.hub.presence_version(),
            now.mono_ms,
            told,
            Rc::clone(&frame),
        ));
        self.presence.last_told = Some(told);
        self.presence.last_told_at = Some(now.mono_ms);
        // At most once a second: a list of the admins to tell costs less than a second
        // broadcast path that filters.
        let mut untold = Vec::new();
        for key in self.hub.members(Stream::Admin) {
            if let Some(ws) = self.conns.get_mut(key).and_then(|c| c.ws_mut()) {
                if ws.presence_told != told {
                    ws.presence_told = told;
                    untold.push(key);
                }
            }
        }
        let d = crate::hub::deliver(
            &mut self.conns,
            untold.into_iter(),
            &frame,
            self.cfg.max_outbox_bytes,
            &mut self.write_list,
        );
        self.delivered(d);
    }
}
