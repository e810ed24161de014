//! Command line and environment: what the operator can set, parsed into plain values.
//!
//! Every `--flag` also has an environment variable `CATALYTIC_<FLAG_IN_CAPS>` (dashes become
//! underscores). A flag on the command line wins over its variable. Parsing is pure so it can be
//! unit-tested; `main.rs` turns a `ConfigError` into a message and a non-zero exit.

use crate::addr::TrustedProxies;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Settings of `catalytic serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub db: PathBuf,
    /// Origin the pages and invite links are reached at, normalised (`http::normalize_origin`);
    /// `None` = `http://<bound address>` for links, the request's `Host` for origin checks.
    pub public_url: Option<String>,
    pub session_length: Duration,
    pub heartbeat: Duration,
    pub invite_ttl: Duration,
    /// `--agent-key` (checked: at least [`AGENT_KEY_MIN_CHARS`]); `--agent-key-file` is read
    /// into it at start (`Server::bind`).
    pub agent_key: Option<String>,
    pub agent_key_file: Option<PathBuf>,
    pub log_level: log::LevelFilter,
    pub echo_path: Option<String>,
    /// `None` = the open-file limit minus a reserve, decided at start.
    pub max_connections: Option<usize>,
    /// 0 = no per-IP limit.
    pub max_connections_per_ip: usize,
    /// `--trusted-proxy`: addresses and CIDR ranges.
    pub trusted_proxies: TrustedProxies,
    pub max_outbox_bytes: usize,
    pub login_failures_per_minute: u32,
    /// Sign-in through an OpenID Connect provider, when configured.
    pub oidc: Option<OidcConfig>,
    /// `--password-login off` turns password sign-in off (only allowed with OIDC).
    pub password_login: bool,
    /// `--database-url postgres://…`: cluster mode on PostgreSQL instead of the SQLite file.
    pub database_url: Option<String>,
    /// `--node-id`: this node's name in logs, metrics and shared state.
    pub node_id: String,
    /// `--drain-secs`: how long a SIGTERM spreads the stream closes over (0: all at once).
    pub drain: Duration,
}

/// `--oidc-*`: the identity provider admins sign in with.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer URL exactly as the provider names itself (its discovery document lives under
    /// `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: ClientSecret,
    /// Lower-case domains whose verified emails get an admin account on first sign-in.
    pub allowed_domains: Vec<String>,
    /// The label of the sign-in button ("Sign in with <name>").
    pub name: String,
}

/// Where the client secret comes from. Read when the server starts, never logged.
#[derive(Clone)]
pub enum ClientSecret {
    File(PathBuf),
    /// From `CATALYTIC_OIDC_CLIENT_SECRET` (never a command-line flag: `ps` would show it).
    Value(String),
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientSecret::File(p) => write!(f, "File({})", p.display()),
            ClientSecret::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

/// Where the data lives: the embedded SQLite file, or a cluster's PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    /// A `postgres://` URL (it may carry a password: never log it whole).
    Postgres(String),
}

/// What the command line asks for. (Made once per process: the size of `Serve` does not matter.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Command {
    Serve(ServeConfig),
    AdminCreate {
        email: String,
        db: Database,
    },
    AdminToken {
        email: String,
        db: Database,
        ttl: Duration,
    },
    /// End every session of this admin.
    AdminRevoke {
        email: String,
        db: Database,
    },
    Help,
    Version,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The synopsis, printed with every command-line error.
pub const USAGE: &str = "\
usage:
  catalytic [serve] [--FLAG VALUE]...                 (catalytic --help lists every flag)
  catalytic admin create --email EMAIL [--db PATH | --database-url URL]   (password: CATALYTIC_ADMIN_PASSWORD, a prompt on a terminal, or one line on stdin)
  catalytic admin token  --email EMAIL [--db PATH | --database-url URL] [--ttl-hours N]   (default 168: a web session's)
  catalytic admin revoke --email EMAIL [--db PATH | --database-url URL]   (ends every session of that admin)
  catalytic --version";

/// The flags of `serve` (each also read from `CATALYTIC_<FLAG_IN_CAPS>`); `help.rs` has a line
/// for each.
pub(crate) const SERVE_FLAGS: &[&str] = &[
    "listen",
    "db",
    "public-url",
    "session-minutes",
    "heartbeat-secs",
    "invite-ttl-hours",
    "agent-key",
    "agent-key-file",
    "log-level",
    "echo-path",
    "max-connections",
    "max-connections-per-ip",
    "trusted-proxy",
    "max-outbox-bytes",
    "login-failures-per-minute",
    "oidc-issuer",
    "oidc-client-id",
    "oidc-client-secret-file",
    "oidc-allowed-domains",
    "oidc-name",
    "password-login",
    "database-url",
    "node-id",
    "drain-secs",
];

/// The shortest agent key accepted (API.md: a short key is found by trying).
pub const AGENT_KEY_MIN_CHARS: usize = 32;

/// Default lifetime of `admin token` (hours): a web session's (7 days).
const ADMIN_TOKEN_TTL_HOURS: f64 = 7.0 * 24.0;

/// The environment variable that may hold the OIDC client secret.
const OIDC_SECRET_ENV: &str = "CATALYTIC_OIDC_CLIENT_SECRET";

/// Parse `args` (without the program name) with `env` as the fallback for every flag.
pub fn parse(args: &[String], env: &HashMap<String, String>) -> Result<Command, ConfigError> {
    let mut rest = args;
    let sub = match rest.first().map(String::as_str) {
        Some("-h" | "--help" | "help") => return Ok(Command::Help),
        Some("-V" | "--version" | "version") => return Ok(Command::Version),
        Some("serve") => {
            rest = &rest[1..];
            "serve"
        }
        Some("admin") => match rest.get(1).map(String::as_str) {
            Some("create") => {
                rest = &rest[2..];
                "admin create"
            }
            Some("token") => {
                rest = &rest[2..];
                "admin token"
            }
            Some("revoke") => {
                rest = &rest[2..];
                "admin revoke"
            }
            Some(other) => return Err(err(format!("unknown admin command `{other}`"))),
            None => return Err(err("`admin` needs `create`, `token` or `revoke`")),
        },
        Some(a) if !a.starts_with('-') => return Err(err(format!("unknown command `{a}`"))),
        _ => "serve",
    };
    let allowed: &[&str] = match sub {
        "serve" => SERVE_FLAGS,
        "admin create" | "admin revoke" => &["email", "db", "database-url"],
        _ => &["email", "db", "database-url", "ttl-hours"],
    };
    let flags = Flags::collect(rest, allowed, env)?;
    let command = match sub {
        "serve" => serve_command(&flags, env),
        "admin create" => (|| {
            Ok(Command::AdminCreate {
                email: flags.required("email")?,
                db: flags.database()?,
            })
        })(),
        "admin revoke" => (|| {
            Ok(Command::AdminRevoke {
                email: flags.required("email")?,
                db: flags.database()?,
            })
        })(),
        _ => (|| {
            Ok(Command::AdminToken {
                email: flags.required("email")?,
                db: flags.database()?,
                ttl: hours(
                    flags.number("ttl-hours", ADMIN_TOKEN_TTL_HOURS)?,
                    "ttl-hours",
                )?,
            })
        })(),
    };
    command.map_err(|e| flags.name_source(e))
}

/// `serve`: the server's settings, OpenID Connect included.
fn serve_command(flags: &Flags, env: &HashMap<String, String>) -> Result<Command, ConfigError> {
    let mut cfg = serve_config(flags)?;
    cfg.oidc = oidc_config(flags, env)?;
    cfg.password_login = match flags.get("password-login").unwrap_or("on") {
        "on" => true,
        "off" if cfg.oidc.is_some() => false,
        "off" => {
            return Err(err(
                "--password-login off needs OpenID Connect (--oidc-issuer …): \
                 otherwise nobody could sign in",
            ))
        }
        other => return Err(err(format!("--password-login: `{other}` is not on or off"))),
    };
    Ok(Command::Serve(cfg))
}

fn serve_config(flags: &Flags) -> Result<ServeConfig, ConfigError> {
    let listen = flags.get("listen").unwrap_or("127.0.0.1:8080");
    let listen: SocketAddr = listen.parse().map_err(|_| {
        err(format!(
            "--listen: `{listen}` is not an address like 127.0.0.1:8080"
        ))
    })?;
    let public_url = match flags.get("public-url") {
        Some(u) => Some(parse_public_url(u)?),
        None => None,
    };
    let session_minutes = flags.number("session-minutes", 30.0)?;
    if session_minutes <= 0.0 || session_minutes > 60.0 * 24.0 * 365.0 {
        return Err(err("--session-minutes must be above 0 and at most a year"));
    }
    let heartbeat_secs = flags.number("heartbeat-secs", 30.0)?;
    if !(0.05..=3600.0).contains(&heartbeat_secs) {
        return Err(err("--heartbeat-secs must be between 0.05 and 3600"));
    }
    let log_level = match flags
        .get("log-level")
        .unwrap_or("info")
        .to_ascii_lowercase()
        .as_str()
    {
        "off" => log::LevelFilter::Off,
        "error" => log::LevelFilter::Error,
        "warn" | "warning" => log::LevelFilter::Warn,
        "info" => log::LevelFilter::Info,
        "debug" => log::LevelFilter::Debug,
        "trace" => log::LevelFilter::Trace,
        other => {
            return Err(err(format!(
                "--log-level: `{other}` is not one of off, error, warn, info, debug, trace"
            )))
        }
    };
    let echo_path = match flags.get("echo-path") {
        Some(p) if p.starts_with('/') && p.len() > 1 => Some(p.to_string()),
        Some(p) => return Err(err(format!("--echo-path: `{p}` must start with `/`"))),
        None => None,
    };
    let max_connections = match flags.get("max-connections") {
        Some(_) => Some(flags.integer("max-connections", 0)?.max(1)),
        None => None,
    };
    let trusted_proxies = match flags.get("trusted-proxy") {
        Some(list) => {
            TrustedProxies::parse(list).map_err(|e| err(format!("--trusted-proxy: {e}")))?
        }
        None => TrustedProxies::default(),
    };
    let agent_key = flags.get("agent-key").filter(|k| !k.is_empty());
    let agent_key_file = flags.get("agent-key-file").filter(|k| !k.is_empty());
    if agent_key.is_some() && agent_key_file.is_some() {
        return Err(err("give --agent-key or --agent-key-file, not both"));
    }
    let agent_key = agent_key
        .map(|k| check_agent_key(k, "--agent-key"))
        .transpose()?;
    let max_outbox_bytes = flags.integer("max-outbox-bytes", 1 << 20)?;
    if max_outbox_bytes < 1024 {
        return Err(err("--max-outbox-bytes must be at least 1024"));
    }
    Ok(ServeConfig {
        listen,
        db: flags.db(),
        public_url,
        session_length: Duration::from_secs_f64(session_minutes * 60.0),
        heartbeat: Duration::from_secs_f64(heartbeat_secs),
        invite_ttl: hours(flags.number("invite-ttl-hours", 168.0)?, "invite-ttl-hours")?,
        agent_key,
        agent_key_file: agent_key_file.map(PathBuf::from),
        log_level,
        echo_path,
        max_connections,
        max_connections_per_ip: flags.integer("max-connections-per-ip", 512)?,
        trusted_proxies,
        max_outbox_bytes,
        login_failures_per_minute: flags.integer("login-failures-per-minute", 10)?.max(1) as u32,
        oidc: None,
        password_login: true,
        database_url: match flags.database()? {
            Database::Postgres(url) => Some(url),
            Database::Sqlite(_) => None,
        },
        node_id: match flags.get("node-id").filter(|v| !v.is_empty()) {
            Some(id) if id.len() <= 64 && id.chars().all(|c| c.is_ascii_graphic()) => {
                id.to_string()
            }
            Some(id) => {
                return Err(err(format!(
                    "--node-id: `{id}` must be 1 to 64 printable characters without spaces"
                )))
            }
            None => default_node_id(),
        },
        drain: {
            let secs = flags.number("drain-secs", 0.0)?;
            if !(0.0..=3600.0).contains(&secs) {
                return Err(err("--drain-secs must be between 0 and 3600"));
            }
            Duration::from_secs_f64(secs)
        },
    })
}

/// `<host name>-<process id>`: unique among the nodes of a deployment without configuration.
fn default_node_id() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let host = if ok {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    let host = if host.is_empty() {
        "node".to_string()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}

/// The `--oidc-*` flags: all of issuer, client id and secret, or none of them.
fn oidc_config(
    flags: &Flags,
    env: &HashMap<String, String>,
) -> Result<Option<OidcConfig>, ConfigError> {
    let issuer = flags.get("oidc-issuer").filter(|v| !v.is_empty());
    let client_id = flags.get("oidc-client-id").filter(|v| !v.is_empty());
    let secret_file = flags
        .get("oidc-client-secret-file")
        .filter(|v| !v.is_empty());
    let secret_env = env.get(OIDC_SECRET_ENV).filter(|v| !v.is_empty());
    let others = ["oidc-allowed-domains", "oidc-name"]
        .iter()
        .any(|f| flags.get(f).is_some());
    let (issuer, client_id) = match (issuer, client_id) {
        (None, None) if secret_file.is_none() && !others => return Ok(None),
        (Some(i), Some(c)) => (i, c),
        _ => {
            return Err(err(
                "OpenID Connect needs --oidc-issuer, --oidc-client-id and a client secret \
                 (--oidc-client-secret-file or CATALYTIC_OIDC_CLIENT_SECRET)",
            ))
        }
    };
    let issuer = parse_issuer(issuer)?;
    let client_secret = match (secret_file, secret_env) {
        (Some(path), _) => ClientSecret::File(PathBuf::from(path)),
        (None, Some(v)) => ClientSecret::Value(v.clone()),
        (None, None) => {
            return Err(err(
                "--oidc-issuer needs the client secret: --oidc-client-secret-file PATH \
                 or CATALYTIC_OIDC_CLIENT_SECRET",
            ))
        }
    };
    let allowed_domains = flags
        .get("oidc-allowed-domains")
        .unwrap_or("")
        .split(',')
        .map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
        .filter(|d| !d.is_empty())
        .map(|d| {
            let ok = d.contains('.')
                && !d.starts_with(['.', '-'])
                && !d.ends_with('.')
                && d.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if ok {
                Ok(d)
            } else {
                Err(err(format!(
                    "--oidc-allowed-domains: `{d}` is not a domain like example.com"
                )))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let name = match flags.get("oidc-name").map(str::trim) {
        Some(n) if !n.is_empty() => {
            if n.chars().count() > 100 || n.chars().any(char::is_control) {
                return Err(err("--oidc-name must be 1 to 100 printable characters"));
            }
            n.to_string()
        }
        // The provider's host name: "Sign in with accounts.google.com".
        _ => host_of(&issuer).to_string(),
    };
    Ok(Some(OidcConfig {
        issuer,
        client_id: client_id.to_string(),
        client_secret,
        allowed_domains,
        name,
    }))
}

/// An issuer is an `https://` URL without query or fragment; plain `http://` only on a loopback
/// address (a provider on this machine, as in tests): the ID token's keys must not travel in
/// the clear.
fn parse_issuer(url: &str) -> Result<String, ConfigError> {
    let bad = |why: &str| err(format!("--oidc-issuer: `{url}` {why}"));
    let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(r), _) => (true, r),
        (None, Some(r)) => (false, r),
        _ => return Err(bad("must start with https://")),
    };
    if rest.is_empty() || rest.starts_with('/') || url.contains(['?', '#', ' ']) {
        return Err(bad("must be a URL like https://accounts.example.com"));
    }
    if !https && !is_loopback_host(host_of(url)) {
        return Err(bad(
            "must use https:// (plain http:// is accepted only on a loopback address)",
        ));
    }
    Ok(url.to_string())
}

/// The host of an `http(s)://host[:port][/path]` URL, without port or brackets.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority.split(':').next().unwrap_or(authority)
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `--public-url` must be an http(s) origin; it is kept normalised (scheme and host in lower
/// case, the default port dropped, no trailing slash), the one form origins are compared in.
fn parse_public_url(url: &str) -> Result<String, ConfigError> {
    let lower = url.to_ascii_lowercase();
    if !lower.starts_with("http://") && !lower.starts_with("https://") {
        return Err(err(format!(
            "--public-url: `{url}` must start with http:// or https://"
        )));
    }
    crate::http::normalize_origin(url).ok_or_else(|| {
        err(format!(
            "--public-url: `{url}` must be an origin like https://interviews.example.com"
        ))
    })
}

/// An agent key is at least [`AGENT_KEY_MIN_CHARS`] characters: a short one is found by
/// trying (one character fell in 11 handshakes). `source` names where it came from.
pub fn check_agent_key(key: &str, source: &str) -> Result<String, ConfigError> {
    let n = key.chars().count();
    if n < AGENT_KEY_MIN_CHARS {
        return Err(err(format!(
            "{source}: the agent key has {n} characters; it must have at least \
             {AGENT_KEY_MIN_CHARS} (e.g. `openssl rand -hex 32`)"
        )));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(format!(
            "{source}: the agent key must not hold spaces or control characters"
        )));
    }
    Ok(key.to_string())
}

fn hours(h: f64, name: &str) -> Result<Duration, ConfigError> {
    if h <= 0.0 || h > 24.0 * 365.0 * 10.0 {
        return Err(err(format!(
            "--{name} must be above 0 and at most ten years"
        )));
    }
    Ok(Duration::from_secs_f64(h * 3600.0))
}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// Flag values after merging the command line over the environment.
struct Flags {
    values: HashMap<&'static str, String>,
    /// Flags whose value came from their environment variable.
    from_env: Vec<&'static str>,
}

/// `CATALYTIC_<FLAG_IN_CAPS>`.
fn env_var(flag: &str) -> String {
    format!("CATALYTIC_{}", flag.to_ascii_uppercase().replace('-', "_"))
}

impl Flags {
    fn collect(
        args: &[String],
        allowed: &[&'static str],
        env: &HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut values = HashMap::new();
        let mut from_env = Vec::new();
        for name in allowed {
            if let Some(v) = env.get(&env_var(name)) {
                values.insert(*name, v.clone());
                from_env.push(*name);
            }
        }
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            let Some(body) = arg.strip_prefix("--") else {
                return Err(err(format!("unexpected argument `{arg}`")));
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let Some(known) = allowed.iter().find(|a| **a == name) else {
                return Err(err(format!("unknown flag `--{name}`")));
            };
            let value = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    args.get(i)
                        .cloned()
                        .ok_or_else(|| err(format!("--{name} needs a value")))?
                }
            };
            values.insert(*known, value);
            from_env.retain(|n| n != known);
            i += 1;
        }
        Ok(Flags { values, from_env })
    }

    /// An error about a flag whose value came from the environment names the variable the
    /// operator has to fix, not a flag they never typed.
    fn name_source(&self, e: ConfigError) -> ConfigError {
        let mut msg = e.0;
        for name in &self.from_env {
            let flag = format!("--{name}");
            let at = msg.match_indices(&flag).map(|(i, _)| i).find(|&i| {
                // Whole flag names only: `--max-connections` is not `--max-connections-per-ip`.
                !msg[i + flag.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
            });
            if let Some(i) = at {
                msg.replace_range(i..i + flag.len(), &env_var(name));
            }
        }
        ConfigError(msg)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .map(String::from)
            .ok_or_else(|| err(format!("--{name} is required")))
    }

    fn db(&self) -> PathBuf {
        PathBuf::from(self.get("db").unwrap_or("./catalytic.db"))
    }

    /// `--database-url` (PostgreSQL) if given, else the SQLite file of `--db`.
    fn database(&self) -> Result<Database, ConfigError> {
        match self.get("database-url").filter(|v| !v.is_empty()) {
            None => Ok(Database::Sqlite(self.db())),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Database::Postgres(url.to_string()))
            }
            Some(_) => Err(err(
                "--database-url must be a postgres:// URL (postgres://USER[:PASSWORD]@HOST[:PORT]/DBNAME)",
            )),
        }
    }

    fn number(&self, name: &str, default: f64) -> Result<f64, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .ok_or_else(|| err(format!("--{name}: `{v}` is not a number"))),
        }
    }

    fn integer(&self, name: &str, default: usize) -> Result<usize, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map_err(|_| err(format!("--{name}: `{v}` is not a whole number"))),
        }
    }
}

#[cfg(test)]
mod tests;
