"""Summarise ``probe_cause_naming.py``'s lines: per status of the validation check (held up, failed, too few), how
many held-out namings fall there and how many of them were right (issue 3 follow-up 38).

    ../../.venv/bin/python summarize_naming.py naming-d0-7.jsonl naming-d8-15.jsonl > naming-summary.json
"""

from __future__ import annotations

import json
import sys

from infrabrain.models.cause_naming import CauseNamingCheck


def main(paths: list[str]) -> None:
    out: dict[str, dict] = {}
    for path in paths:
        for line in open(path):
            r = json.loads(line)
            check = CauseNamingCheck(source="validation", groups=r["validation"])
            for g, h in r["heldout"].items():
                if h["named"] == 0:
                    continue
                s = out.setdefault(check.status(g), {"named": 0, "right": 0, "cases": []})
                s["named"] += h["named"]
                s["right"] += h["right"]
                s["cases"].append({"draw": r["draw"], "group": g, "validation": r["validation"][g], "heldout": h})
    for s in out.values():
        s["precision"] = round(s["right"] / s["named"], 3)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
