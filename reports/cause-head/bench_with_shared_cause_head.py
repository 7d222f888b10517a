"""A probe (issue 3 follow-up 33, not adopted): ``bench/predictor.py`` with the cause head *sharing* the risk
head's layers instead of the adopted detached one.

The head is ``Linear(H -> G)`` on the risk head's hidden layer (after its ReLU and dropout), and its loss (the
same cross-entropy, ``training.loss_fn``) trains the shared layers too: an auxiliary task, as follow-up 6 tried
with an older model. Built with the random state forked, as the adopted head is. The wrapper patches
``FailurePredictor`` in its own process and runs the bench with its arguments; the runs in this folder:

    F="--parts accuracy --seeds 2 --data-seeds 4 --no-oracle --no-progress --published-prior-failures 50 --rootcause-absolute"
    .venv/bin/python reports/cause-head/bench_with_shared_cause_head.py $F --seed 0 > shared-accuracy-d0-3.json
    # and --seed 4; 4-5 min each, two at a time
"""

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import predictor as bp  # noqa: E402

from infrabrain.models.gnn import FailurePredictor  # noqa: E402

_init = FailurePredictor.__init__


def _shared_init(self: FailurePredictor, config) -> None:
    _init(self, config)
    if config.cause_groups:
        with torch.random.fork_rng(devices=[]):
            self.cause_head = nn.Linear(config.hidden, len(config.cause_groups))


def _shared_forward(self: FailurePredictor, batch: dict, with_causes: bool = False):
    a = self.drop(self.act(self.head1(self.drop(self.node_representation(batch)))))
    logits = self.head2(a).squeeze(-1)
    return (logits, self.cause_head(a)) if with_causes else logits


FailurePredictor.__init__ = _shared_init
FailurePredictor.forward = _shared_forward
sys.exit(bp.main(sys.argv[1:]))
