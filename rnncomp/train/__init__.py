"""Training: optimizers and clipping (optim.py), the Trainer with truncated BPTT and progress
(trainer.py), atomic checkpoints (checkpoint.py) and data sets and batching (data.py).

Imports rnncomp.runtime (value_and_grad) and below. `rnncomp.train.Trainer` is the documented
entry point; the names of trainer.py are re-exported here.
"""

from .trainer import *  # noqa: F401,F403
from .trainer import __all__ as _trainer_all

__all__ = list(_trainer_all)
