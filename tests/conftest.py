"""Suite-wide settings: one compute thread per process.

The tests are many small forward passes plus subprocesses (torchrun, data workers); on a
2-core machine, several multi-threaded processes oversubscribe the cores and spin, which
made the suite several times slower. Benchmarks under bench/ use every core.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by subprocesses the tests start

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    """A published-format BiSeNetV2 state_dict with 5 classes (the Dubai preset), random init."""
    import bisenet

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "v2.pth"
    torch.save(bisenet.build_model("bisenetv2", 5).state_dict(), path)
    return path
