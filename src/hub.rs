//! Who listens to what, and fan-out.
//!
//! [`Stream`] is the one name for "which WebSocket stream": it is the route a handshake asks
//! for, the set a connection joins, the audience of a broadcast and the `stream` label of the
//! metrics.
//!
//! The [`Hub`] holds slab keys of connections, never connections: the admin set, the agent set
//! and one set per invitee session. Invariants:
//! * a connection is in at most one set, from the moment its stream opens until it starts to
//!   close (`join` at open, `leave` when it stops taking broadcasts); the slot returned by `join`
//!   is what `leave` needs;
//! * a session's set exists only while it has members (so "no set" means "nobody is watching");
//! * nothing here removes or marks a connection: [`deliver`] reports the members it could not
//!   serve and the reactor decides (one place marks connections dead), after the walk, so a
//!   broadcast never changes the set it walks.
//!
//! A broadcast is one already-encoded frame (`Rc<[u8]>`) handed to every member: queued (a
//! reference-count increment, not a copy) and written with everything else the member got this
//! loop turn, in one `writev` at the turn's end.

use crate::auth::Digest32;
use crate::conn::{Conn, Sent};
use crate::metrics::CloseReason;
use slab::Slab;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// A WebSocket stream of the contract (or the conformance echo endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// `/admin/stream`: every change of the invitee list.
    Admin,
    /// `/session/{id}/stream`: one invitee's session clock and progress.
    Session(i64),
    /// `/agent/stream`: the LLM agent's channel.
    Agent,
    /// `--echo-path`: echoes messages back; for conformance tests only, never counted.
    Echo,
}

impl Stream {
    /// The stream a request path names, if any. `/session/{id}/stream` with an id that is not a
    /// number names session 0, which no user has, so the handshake is refused like any unknown
    /// session (1008) rather than with a 404.
    pub fn from_path(path: &str, echo_path: Option<&str>) -> Option<Stream> {
        match path {
            "/admin/stream" => Some(Stream::Admin),
            "/agent/stream" => Some(Stream::Agent),
            p if echo_path == Some(p) => Some(Stream::Echo),
            p => {
                let id = p.strip_prefix("/session/")?.strip_suffix("/stream")?;
                Some(Stream::Session(id.parse::<i64>().unwrap_or(0)))
            }
        }
    }

    /// The `stream` label of the metrics; `None` for the echo endpoint, which is not counted.
    pub fn label(self) -> Option<&'static str> {
        self.metric_slot().map(|i| STREAM_LABELS[i])
    }

    /// Index into per-stream metric arrays (in [`STREAM_LABELS`] order).
    pub fn metric_slot(self) -> Option<usize> {
        match self {
            Stream::Admin => Some(0),
            Stream::Session(_) => Some(1),
            Stream::Agent => Some(2),
            Stream::Echo => None,
        }
    }

    /// Whether the JSON heartbeat (`{"type":"ping"}`, silence → close) applies. The echo
    /// endpoint only echoes, so conformance suites see no frames they did not ask for.
    pub fn has_heartbeat(self) -> bool {
        self != Stream::Echo
    }
}

/// The `stream` label values, in [`Stream::metric_slot`] order.
pub const STREAM_LABELS: [&str; 3] = ["admin", "session", "agent"];

/// One member of a set: the connection's slab key and the digest of the credential it opened
/// the stream with (for admins, the admin session; logout closes the streams of one session).
#[derive(Debug, Clone)]
struct Member {
    key: usize,
    credential: Digest32,
    /// Admins: whose stream it is (presence counts streams per admin).
    admin_email: Option<Rc<str>>,
}

/// Every open stream, by the stream it serves.
#[derive(Default)]
pub struct Hub {
    admins: Slab<Member>,
    agents: Slab<Member>,
    sessions: HashMap<i64, Slab<Member>>,
    /// Open admin streams per admin email (presence).
    admin_streams: BTreeMap<Rc<str>, usize>,
    /// Bumped whenever presence (an admin or session stream) changes.
    presence_version: u64,
}

/// Who is here: the invitees with their session page open and the admins watching, with the
/// number of streams of each (API.md "presence").
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Presence {
    pub sessions: BTreeMap<i64, usize>,
    pub admins: BTreeMap<String, usize>,
}

impl Presence {
    /// Count `other`'s streams in too (another node's part of the deployment).
    pub fn add(&mut self, other: &Presence) {
        for (id, n) in &other.sessions {
            *self.sessions.entry(*id).or_default() += n;
        }
        for (email, n) in &other.admins {
            *self.admins.entry(email.clone()).or_default() += n;
        }
    }
}

/// What [`Hub::leave`] did to the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// Others are still in the set (or the slot was already free).
    Remaining,
    /// The connection was the last member of its session's set: nobody watches that session now.
    LastOfSession(i64),
}

impl Hub {
    /// Add connection `key` to the set of `stream`; returns the slot to [`leave`](Self::leave)
    /// with. Echo streams join no set (they receive no broadcasts); their slot is 0.
    /// `admin_email` names the admin of an admin stream, for presence.
    pub fn join(
        &mut self,
        stream: Stream,
        key: usize,
        credential: Digest32,
        admin_email: Option<&str>,
    ) -> usize {
        let admin_email: Option<Rc<str>> = admin_email.map(Rc::from);
        if stream == Stream::Admin {
            if let Some(email) = &admin_email {
                *self.admin_streams.entry(Rc::clone(email)).or_default() += 1;
            }
        }
        if matches!(stream, Stream::Admin | Stream::Session(_)) {
            self.presence_version += 1;
        }
        let member = Member {
            key,
            credential,
            admin_email,
        };
        match stream {
            Stream::Admin => self.admins.insert(member),
            Stream::Agent => self.agents.insert(member),
            Stream::Session(id) => self.sessions.entry(id).or_default().insert(member),
            Stream::Echo => 0,
        }
    }

    /// Remove connection `key` from `slot` of `stream`'s set. Leaving twice is harmless: a slot
    /// that is free, or that a later connection has taken since, is left alone.
    pub fn leave(&mut self, stream: Stream, slot: usize, key: usize) -> Left {
        fn take(set: &mut Slab<Member>, slot: usize, key: usize) -> Option<Member> {
            set.get(slot)
                .is_some_and(|m| m.key == key)
                .then(|| set.remove(slot))
        }
        match stream {
            Stream::Admin => {
                if let Some(m) = take(&mut self.admins, slot, key) {
                    self.presence_version += 1;
                    if let Some(email) = m.admin_email {
                        if let Some(n) = self.admin_streams.get_mut(&email) {
                            *n -= 1;
                            if *n == 0 {
                                self.admin_streams.remove(&email);
                            }
                        }
                    }
                }
            }
            Stream::Agent => {
                take(&mut self.agents, slot, key);
            }
            Stream::Session(id) => {
                if let Some(set) = self.sessions.get_mut(&id) {
                    if take(set, slot, key).is_some() {
                        self.presence_version += 1;
                    }
                    if set.is_empty() {
                        self.sessions.remove(&id);
                        return Left::LastOfSession(id);
                    }
                }
            }
            Stream::Echo => {}
        }
        Left::Remaining
    }

    fn set(&self, stream: Stream) -> Option<&Slab<Member>> {
        match stream {
            Stream::Admin => Some(&self.admins),
            Stream::Agent => Some(&self.agents),
            Stream::Session(id) => self.sessions.get(&id),
            Stream::Echo => None,
        }
    }

    /// Slab keys of the connections in `stream`'s set.
    pub fn members(&self, stream: Stream) -> impl Iterator<Item = usize> + '_ {
        self.set(stream)
            .into_iter()
            .flat_map(|set| set.iter().map(|(_, m)| m.key))
    }

    /// Whether anyone watches `stream` (for a session: whether its page is open somewhere).
    pub fn has_members(&self, stream: Stream) -> bool {
        self.set(stream).is_some_and(|s| !s.is_empty())
    }

    /// Who is here now.
    pub fn presence(&self) -> Presence {
        Presence {
            sessions: self.sessions.iter().map(|(id, s)| (*id, s.len())).collect(),
            admins: self
                .admin_streams
                .iter()
                .map(|(e, n)| (e.to_string(), *n))
                .collect(),
        }
    }

    /// Who is here now in the whole deployment: this node's streams and, in a cluster, the
    /// other nodes' (from their last shares).
    pub fn presence_with(&self, others: Option<&Presence>) -> Presence {
        let mut all = self.presence();
        if let Some(others) = others {
            all.add(others);
        }
        all
    }

    /// Changes whenever [`Self::presence`] may have changed.
    pub fn presence_version(&self) -> u64 {
        self.presence_version
    }

    /// The admin sessions (token digests) of every open admin stream, repeats included.
    pub fn admin_sessions(&self) -> impl Iterator<Item = Digest32> + '_ {
        self.admins.iter().map(|(_, m)| m.credential)
    }

    /// Admin streams opened with the admin session whose token digest is `session`.
    pub fn admins_with_session(&self, session: &Digest32) -> Vec<usize> {
        self.admins
            .iter()
            .filter(|(_, m)| m.credential == *session)
            .map(|(_, m)| m.key)
            .collect()
    }
}

/// What one broadcast did.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Members that took the frame (queued).
    pub recipients: u64,
    /// Members that could not take it: their outbox would pass its limit (slow consumer) or
    /// their socket failed. The caller marks them dead; this walk does not.
    pub failed: Vec<(usize, CloseReason)>,
}

/// Hand `frame` to every connection in `members` that still takes broadcasts, under the outbox
/// `limit` (bytes). Members that had nothing queued before are added to `to_write` (the
/// reactor's list of connections to write at the end of the turn).
pub fn deliver(
    conns: &mut Slab<Conn>,
    members: impl Iterator<Item = usize>,
    frame: &Rc<[u8]>,
    limit: usize,
    to_write: &mut Vec<usize>,
) -> Delivery {
    let mut d = Delivery::default();
    for key in members {
        let Some(conn) = conns.get_mut(key) else {
            continue;
        };
        if !conn.is_live_stream() {
            continue;
        }
        let (sent, first) = conn.send_shared(frame, limit);
        if first {
            to_write.push(key);
        }
        match sent {
            Sent::Ok => d.recipients += 1,
            Sent::Overflow => d.failed.push((key, CloseReason::SlowConsumer)),
            Sent::Failed => d.failed.push((key, CloseReason::WriteError)),
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_from_paths() {
        assert_eq!(
            Stream::from_path("/admin/stream", None),
            Some(Stream::Admin)
        );
        assert_eq!(
            Stream::from_path("/agent/stream", None),
            Some(Stream::Agent)
        );
        assert_eq!(
            Stream::from_path("/session/42/stream", None),
            Some(Stream::Session(42))
        );
        assert_eq!(
            Stream::from_path("/session/x/stream", None),
            Some(Stream::Session(0))
        );
        assert_eq!(
            Stream::from_path("/echo", Some("/echo")),
            Some(Stream::Echo)
        );
        assert_eq!(Stream::from_path("/echo", None), None);
        assert_eq!(Stream::from_path("/session/42", None), None);
        assert_eq!(Stream::Session(9).label(), Some("session"));
        assert_eq!(Stream::Echo.label(), None);
    }

    #[test]
    fn join_leave_and_members() {
        let mut hub = Hub::default();
        let a = hub.join(Stream::Admin, 10, [1; 32], Some("a@x.io"));
        let b = hub.join(Stream::Admin, 11, [2; 32], Some("b@x.io"));
        hub.join(Stream::Admin, 12, [1; 32], Some("a@x.io"));
        let s = hub.join(Stream::Session(7), 20, [3; 32], None);
        let s2 = hub.join(Stream::Session(7), 21, [3; 32], None);
        hub.join(Stream::Agent, 30, [4; 32], None);
        let p = hub.presence();
        assert_eq!(p.sessions, BTreeMap::from([(7, 2)]));
        assert_eq!(
            p.admins,
            BTreeMap::from([("a@x.io".to_string(), 2), ("b@x.io".to_string(), 1)])
        );

        let mut admins: Vec<_> = hub.members(Stream::Admin).collect();
        admins.sort();
        assert_eq!(admins, [10, 11, 12]);
        let mut same_session = hub.admins_with_session(&[1; 32]);
        same_session.sort();
        assert_eq!(same_session, [10, 12]);
        assert_eq!(hub.members(Stream::Agent).collect::<Vec<_>>(), [30]);
        assert_eq!(hub.members(Stream::Session(8)).count(), 0);
        assert_eq!(hub.members(Stream::Echo).count(), 0);

        assert_eq!(hub.leave(Stream::Admin, a, 10), Left::Remaining);
        assert_eq!(
            hub.leave(Stream::Admin, a, 10),
            Left::Remaining,
            "twice is harmless"
        );
        let v = hub.presence_version();
        assert_eq!(hub.leave(Stream::Admin, b, 11), Left::Remaining);
        assert!(hub.presence_version() > v);
        assert_eq!(hub.members(Stream::Admin).collect::<Vec<_>>(), [12]);
        assert_eq!(
            hub.presence().admins,
            BTreeMap::from([("a@x.io".to_string(), 1)]),
            "a second leave of the same stream changed nothing"
        );

        assert!(hub.has_members(Stream::Session(7)));
        assert_eq!(hub.leave(Stream::Session(7), s, 20), Left::Remaining);
        assert_eq!(
            hub.leave(Stream::Session(7), s2, 21),
            Left::LastOfSession(7)
        );
        assert!(!hub.has_members(Stream::Session(7)));
        assert_eq!(hub.leave(Stream::Session(7), s2, 21), Left::Remaining);

        // A slot freed and taken again belongs to the newcomer: a late second leave of the
        // old member must not evict it.
        let again = hub.join(Stream::Session(7), 22, [3; 32], None);
        assert_eq!(again, s, "the slab reuses the slot");
        assert_eq!(hub.leave(Stream::Session(7), s, 20), Left::Remaining);
        assert_eq!(hub.members(Stream::Session(7)).collect::<Vec<_>>(), [22]);
        assert_eq!(hub.presence().sessions.len(), 1);
    }
}
