//! How a fan-out family run drives its servers: one after the other (`fanout`), or
//! interleaved (`compare`, `cold`), where the rounds alternate between the servers, one round
//! each in turn, so the k-th rounds of both run under the same machine conditions.
//!
//! Alternating needs every server's clients open at once. When the generator's descriptor
//! limit holds one server's clients but not two (10,000 clients each under a 20,000 limit
//! that cannot be raised), the second server's clients live in a peer process
//! (`super::peer`), which runs that server's rounds on command: the rounds still alternate.
//! Only when not even that fits do one server's rounds run right after the other's.

use super::peer::Peer;
use super::*;

/// Drive, one server after the other: clients kept open from one client count to the next.
pub(super) fn drive_sequential(ctx: &Ctx, kinds: &[Kind], plan: &Plan) -> Vec<(Kind, FanResult)> {
    let mut out = Vec::new();
    for &k in kinds {
        let res = FanRunner::new(ctx, k).map(|mut r| {
            let mut pts = Vec::new();
            for &n in &plan.ns {
                match r.measure(ctx, n, plan.modes) {
                    Ok(p) => pts.extend(p),
                    Err(e) => r.errors.push(e),
                }
            }
            (pts, r.finish(ctx.o))
        });
        out.push((k, res));
    }
    out
}

/// Drive interleaved (compare, cold): both servers up at once, and for each client count the
/// rounds alternate between them (one round each, in turn): the machine's speed drifts over
/// seconds (a VM's, by ±15 % here), and rounds a second apart would carry that drift into the
/// ratio. The clients of the second server move to a peer process when this process's
/// descriptors hold one server's clients but not both. The rounds run in blocks, one server
/// after the other, only when not even one server's clients fit here (or with more than two
/// servers), or when the peer cannot be started.
pub(super) fn drive_interleaved(ctx: &Ctx, kinds: &[Kind], plan: &Plan) -> Vec<(Kind, FanResult)> {
    let mut runners: Vec<(Kind, Result<FanRunner, String>, Vec<FanPoint>)> = kinds
        .iter()
        .map(|&k| (k, FanRunner::new(ctx, k), Vec::new()))
        .collect();
    for &n in &plan.ns {
        let per_server = n as u64 + FD_SLACK;
        let fds_needed = per_server * runners.len() as u64;
        if fds_needed <= ctx.nofile {
            alternate_rounds(ctx, &mut runners, n, plan.modes);
        } else if runners.len() == 2 && per_server <= ctx.nofile && with_peer(ctx, &mut runners, n)
        {
            alternate_rounds(ctx, &mut runners, n, plan.modes);
            if let (_, Ok(r), _) = &mut runners[1] {
                if let Some(p) = r.peer.take() {
                    p.finish(ctx.o, &mut r.errors);
                }
            }
        } else {
            log(
                ctx.o,
                format!(
                    "{n} clients per server: {fds_needed} descriptors needed for both at once, \
                     {} allowed; rounds in blocks per server",
                    ctx.nofile
                ),
            );
            for (_, r, pts) in runners.iter_mut() {
                if let Ok(r) = r {
                    match r.measure(ctx, n, plan.modes) {
                        Ok(p) => pts.extend(p),
                        Err(e) => r.errors.push(e),
                    }
                    r.close_clients(ctx.o);
                }
            }
        }
    }
    runners
        .into_iter()
        .map(|(k, r, pts)| (k, r.map(|r| (pts, r.finish(ctx.o)))))
        .collect()
}

/// Start a peer process for the second runner's clients; false (with the reason among the
/// runner's errors) when it cannot start, or when the runner has no server.
fn with_peer(
    ctx: &Ctx,
    runners: &mut [(Kind, Result<FanRunner, String>, Vec<FanPoint>)],
    n: usize,
) -> bool {
    let (kind, Ok(r), _) = &mut runners[1] else {
        return false;
    };
    let Some(pid) = r.srv.as_ref().map(|s| s.pid) else {
        return false;
    };
    log(
        ctx.o,
        format!(
            "{n} clients per server: {} descriptors needed for both at once, {} allowed; \
             the {}'s clients go to a peer process, rounds alternating",
            2 * (n as u64 + FD_SLACK),
            ctx.nofile,
            kind.name()
        ),
    );
    // This process's clients of the second server (fewer than `n` before the first count
    // that needs a peer) are closed: the peer opens all of them.
    r.close_clients(ctx.o);
    match Peer::spawn(ctx.o, *kind, r.nodes[0], pid, &r.cookie) {
        Ok(p) => {
            r.peer = Some(p);
            true
        }
        Err(e) => {
            r.errors
                .push(format!("N={n}: no peer process ({e}); rounds in blocks"));
            false
        }
    }
}

/// Descriptors per server beyond its clients (HTTP connections, epoll, the process's own).
const FD_SLACK: u64 = 64;

/// Every runner's clients up to `n` at once, then each mode's rounds one runner after the
/// other, round by round; clients closed at the end.
fn alternate_rounds(
    ctx: &Ctx,
    runners: &mut [(Kind, Result<FanRunner, String>, Vec<FanPoint>)],
    n: usize,
    modes: &[Mode],
) {
    let o = ctx.o;
    let mut connected = Vec::new();
    for (_, r, pts) in runners.iter_mut() {
        connected.push(match r {
            Ok(r) => {
                let p = r.ready(ctx, n);
                if p.ready == 0 {
                    pts.push(p);
                    None
                } else {
                    Some(p)
                }
            }
            Err(_) => None,
        });
    }
    for &mode in modes {
        let mut runs: Vec<Option<ModeRun>> = runners
            .iter()
            .zip(&connected)
            .map(|((_, r, _), c)| match (r, c) {
                (Ok(r), Some(c)) => Some(r.start_mode(o, mode, c)),
                _ => None,
            })
            .collect();
        for _ in 0..o.warmup + o.rounds {
            for ((_, r, _), run) in runners.iter_mut().zip(runs.iter_mut()) {
                if let (Ok(r), Some(m)) = (r, run.as_mut()) {
                    if let Err(e) = r.step(o, m) {
                        r.errors.push(e);
                        *run = None; // this server's rounds end here
                    }
                }
            }
        }
        for ((_, r, pts), run) in runners.iter_mut().zip(runs) {
            if let (Ok(r), Some(m)) = (r, run) {
                let mut p = r.end_mode(o, m);
                p.alternated = true;
                pts.push(p);
            }
        }
    }
    for (_, r, _) in runners.iter_mut() {
        if let Ok(r) = r {
            r.close_clients(ctx.o);
        }
    }
}
