"""The cause head's evidence in the root-cause ranking, and the variants not adopted (issue 3 follow-up 34).

For each 24 h draw (training seed = the draw) trains the GNN as the predictor bench does and explains each
held-out failure as ``root_cause_accuracy.rootcause_accuracy`` does (at most 100 events, the bench's default,
sampled alike; the deployed root prior). Each failure's root is ranked on the same drops:

- ``without``: with no cause evidence (the ranking before follow-up 34);
- ``adopted``: as ``predict`` ranks now (``root_cause_ranking.rank_root_causes(causes=...)``: the evidence only
  where the head names a group at 0.5 or more and that group is not "other");
- ``everywhere``: the evidence wherever the model has a head (``cause_root_evidence.cause_log_evidence``);
- ``other_as_mix``: everywhere, with the head's "other" mass spread over the groups as the mix spreads it;
- ``raise_only``: everywhere, each candidate's evidence cut at 0 from below;
- ``halved``: everywhere, at half weight;
- ``floor_0.5``, ``floor_1e-6``: everywhere, with the head's probabilities mixed with the published mix at 0.5,
  and at next to nothing, instead of ``CAUSE_EVIDENCE_FLOOR`` (0.2).

Writes ``root-evidence-d<first>-<last>.json`` (per draw: every failure's group, precursor, the head's probabilities
and the root's rank under each variant) into the current directory:

    cd reports/cause-root-evidence
    ../../.venv/bin/python root_evidence_variants.py 0,1,2,3,4,5,6,7        # about 12 min
    ../../.venv/bin/python root_evidence_variants.py 8,9,10,11,12,13,14,15  # beside it
    ../../.venv/bin/python root_evidence_summary.py root-evidence-d*.json
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import predictor as bp  # noqa: E402

from infrabrain.models.cause_root_evidence import (CAUSE_EVIDENCE_FLOOR, cause_log_evidence,  # noqa: E402
                                                   cause_root_table)
from infrabrain.models.evaluation import TYPED_CAUSE_GROUPS, failure_events  # noqa: E402
from infrabrain.models.root_cause_accuracy import explained_failures, rank_of
from infrabrain.models.root_cause_ranking import candidate_relations, rank_root_causes
from infrabrain.models.pipeline import deployed_site_priors, train_predictor  # noqa: E402
from infrabrain.models.training import predict_scores  # noqa: E402

VARIANTS = ("everywhere", "other_as_mix", "raise_only", "halved", "floor_0.5", "floor_1e-6")


class _WithEvidence:
    """A root prior plus fixed per-relation evidence (what ``rank_root_causes`` adds for ``log_prior``)."""

    def __init__(self, prior, evidence: dict[str, float]) -> None:
        self.prior, self.evidence = prior, evidence

    def log_prior(self, relations):
        base = self.prior.log_prior(relations) if self.prior is not None else np.zeros(len(relations))
        return base + np.array([self.evidence.get(r, 0.0) for r in relations])


def _evidence(variant: str, table, causes: dict[str, float], relations: list[str]) -> dict[str, float]:
    if variant == "other_as_mix":
        other = causes.get("other", 0.0)
        causes = {g: (0.0 if g == "other" else causes.get(g, 0.0)) + other * float(m)
                  for g, m in zip(table.groups, table.mix)}
    floor = float(variant.removeprefix("floor_")) if variant.startswith("floor_") else CAUSE_EVIDENCE_FLOOR
    ev = cause_log_evidence(table, causes, relations, floor=floor)
    if variant == "raise_only":
        ev = np.maximum(ev, 0.0)
    if variant == "halved":
        ev = 0.5 * ev
    return dict(zip(relations, ev.tolist()))


args = bp.build_parser().parse_args(["--parts", "accuracy", "--no-progress", "--hours", "24"])
draws = [int(x) for x in sys.argv[1].split(",")]
out: dict[int, list] = {}
for d in draws:
    trained = train_predictor(bp._draw_runs(args, d), bp._pipeline_config(args, d))
    test = trained.splits.test_sites
    rows = predict_scores(trained.model, test)
    priors = deployed_site_priors(trained, test)
    tables = {i: cause_root_table(site.graph, TYPED_CAUSE_GROUPS) for i, site in enumerate(test.sites)}
    recs = []
    for f in explained_failures(trained.model, test, rows, failure_events(test), max_events=args.rootcause_events):
        e, cand, causes = f.event, f.cand, f.causes
        prior, root = priors[int(e.site)], int(e.root)
        relations = candidate_relations(f.graph, cand)
        table = tables[int(e.site)]
        ranking = (f.graph, cand, f.drops)
        rec = {"draw": d, "group": e.group, "precursor": bool(e.precursor),
               "root_relation": relations[list(cand).index(root)] if root in cand else None,
               "causes": {g: round(p, 4) for g, p in causes.items()},
               "without": rank_of(rank_root_causes(*ranking, prior, f.node_logits, silent=f.silent), root),
               "adopted": rank_of(rank_root_causes(*ranking, prior, f.node_logits, silent=f.silent, causes=causes),
                                root)}
        for v in VARIANTS:
            with_ev = _WithEvidence(prior, _evidence(v, table, causes, relations))
            rec[v] = rank_of(rank_root_causes(*ranking, with_ev, f.node_logits, silent=f.silent), root)
        recs.append(rec)
    out[d] = recs
    casc = [r for r in recs if r["group"] in ("thermal", "network")]
    print(d, {k: (round(np.mean([r[k] < 1 for r in casc]), 2), round(np.mean([r[k] < 3 for r in casc]), 2))
              for k in ("without", "adopted", *VARIANTS)}, flush=True)
Path(f"root-evidence-d{draws[0]}-{draws[-1]}.json").write_text(json.dumps(out, indent=0))
