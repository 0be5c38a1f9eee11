"""Suite-wide settings: one compute thread per process.

The tests are many small forward passes plus subprocesses (torchrun, data workers); on a
2-core machine, several multi-threaded processes oversubscribe the cores and spin, which
made the suite several times slower. Benchmarks under bench/ use every core.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by subprocesses the tests start

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
