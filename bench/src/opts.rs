//! The command line: usage text, options with their defaults, and parsing. Bad input ends the
//! process with exit code 2 and the usage on stderr, before anything is started.

use crate::server::Kind;
use crate::sys;
use std::path::PathBuf;
use std::time::Duration;

const USAGE: &str = "\
usage: catalytic-bench SCENARIO [options]

scenarios:
  fanout     N admin clients; R rounds of POST /api/users; per round p50/p99/max of the
             time from the POST write to each client's receipt of that round's user_added
  storm      N clients connect at once: time until all have `initial`, failures
  memory     server RSS per idle admin connection at N (fresh server)
  sustained  POST rate stepped up with 1,000 clients until p99 exceeds a bound
  sessions   10,000 activated session streams with timers running: server CPU while idle
             (catalytic only)
  compare    fanout for catalytic and the floor in the same run, rounds alternating between
             them, with ratios (past this process's descriptor limit, the floor's clients
             live in a peer process: the same executable, driven over a pipe)
  all        compare, storm, memory, sustained and sessions, for every selected server

  cold       compare with cold rounds beside the warm ones: each cold POST on a fresh
             connection (connect, POST, close) after --cold-gap-ms idle (default N
             1000,10000)
  burst      K writes (--writes, default 1000) as fast as --http-conns keep-alive
             connections take them (one request outstanding each) to N admins (default
             1000): time until every admin has all K, POST latency p50/p99/max,
             repeated --bursts times, servers interleaved
  overload   open-loop writes at --rate for --step-secs to N admins (default 1000):
             delivery p50/p99/max, POSTs accepted (201) vs refused (503 + Retry-After),
             accepted writes lost. Without --rate: twice the floor's sustainable rate,
             measured first (the sustained search on the floor)
  reconnect  reconnect wave (catalytic only): N admins (default 10000) drop, --writes
             (default 10) happen, all reconnect at once resuming with ?epoch=&since=;
             time until every client has caught up, against the same wave taking a full
             `initial` (no since) with --users (default 1000) users in the list

  cluster    (issue 10) the three cluster scenarios below on one deployment, fan-out first
  cluster-lag      bus lag: --writes (default 1000) POSTs, one at a time, alternating over
             the nodes, to --clients admins per node (default 1): POST write → receipt on
             the other nodes vs on the writing node, p50/p99/max, and their difference
  cluster-fanout   fan-out to N admins (default 1000) on one SQLite node, on one cluster
             node, and spread evenly over the cluster's nodes (POSTs on the first), same
             rounds as `fanout`, in one run
  cluster-writes   `burst` of --writes (default 2000) POSTs over --http-conns connections
             spread over the nodes to N admins (default 20) spread likewise, against the
             same on one SQLite node: writes per second the deployment takes
             Nodes: started here (--nodes, each `serve --database-url` on a scratch
             database made on --database-url's server, dropped at the end), or running
             ones (--node-urls, with --cookie)

options:
  --server catalytic|floor|both   servers to run (default: catalytic; compare/all: both)
  --catalytic-bin PATH  default: `catalytic` next to this executable
  --floor-bin PATH      default: build ../shared/floor-server (beside the repo) in a temp dir
  --floor-src DIR       floor sources to build
  --clients LIST        e.g. 100,1000,10000 (default; sustained 1000; sessions 10000)
  --rounds R            measured fan-out rounds (default 7; at least 1)
  --warmup W            rounds run first and not kept (default 1)
  --timeout-ms MS       per-round / per-step wait for deliveries (default 10000)
  --gap-ms MS           idle time between rounds (default 100)
  --cpu N|none          pin the generator to CPU N (default 1 on a machine with 2+ CPUs)
  --server-cpu N|none   pin the server to CPU N (default 0 on a machine with 2+ CPUs)
  --nice N|none         scheduling priority of generator and server (default -20 where
                        permitted, so other work on the machine disturbs the numbers less)
  --no-spin             sleep in epoll_wait during measured rounds (default: busy-poll the
                        generator's own CPU, so the server never pays to wake it up)
  --per-addr K          connections per source address (default 8000)
  --inflight K          connections in progress at a time while setting up (default 512)
  --heartbeat-secs S    server heartbeat (default 30)
  --p99-bound-ms MS     sustained: the latency bound (default 100)
  --step-secs S         sustained: length of one rate step (default 3)
  --start-rate R        sustained: first POST rate per second (default 10)
  --max-rate R          sustained: stop stepping above this rate (default 20000)
  --http-conns K        sustained/sessions/burst/overload: keep-alive HTTP connections
                        (default 8)
  --cold-gap-ms MS      cold: idle time before each cold round (default 200)
  --writes K            burst: writes per burst (default 1000); reconnect: writes while
                        the clients are away (default 10)
  --bursts B            burst: bursts per server (default 3)
  --rate R              overload: POSTs per second (default: twice the floor's
                        sustainable rate, measured first)
  --pipeline D          overload: requests in flight per connection (default 32)
  --users U             reconnect: users in the list before the waves (default 1000)
  --waves W             reconnect: waves of each kind, alternating (default 3)
  --sessions N          sessions: streams (default 10000)
  --session-minutes M   sessions: --session-minutes given to catalytic (default 600)
  --window-secs S       sessions: CPU measurement window (default 20)
  --database-url URL    cluster: a PostgreSQL (postgres://USER@HOST:PORT/DB) on which to
                        create the scratch database for the nodes started here
  --nodes K             cluster: nodes to start (default 2)
  --node-urls LIST      cluster: running nodes of one deployment instead (http://HOST:PORT,…)
  --cookie VALUE        cluster with --node-urls: an admin session, `admin_session=TOKEN`
                        (from `catalytic admin token --database-url …`)
  --json-out FILE       also append every JSON line to FILE
  --quiet               less progress on stderr
";

#[derive(Clone)]
pub struct Opts {
    pub scenario: String,
    pub servers: Vec<Kind>,
    pub catalytic_bin: Option<PathBuf>,
    pub floor_bin: Option<PathBuf>,
    pub floor_src: Option<PathBuf>,
    pub clients: Option<Vec<usize>>,
    pub rounds: usize,
    pub warmup: usize,
    pub timeout: Duration,
    pub gap: Duration,
    pub cpu: Option<usize>,
    pub server_cpu: Option<usize>,
    pub nice: Option<i32>,
    pub spin: bool,
    pub per_addr: u64,
    pub inflight: usize,
    pub heartbeat_secs: u64,
    pub p99_bound_ms: f64,
    pub step_secs: f64,
    pub start_rate: f64,
    pub max_rate: f64,
    pub http_conns: usize,
    pub sessions: usize,
    pub session_minutes: f64,
    pub window_secs: f64,
    pub cold_gap: Duration,
    /// `None`: the scenario's own default.
    pub writes: Option<usize>,
    pub bursts: usize,
    pub rate: Option<f64>,
    pub pipeline: usize,
    pub users: usize,
    pub waves: usize,
    pub json_out: Option<PathBuf>,
    pub quiet: bool,
    /// `--gap-ms` was given (the cluster lag scenario has a shorter default of its own).
    pub gap_given: bool,
    pub database_url: Option<String>,
    pub nodes: usize,
    pub node_urls: Option<Vec<String>>,
    pub cookie: Option<String>,
}

/// A usage error: the reason and where the usage is, exit code 2 (the usage itself would push
/// the one line that matters off the screen).
fn die(msg: &str) -> ! {
    eprintln!("catalytic-bench: {msg}\n(`catalytic-bench --help` for the usage)");
    std::process::exit(2)
}

fn parse_cpu(v: &str) -> Option<usize> {
    if v == "none" || v == "-1" {
        None
    } else {
        Some(v.parse().unwrap_or_else(|_| die(&format!("bad CPU {v:?}"))))
    }
}

impl Opts {
    /// The defaults: what `USAGE` promises. Pinning needs two CPUs.
    fn defaults() -> Opts {
        let two = sys::online_cpus() >= 2;
        Opts {
            scenario: String::new(),
            servers: Vec::new(),
            catalytic_bin: None,
            floor_bin: None,
            floor_src: None,
            clients: None,
            rounds: 7,
            warmup: 1,
            timeout: Duration::from_secs(10),
            gap: Duration::from_millis(100),
            cpu: two.then_some(1),
            server_cpu: two.then_some(0),
            nice: Some(-20),
            spin: true,
            per_addr: 8000,
            inflight: 512,
            heartbeat_secs: 30,
            p99_bound_ms: 100.0,
            step_secs: 3.0,
            start_rate: 10.0,
            max_rate: 20000.0,
            http_conns: 8,
            sessions: 10_000,
            session_minutes: 600.0,
            window_secs: 20.0,
            cold_gap: Duration::from_millis(200),
            writes: None,
            bursts: 3,
            rate: None,
            pipeline: 32,
            users: 1000,
            waves: 3,
            json_out: None,
            quiet: false,
            gap_given: false,
            database_url: None,
            nodes: 2,
            node_urls: None,
            cookie: None,
        }
    }

    /// After parsing: the scenario must be known, `--server` picks the servers (`compare`
    /// always runs both), and busy-polling needs a CPU of the generator's own.
    fn settle(mut self, server_arg: Option<&str>) -> Opts {
        let o = &mut self;
        if o.scenario.is_empty() {
            die("no scenario given");
        }
        let known = [
            "fanout",
            "fan-out",
            "storm",
            "memory",
            "sustained",
            "sessions",
            "compare",
            "all",
            "cold",
            "burst",
            "overload",
            "reconnect",
            "cluster",
            "cluster-lag",
            "cluster-fanout",
            "cluster-writes",
        ];
        if !known.contains(&o.scenario.as_str()) {
            die(&format!("unknown scenario {:?}", o.scenario));
        }
        if o.scenario == "fan-out" {
            o.scenario = "fanout".into();
        }
        // The scenarios that are about the ratio to the floor run both by default.
        let default_both =
            ["compare", "all", "cold", "burst", "overload"].contains(&o.scenario.as_str());
        o.servers = match server_arg {
            None if default_both => vec![Kind::Catalytic, Kind::Floor],
            None | Some("catalytic") => vec![Kind::Catalytic],
            Some("floor") => vec![Kind::Floor],
            Some("both") => vec![Kind::Catalytic, Kind::Floor],
            Some(s) => die(&format!("bad --server {s:?}")),
        };
        o.spin = o.spin && o.cpu.is_some() && o.cpu != o.server_cpu;
        if o.scenario == "compare" {
            o.servers = vec![Kind::Catalytic, Kind::Floor];
        }
        // A path given on the command line that leads nowhere is a usage error now, not a
        // failed server after another server's whole run.
        for (flag, path) in [
            ("--catalytic-bin", &o.catalytic_bin),
            ("--floor-bin", &o.floor_bin),
            ("--floor-src", &o.floor_src),
        ] {
            if let Some(p) = path {
                if !p.exists() {
                    die(&format!(
                        "{flag} {}: no such file or directory",
                        p.display()
                    ));
                }
            }
        }
        self
    }
}

/// The options from the command line; bad input exits with the usage.
pub fn parse_args() -> Opts {
    let mut o = Opts::defaults();
    let mut server_arg: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| die(&format!("{a} needs a value")))
        };
        fn num<T: std::str::FromStr>(s: String) -> T {
            s.parse()
                .unwrap_or_else(|_| die(&format!("bad number {s:?}")))
        }
        match a.as_str() {
            "--version" | "-V" => {
                println!("catalytic-bench {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0)
            }
            "-h" | "--help" | "help" => {
                print!("{USAGE}");
                std::process::exit(0)
            }
            "--server" => server_arg = Some(val()),
            "--catalytic-bin" => o.catalytic_bin = Some(val().into()),
            "--floor-bin" => o.floor_bin = Some(val().into()),
            "--floor-src" => o.floor_src = Some(val().into()),
            "--clients" => {
                let v = val();
                let list: Vec<usize> = v
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| num(s.trim().replace('_', "")))
                    .collect();
                if list.is_empty() || list.contains(&0) {
                    die("--clients wants positive numbers");
                }
                o.clients = Some(list);
            }
            "--rounds" => {
                o.rounds = num(val());
                if o.rounds == 0 {
                    die("--rounds wants at least 1");
                }
            }
            "--warmup" => o.warmup = num(val()),
            "--timeout-ms" => o.timeout = Duration::from_millis(num(val())),
            "--gap-ms" => {
                o.gap = Duration::from_millis(num(val()));
                o.gap_given = true;
            }
            "--cpu" => o.cpu = parse_cpu(&val()),
            "--server-cpu" => o.server_cpu = parse_cpu(&val()),
            "--nice" => {
                let v = val();
                o.nice = if v == "none" { None } else { Some(num(v)) };
            }
            "--no-spin" => o.spin = false,
            "--per-addr" => o.per_addr = num(val()),
            "--inflight" => o.inflight = num(val()),
            "--heartbeat-secs" => o.heartbeat_secs = num(val()),
            "--p99-bound-ms" => o.p99_bound_ms = num(val()),
            "--step-secs" => o.step_secs = num(val()),
            "--start-rate" => o.start_rate = num(val()),
            "--max-rate" => o.max_rate = num(val()),
            "--http-conns" => o.http_conns = num::<usize>(val()).clamp(1, 256),
            "--sessions" => o.sessions = num(val()),
            "--session-minutes" => o.session_minutes = num(val()),
            "--window-secs" => o.window_secs = num(val()),
            "--cold-gap-ms" => o.cold_gap = Duration::from_millis(num(val())),
            "--writes" => o.writes = Some(num::<usize>(val()).max(1)),
            "--bursts" => o.bursts = num::<usize>(val()).max(1),
            "--rate" => {
                let r: f64 = num(val());
                if !(r.is_finite() && r > 0.0) {
                    die("--rate wants a positive number");
                }
                o.rate = Some(r);
            }
            "--pipeline" => o.pipeline = num::<usize>(val()).clamp(1, 1024),
            "--users" => o.users = num(val()),
            "--waves" => o.waves = num::<usize>(val()).max(1),
            "--database-url" => o.database_url = Some(val()),
            "--nodes" => o.nodes = num::<usize>(val()).clamp(1, 16),
            "--node-urls" => {
                let list: Vec<String> = val()
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if list.is_empty() {
                    die("--node-urls wants http://HOST:PORT,…");
                }
                o.node_urls = Some(list);
            }
            "--cookie" => o.cookie = Some(val()),
            "--json-out" => o.json_out = Some(val().into()),
            "--quiet" => o.quiet = true,
            s if !s.starts_with('-') && o.scenario.is_empty() => o.scenario = s.to_string(),
            s => die(&format!("unknown argument {s:?}")),
        }
    }
    o.settle(server_arg.as_deref())
}
