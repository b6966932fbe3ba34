#!/usr/bin/env python3
"""Merges vecgpu-bench reports of one scenario run against different servers into one report,
naming each report's servers by a label: what vecgpu-bench cannot do in one run, since it takes
one --vecgpu endpoint.

    .venv/bin/python bench/merge_reports.py --out merged.json direct=a.json gateway=b.json ...

Each LABEL=FILE is a report (Runner::Report). In its results the target "vecgpu" becomes LABEL
and any other target T ("grpc", "faiss", ...) becomes LABEL-T; results keep the order given.
The merged report takes tool, commit, started_at and machine from the first report; its
`options` has each label's options (`{"direct": {...}, "gateway": {...}}`, the last one given
for a label) and its `ratios` the reports' own, each row with a `label`. bench/run_suite.sh uses
it for cluster scenarios: the scenario against one agent directly and through `vecgpu gateway`.
"""
import argparse
import json
import pathlib
import sys


def rename(target, label):
    return label if target == "vecgpu" else f"{label}-{target}"


def merge(parts):
    """parts: [(label, report dict)] -> one report dict."""
    if not parts:
        raise ValueError("no reports to merge")
    first = parts[0][1]
    out = {k: first.get(k) for k in ("tool", "commit", "started_at", "machine")}
    out["options"], out["results"], out["ratios"] = {}, [], []
    for label, report in parts:
        out["options"][label] = report.get("options") or {}
        for entry in report.get("results") or []:
            entry = dict(entry)
            entry["target"] = rename(entry.get("target", "vecgpu"), label)
            out["results"].append(entry)
        for row in report.get("ratios") or []:
            out["ratios"].append({**row, "label": label})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("parts", nargs="+", metavar="LABEL=FILE", help="a label and a report")
    ap.add_argument("--out", type=pathlib.Path, required=True,
                    help="where to write the merged report")
    args = ap.parse_args(argv)
    parts = []
    for p in args.parts:
        label, sep, path = p.partition("=")
        if not sep or not label or not path:
            ap.error(f"{p!r} is not LABEL=FILE")
        try:
            parts.append((label, json.loads(pathlib.Path(path).read_text())))
        except (OSError, ValueError) as exc:
            print(f"error: cannot read {path}: {exc}", file=sys.stderr)
            return 2
    args.out.write_text(json.dumps(merge(parts), indent=2) + "\n")
    print(f"# wrote {args.out} ({len(parts)} reports)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
