#!/usr/bin/env python3
"""Summarise one sipp run from its console output (stdlib only).

sipp (with -nostdin) prints its statistics screen when it exits; this reads
the last one: Start Time, Current Time (epoch seconds), Total Calls created,
Successful call and Failed call (cumulative). If a -stf CSV is given
instead (a file ending in .csv), its last row is used.

  sipp_stats.py SIPP_STDOUT [--require-success] [--json]

Prints: successful=N failed=N created=N elapsed_s=T per_s=N/T
per_s is successful calls per second of the run: from sipp's start to the
moment it printed the final screen (all calls finished or timed out).
--require-success: exit 1 unless failed == 0 and successful == created > 0.
"""

import argparse
import csv
import json
import re
import sys


def from_console(text: str):
    def last(pattern):
        found = re.findall(pattern, text)
        return found[-1] if found else None

    start = last(r"Start Time\s*\|[^|\n]*?(\d{9,}\.\d+)")
    now = last(r"Current Time\s*\|[^|\n]*?(\d{9,}\.\d+)")
    ok = last(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)")
    failed = last(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)")
    created = last(r"Total Calls created\s*\|\s*\|\s*(\d+)")
    if None in (start, now, ok, failed, created):
        return None
    return {"successful": int(ok), "failed": int(failed), "created": int(created),
            "elapsed_s": float(now) - float(start)}


def from_csv(path: str):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    if not rows:
        return None
    r = rows[-1]

    def secs(v):  # "HH:MM:SS:uuuuuu" or "HH:MM:SS"
        parts = v.strip().split(":")
        h, m, s = int(parts[0]), int(parts[1]), int(parts[2])
        us = int(parts[3]) if len(parts) > 3 else 0
        return h * 3600 + m * 60 + s + us / 1e6

    return {"successful": int(r["SuccessfulCall(C)"]), "failed": int(r["FailedCall(C)"]),
            "created": int(r["TotalCallCreated"]), "elapsed_s": secs(r["ElapsedTime(C)"])}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file")
    p.add_argument("--require-success", action="store_true")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    try:
        if a.file.endswith(".csv"):
            s = from_csv(a.file)
        else:
            with open(a.file, errors="replace") as f:
                s = from_console(f.read())
    except (OSError, KeyError, ValueError) as e:
        print(f"sipp_stats: cannot read {a.file}: {e}", file=sys.stderr)
        return 2
    if s is None:
        print(f"sipp_stats: no statistics screen in {a.file}", file=sys.stderr)
        return 2
    s["per_s"] = round(s["successful"] / s["elapsed_s"], 1) if s["elapsed_s"] > 0 else 0.0
    s["elapsed_s"] = round(s["elapsed_s"], 3)
    if a.json:
        print(json.dumps(s))
    else:
        print(" ".join(f"{k}={v}" for k, v in s.items()))
    if a.require_success and not (s["failed"] == 0 and s["successful"] == s["created"] and s["successful"] > 0):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
