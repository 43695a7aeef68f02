"""The offline half of the learned `auto` tier: the public per-prompt outcome files it learns
from (`data.py`), training (`train.py`, `fit.py`) and evaluation (`evaluate.py`, `curves.py`).
The online half, the policy that routes requests, is `routing_policies/learned/`."""
