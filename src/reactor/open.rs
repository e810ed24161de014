//! Getting ready to serve, before the loop starts (so it may wait): the process limits, the
//! storage (the SQLite file, or a cluster's PostgreSQL) and the view built from it, sign-in
//! through the identity provider, the agent key.
//!
//! Everything here either succeeds or stops the start with a message naming the flag or file
//! at fault (`Server::bind` returns it; `main` prints it and exits non-zero): a server that
//! starts half-configured is worse than one that does not start.
//!
//! The view is built from one transaction: the users, the log's head and tail, and the valid
//! admin sessions are read together, so the view, the in-memory log and what a resume asks
//! storage for all stand at the same event number. The admin sessions warm the cache so a
//! reconnect wave after a restart costs no storage read per handshake.

use super::*;
use crate::app::event_log::MEMORY_CAP;
use crate::storage::Backend;
use crate::store::{self, DbError, Postgres, Sqlite, Tx, RETENTION};

/// Storage threads in cluster mode: commands to PostgreSQL run side by side, each a network
/// round trip or several; their events are put in order by the intake.
const POSTGRES_CONNECTIONS: usize = 3;

/// What the loop starts with. Built before any thread starts, then handed over: the backends
/// to the storage threads, the view to the reactor.
pub(super) struct Opened {
    /// One per storage thread.
    pub backends: Vec<Backend>,
    pub app: App,
    /// The deployment's server key (invite links, signed cookies).
    pub key: [u8; 32],
    /// Cluster mode: where the bus follows the log from.
    pub follow: Option<Follow>,
}

/// What the bus needs to follow the log.
pub(super) struct Follow {
    /// The database URL (the bus opens a connection of its own, for `LISTEN`).
    pub url: String,
    /// The log's epoch at the snapshot: a different one later means the database was replaced.
    pub epoch: String,
}

/// The agent key: `--agent-key` (checked by `config`), or read from `--agent-key-file` (kept
/// off the command line, where `ps` shows it) and held to the same rule.
pub(super) fn agent_key(cfg: &ServeConfig) -> Result<Option<String>, String> {
    let Some(path) = &cfg.agent_key_file else {
        return Ok(cfg.agent_key.clone());
    };
    crate::files::warn_if_others_can_read(path);
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--agent-key-file {}: cannot read it: {e}", path.display()))?;
    let source = format!("--agent-key-file {}", path.display());
    let key = crate::config::check_agent_key(text.trim(), &source).map_err(|e| e.to_string())?;
    log::info!("agent key: {}", path.display());
    Ok(Some(key))
}

/// Open the storage the config names.
pub(super) fn storage(cfg: &ServeConfig, public_url: String) -> Result<Opened, String> {
    match &cfg.database_url {
        None => sqlite(cfg, public_url),
        Some(url) => postgres(cfg, url, public_url).map_err(|e| format!("PostgreSQL: {e}")),
    }
}

/// Open the SQLite file (and its key file), trim the log, and build the view: users, the log's
/// tail, and every valid admin session (so a reconnect wave after a restart costs no storage
/// read).
fn sqlite(cfg: &ServeConfig, public_url: String) -> Result<Opened, String> {
    let now = crate::clock::wall_ms();
    // The server key derives every invite token: a new key changes every link, so say so.
    let (key, new_key) = store::load_or_create_key(&cfg.db).map_err(|e| e.to_string())?;
    let mut db = Sqlite::open(&cfg.db, Some(key)).map_err(|e| e.to_string())?;
    let users = db.load_users().map_err(|e| e.to_string())?;
    if new_key && !users.is_empty() {
        log::warn!(
            "the server key file {} was missing: a new one was made, and the invite links of all {} users changed",
            store::key_path(&cfg.db).display(),
            users.len()
        );
        db.rehash_invites(&users).map_err(|e| e.to_string())?;
    }
    // No admin yet: a one-time code guards `/setup`, so whoever reaches the port first cannot
    // make themselves admin without reading the log.
    let setup_code = if db.admin_count().map_err(|e| e.to_string())? == 0 {
        Some(crate::auth::new_token().map_err(|e| e.to_string())?)
    } else {
        None
    };
    let (tail, sessions) = db
        .write(|tx| {
            prune(tx, now)?;
            Ok::<_, DbError>((log_tail(tx)?, tx.admin_sessions(now)?))
        })
        .map_err(|e| e.to_string())?;
    let app = view(users, tail, sessions, public_url, setup_code);
    Ok(Opened {
        backends: vec![Backend::Sqlite(db)],
        app,
        key,
        follow: None,
    })
}

/// Connect to the cluster's PostgreSQL (creating or migrating its schema once, whoever starts
/// first), and build the view from one snapshot. The bus then follows the log from exactly
/// there (it reads `seq > head` after it starts listening, so nothing committed in between is
/// lost).
fn postgres(cfg: &ServeConfig, url: &str, public_url: String) -> Result<Opened, DbError> {
    let mut pg = Postgres::open(url, &format!("catalytic-{}", cfg.node_id))?;
    let key = pg.key();
    // Made before the transaction (randomness can fail; a transaction should not wait on it).
    let fresh_code =
        crate::auth::new_token().map_err(|e| DbError::Io(format!("OS randomness: {e}")))?;
    let (setup_code, sessions) = pg.cluster_transaction(false, |tx, now| {
        prune(tx, now)?;
        // Every node offers the same one-time code until the first admin exists.
        let code = if tx.admin_count()? == 0 {
            let stored = tx.setting_or_insert("setup_code", fresh_code.as_bytes())?;
            Some(String::from_utf8_lossy(&stored).into_owned())
        } else {
            None
        };
        Ok::<_, DbError>((code, tx.admin_sessions(now)?))
    })?;
    // A read-only transaction: one consistent snapshot of users and log, whatever other nodes
    // commit meanwhile.
    let (users, tail) = pg.cluster_transaction(true, |tx, _| {
        Ok::<_, DbError>((tx.all_users()?, log_tail(tx)?))
    })?;
    let epoch = tail.head.epoch.clone();
    let mut backends = Vec::with_capacity(POSTGRES_CONNECTIONS);
    for i in 1..POSTGRES_CONNECTIONS {
        backends.push(Backend::Postgres(
            pg.another(&format!("catalytic-{}-{i}", cfg.node_id))?,
        ));
    }
    let url = pg.url().to_string();
    backends.push(Backend::Postgres(pg));
    log::info!(
        "cluster node {} on PostgreSQL ({} storage connections)",
        cfg.node_id,
        POSTGRES_CONNECTIONS
    );
    let app = view(users, tail, sessions, public_url, setup_code);
    Ok(Opened {
        backends,
        app,
        key,
        follow: Some(Follow { url, epoch }),
    })
}

/// Prune expired admin sessions and trim the log to what retention requires.
fn prune(tx: &mut dyn Tx, now: i64) -> Result<(), DbError> {
    let pruned = tx.prune_admin_sessions(now)?;
    if pruned > 0 {
        log::info!("removed {pruned} expired admin sessions");
    }
    tx.trim_events(RETENTION, now)?;
    Ok(())
}

/// Where the view's event log starts. Read in the same transaction as the users, so the view
/// and the log tail stand at the same position.
struct Tail {
    head: store::LogHead,
    /// The newest events, oldest first: at most what memory keeps ([`MEMORY_CAP`]).
    events: Vec<store::StoredEvent>,
    /// The first number storage still holds (`head + 1` when it holds none).
    stored_from: u64,
}

/// Read the log's [`Tail`].
fn log_tail(tx: &mut dyn Tx) -> Result<Tail, DbError> {
    let head = tx.log_head()?;
    let tail_from = head.head.saturating_sub(MEMORY_CAP as u64) + 1;
    let events = tx.events_between(tail_from, head.head)?;
    let stored_from = tx.oldest_event()?.unwrap_or(head.head + 1);
    Ok(Tail {
        head,
        events,
        stored_from,
    })
}

/// The view of what was loaded, with the admin sessions remembered.
fn view(
    users: Vec<crate::model::User>,
    tail: Tail,
    sessions: Vec<store::AdminSession>,
    public_url: String,
    setup_code: Option<String>,
) -> App {
    let Tail {
        head,
        events,
        stored_from,
    } = tail;
    log::info!(
        "event log {} at {} ({} events held from {stored_from})",
        head.epoch,
        head.head,
        head.head + 1 - stored_from
    );
    if let Some(code) = &setup_code {
        log::warn!("no admin account yet: create the first one at {public_url}/setup?code={code}");
    }
    let mut app = App::new(users, head, &events, stored_from, public_url, setup_code);
    for s in sessions {
        app.remember_admin_session(s);
    }
    app
}

/// Start sign-in through the identity provider, when configured. The redirect URI is built
/// from the public URL, so a server listening on every address needs `--public-url`. The
/// attempt keys derive from the deployment's server key, so every node accepts every attempt.
pub(super) fn oidc(
    cfg: &ServeConfig,
    public_url: &str,
    local: SocketAddr,
    key: &[u8; 32],
    waker: Arc<Waker>,
) -> Result<Option<Oidc>, String> {
    let Some(oidc_cfg) = &cfg.oidc else {
        return Ok(None);
    };
    if cfg.public_url.is_none() && local.ip().is_unspecified() {
        return Err(format!(
            "OpenID Connect needs --public-url when listening on {local}: the provider \
             sends browsers back to <public-url>{}",
            crate::oidc::CALLBACK_PATH
        ));
    }
    let settings = crate::oidc::Settings::load(oidc_cfg, public_url)?;
    log::info!(
        "sign-in with {} ({}); register the redirect URI {}",
        settings.name,
        settings.issuer,
        settings.redirect_uri
    );
    Oidc::start(settings, key, waker).map(Some)
}

/// Raise the soft open-file limit to the hard limit; returns the limit now in force. Each
/// connection is a descriptor, and the default soft limit (often 1,024) would cap a server
/// meant for tens of thousands of streams. Capped at 2^24 so an "unlimited" limit still gives a
/// sane `--max-connections` default.
pub(super) fn raise_nofile_limit() -> usize {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 1024;
        }
        if rl.rlim_cur < rl.rlim_max {
            let want = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                rl = want;
            }
        }
        rl.rlim_cur.min(1 << 24) as usize
    }
}

/// mio listens with a backlog of 128; a reconnect wave of thousands wants the kernel's maximum.
pub(super) fn widen_backlog(listener: &std::net::TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: listen(2) on a socket we own; a failure leaves the old backlog.
    unsafe {
        libc::listen(listener.as_raw_fd(), 65_535);
    }
}

/// Send buffer of a WebSocket stream, in bytes (Linux doubles it for its own bookkeeping,
/// socket(7)): 256 KiB in the kernel is 2.5 MB/s to an admin 100 ms away, and everything beyond
/// it waits in the stream's outbox, where admission control (`admission.rs`) sees it and the
/// outbox limit bounds it. Left to autotuning, the kernel takes up to 4 MiB per socket: a
/// backlog admission cannot see (a stream behind by seconds would look up to date) and memory
/// no limit of ours covers.
const STREAM_SEND_BUFFER: libc::c_int = 128 * 1024;

/// Cap the kernel's send buffer of a stream's socket at [`STREAM_SEND_BUFFER`]. A failure
/// leaves autotuning on, which only makes admission control later to notice a slow stream.
pub(super) fn cap_send_buffer(sock: &mio::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let size = STREAM_SEND_BUFFER;
    // SAFETY: setsockopt(2) on a socket we own, reading one c_int we pass.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        log::debug!("SO_SNDBUF not set: {}", std::io::Error::last_os_error());
    }
}
