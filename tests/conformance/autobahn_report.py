# Summarise an Autobahn TestSuite fuzzingclient report (index.json).
# Runs on Python 2.7 (the suite's own interpreter) and on Python 3.
#
# usage: autobahn_report.py INDEX_JSON [CATEGORY ...]
# Prints a per-category table (Markdown) and every case that did not pass; exits 0 when every
# case's behavior is OK / NON-STRICT / INFORMATIONAL and its behaviorClose is OK / INFORMATIONAL
# and each CATEGORY given has all its cases in the report, 1 otherwise, 2 when the report is
# missing or empty.
from __future__ import print_function

import json
import sys

PASS_BEHAVIOR = ("OK", "NON-STRICT", "INFORMATIONAL")
PASS_CLOSE = ("OK", "INFORMATIONAL")
# Cases per category in autobahntestsuite 25.10.1 (the pinned version): a run that stops early
# (wstest ending without running every case) must not pass.
EXPECTED_CASES = {"1": 16, "2": 11, "3": 7, "4": 10, "5": 20, "6": 145, "7": 37, "9": 54,
                  "10": 1}
# A case that never finished reports a nonsense duration; leave those out of the time column.
MAX_SANE_MS = 3600 * 1000


def case_key(case_id):
    return tuple(int(p) if p.isdigit() else p for p in case_id.split("."))


def main(path, categories):
    try:
        with open(path) as f:
            index = json.load(f)
    except (IOError, OSError, ValueError) as e:
        print("autobahn report: cannot read %s: %s" % (path, e))
        return 2
    agents = sorted(index)
    if not agents:
        print("autobahn report: no agent in %s" % path)
        return 2
    status = 0
    for agent in agents:
        cases = index[agent]
        if not cases:
            print("autobahn report: agent %s ran no case" % agent)
            return 2
        cats = {}
        failed = []
        non_strict = []
        total_ms = 0
        for cid in sorted(cases, key=case_key):
            r = cases[cid]
            cat = cid.split(".")[0]
            row = cats.setdefault(cat, {"cases": 0, "OK": 0, "NON-STRICT": 0,
                                        "INFORMATIONAL": 0, "FAILED": 0, "ms": 0})
            b, bc = r.get("behavior"), r.get("behaviorClose")
            ms = int(r.get("duration") or 0)
            if 0 <= ms <= MAX_SANE_MS:
                total_ms += ms
                row["ms"] += ms
            row["cases"] += 1
            if b in PASS_BEHAVIOR and bc in PASS_CLOSE:
                row[b] += 1
                if b == "NON-STRICT":
                    non_strict.append((cid, r))
            else:
                row["FAILED"] += 1
                failed.append((cid, r))
        print("Autobahn fuzzingclient results for agent `%s`:" % agent)
        print("")
        print("| category | cases | OK | NON-STRICT | INFORMATIONAL | FAILED | case time (s) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        tot = {"cases": 0, "OK": 0, "NON-STRICT": 0, "INFORMATIONAL": 0, "FAILED": 0}
        for cat in sorted(cats, key=lambda c: case_key(c)):
            row = cats[cat]
            for k in tot:
                tot[k] += row[k]
            print("| %s | %d | %d | %d | %d | %d | %.1f |" % (
                cat, row["cases"], row["OK"], row["NON-STRICT"], row["INFORMATIONAL"],
                row["FAILED"], row["ms"] / 1000.0))
        print("| **all** | %d | %d | %d | %d | %d | %.1f |" % (
            tot["cases"], tot["OK"], tot["NON-STRICT"], tot["INFORMATIONAL"], tot["FAILED"],
            total_ms / 1000.0))
        print("")
        if non_strict:
            print("NON-STRICT (accepted): %s" % ", ".join(c for c, _ in non_strict))
        for cid, r in failed:
            print("FAILED %s: behavior=%s behaviorClose=%s remoteCloseCode=%s (%s)" % (
                cid, r.get("behavior"), r.get("behaviorClose"), r.get("remoteCloseCode"),
                r.get("reportfile")))
        for cat in categories:
            want = EXPECTED_CASES.get(cat)
            got = cats.get(cat, {"cases": 0})["cases"]
            if want is not None and got != want:
                print("MISSING: category %s has %d of its %d cases in the report" % (cat, got, want))
                status = 1
        if failed:
            status = 1
    return status


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: autobahn_report.py INDEX_JSON [CATEGORY ...]")
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2:]))
