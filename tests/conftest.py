"""Shared test set-up.

One torch thread per test process: ``make test`` runs two pytest workers on a 2-core machine,
and two OpenMP threads per worker would fight over the cores (measured: test_model.py 69 s with
two threads per process on a busy machine, 13 s with one).

Property tests (hypothesis) are derandomised by default: every run, on every machine, draws
the same examples, so ``make test`` passes or fails the same way each time. To hunt for new
failures, ``make test-explore`` (``HYPOTHESIS_EXPLORE=1``) draws fresh random examples, and
more of them for tests that do not set their own ``max_examples``. A failure it finds is
printed with its ``@reproduce_failure`` blob; add the example to the test as an explicit
``@example(...)`` so that the default run keeps checking it.
"""

import os

import torch
from hypothesis import settings

torch.set_num_threads(1)

settings.register_profile("derandomized", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", derandomize=False, deadline=None, print_blob=True, max_examples=1000)
settings.load_profile("explore" if os.environ.get("HYPOTHESIS_EXPLORE") else "derandomized")
