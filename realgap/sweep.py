"""Hydra ``@hydra.main`` entry point for training sweeps (multirun, launchers).

The ``realgap`` CLI composes configs without Hydra's runtime, so it has no ``--multirun``. Sweeps use
this module over the same config tree, e.g. on SLURM with the submitit launcher
(``pip install hydra-submitit-launcher``)::

    python -m realgap.sweep --multirun hydra/launcher=submitit_slurm \
        hydra.launcher.partition=gpu hydra.launcher.timeout_min=240 \
        'out_dir=runs/${hydra:job.num}' train.seed=0,1,2 policy.horizon=8,16

Locally, ``python -m realgap.sweep --multirun train.seed=0,1`` runs the points one after another.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from realgap.errors import RealgapError


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def run(cfg: DictConfig) -> None:
    from realgap.policies.train import main as train

    try:
        train(cfg, resume=False, overwrite=False)
    except RealgapError as e:
        print(f"realgap sweep: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
