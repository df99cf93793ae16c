"""Shared test set-up.

One torch thread per test process: ``make test`` runs two pytest workers on a 2-core machine,
and two OpenMP threads per worker would fight over the cores (measured: test_model.py 69 s with
two threads per process on a busy machine, 13 s with one).
"""

import torch

torch.set_num_threads(1)
