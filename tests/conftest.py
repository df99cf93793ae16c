"""Shared test set-up.

One torch thread per test process: ``make test`` runs two pytest workers on a 2-core machine,
and two OpenMP threads per worker would fight over the cores (measured: test_model.py 69 s with
two threads per process on a busy machine, 13 s with one).

Under CI (``CI`` set), hypothesis draws the same examples on every run (``derandomize``), so a
red CI always reproduces; locally it keeps exploring new examples.
"""

import os

import torch
from hypothesis import settings

torch.set_num_threads(1)

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
