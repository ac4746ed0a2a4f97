"""Fit temporaries come from the heap in a real Dask worker, not from fresh
memory maps (which cost as much system time as the fit's own arithmetic)."""
import sys

import pytest

from dja_sepp.deploy.cluster import cluster_client
from dja_sepp.deploy.env import tune_allocator

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator")


def _page_faults_of_temporaries(tune: bool) -> tuple[int, str | None]:
    """Minor page faults of 300 allocate-touch-free cycles of a 2 MB array."""
    import os
    import resource

    import numpy as np
    if tune:
        assert tune_allocator()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(300):
        a = np.ones(2 ** 18)  # 2 MB, like an FFT stack of a group window
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, \
        os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_a_worker_serves_fit_temporaries_from_the_heap():
    with cluster_client({"kind": "local", "n_workers": 1}) as client:
        untuned, trim = client.submit(_page_faults_of_temporaries, False, pure=False).result()
        tuned, _ = client.submit(_page_faults_of_temporaries, True, pure=False).result()
    # the nanny's trim setting is what freezes glibc's mmap threshold
    assert trim is not None
    assert untuned > 300 * 400  # every cycle faults in its 512 pages again
    assert tuned < untuned / 20
