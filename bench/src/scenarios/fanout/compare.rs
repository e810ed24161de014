//! `compare` and `cold`'s report: catalytic's fan-out over the floor's, per client count and
//! round mode, as the ratio of the two medians and (rounds alternated) the median of the paired
//! rounds' ratios.

use super::*;

/// a / b, or NaN when either is missing.
pub(in crate::scenarios) fn ratio(a: f64, b: f64) -> f64 {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

/// "1.23×", or "-" when there is no ratio.
pub(in crate::scenarios) fn show_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{}×", fmt_num(r))
    } else {
        "-".into()
    }
}

/// One table row and one JSON point per client count and mode both servers were measured
/// at; `with_mode` adds the mode and the POST answer times to the row.
fn compare_points(
    cat: &[FanPoint],
    flo: &[FanPoint],
    with_mode: bool,
) -> (Vec<Vec<String>>, Vec<Value>) {
    let mut rows = Vec::new();
    let mut pts = Vec::new();
    for c in cat {
        let Some(f) = flo.iter().find(|f| f.n == c.n && f.mode == c.mode) else {
            continue;
        };
        let (rm, r99, r50) = (
            ratio(c.max.median, f.max.median),
            ratio(c.p99.median, f.p99.median),
            ratio(c.p50.median, f.p50.median),
        );
        let paired = paired_ratio(c, f);
        let mut row = vec![c.n.to_string()];
        if with_mode {
            row.push(c.mode.name().into());
        }
        row.extend([
            fmt_num(c.max.median),
            fmt_num(f.max.median),
            show_ratio(rm),
            paired.map_or("–".into(), show_ratio),
            fmt_num(c.p99.median),
            fmt_num(f.p99.median),
            show_ratio(r99),
            show_ratio(r50),
            format!("{}/{}", fmt_num(c.lost.median), fmt_num(f.lost.median)),
        ]);
        if with_mode {
            row.push(format!(
                "{} / {}",
                fmt_num(c.post_ms.median),
                fmt_num(f.post_ms.median)
            ));
        }
        rows.push(row);
        pts.push(json!({"clients": c.n, "mode": c.mode.name(), "catalytic_max_ms": round3(c.max.median), "floor_max_ms": round3(f.max.median),
                        "ratio_max": round3(rm), "ratio_max_paired": paired.map(round3), "catalytic_p99_ms": round3(c.p99.median), "floor_p99_ms": round3(f.p99.median),
                        "ratio_p99": round3(r99), "ratio_p50": round3(r50),
                        "catalytic_post_ms": round3(c.post_ms.median), "floor_post_ms": round3(f.post_ms.median),
                        "catalytic_lost": round3(c.lost.median), "floor_lost": round3(f.lost.median)}));
    }
    (rows, pts)
}

/// The median over rounds of catalytic's last-client time over the floor's in the same pair of
/// rounds, when the rounds alternated (`None` otherwise): each pair ran within a fraction of a
/// second, so the machine's drift over a run cancels out of it, where the ratio of the two
/// medians keeps whatever drift separates them.
fn paired_ratio(c: &FanPoint, f: &FanPoint) -> Option<f64> {
    if !(c.alternated && f.alternated) || c.max_rounds.len() != f.max_rounds.len() {
        return None;
    }
    let ratios: Vec<f64> = c
        .max_rounds
        .iter()
        .zip(&f.max_rounds)
        .map(|(c, f)| ratio(*c, *f))
        .collect();
    let s = Summary::of(&ratios);
    (s.n > 0).then_some(s.median)
}

/// Report the catalytic / floor ratios (or why there are none).
pub(super) fn compare_report(ctx: &mut Ctx, plan: &Plan, res: &[(Kind, Vec<FanPoint>)]) {
    let name = if plan.cold() { "cold" } else { "compare" };
    let find = |kind: Kind| res.iter().find(|(k, _)| *k == kind).map(|(_, p)| p);
    let (Some(cat), Some(flo)) = (find(Kind::Catalytic), find(Kind::Floor)) else {
        let which = if find(Kind::Catalytic).is_none() {
            "catalytic"
        } else {
            "the floor"
        };
        println!("\n{name} — skipped: no fan-out results from {which}");
        ctx.emit(json!({"scenario": name, "server": "catalytic/floor", "skipped": format!("no fan-out results from {which}")}));
        return;
    };
    let (rows, pts) = compare_points(cat, flo, plan.cold());
    let mut head = vec![
        "clients",
        "catalytic max ms",
        "floor max ms",
        "max ratio",
        "paired max ratio",
        "catalytic p99",
        "floor p99",
        "p99 ratio",
        "p50 ratio",
        "lost c/f",
    ];
    if plan.cold() {
        head.insert(1, "mode");
        head.push("POST answer ms c / f");
    }
    table(
        &format!("{name} — fan-out medians, catalytic / floor (same run)"),
        &head,
        &rows,
    );
    ctx.emit(json!({"scenario": name, "server": "catalytic/floor", "points": pts}));
}
