"""GPU workers against the Ray cluster's resources: more GPU workers than GPUs fail at once (instead of waiting
forever), and `ssvd run`'s speech and token device follows the joined cluster's GPUs, not the driver's. A real
local Ray cluster that declares 2 GPUs (Ray schedules by resources; nothing runs on them here)."""
from __future__ import annotations

import pytest

from pipeline.core.ray_pool import NotEnoughGpus, check_gpu_workers

pytestmark = pytest.mark.cluster  # starts local Ray clusters (make test-quick leaves it out)


def test_check_gpu_workers_names_the_fix():
    check_gpu_workers("speech", 8, 1.0, 8)
    check_gpu_workers("speech", 8, 0.0, 0)  # CPU workers: no GPU needed
    with pytest.raises(NotEnoughGpus, match=r"9 dialogue workers x 2 GPU each need 18 GPUs; the Ray cluster has 16"
                                            r".*--workers 8 or fewer \(or a smaller --tensor-parallel-size\)"):
        check_gpu_workers("dialogue", 9, 2.0, 16)


@pytest.fixture(scope="module")
def two_gpu_cluster():
    import ray

    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_cluster_gpus_decide_the_device_and_refuse_too_many_workers(two_gpu_cluster):
    from pipeline.core.stage_jobs import PoolArgs, start_pool
    from pipeline.corpus.steps import _device

    assert _device("auto", "ray://joined-cluster") == "cuda"  # the cluster has GPUs; this driver has none
    assert _device("cpu", "ray://joined-cluster") == "cpu"

    class Worker:
        def __init__(self, spec):
            raise AssertionError("no worker may start")

    with pytest.raises(NotEnoughGpus, match="3 Worker workers x 1 GPU each need 3 GPUs; the Ray cluster has 2"):
        start_pool(Worker, None, PoolArgs(workers=3, ray_address=None, cpus_per_worker=0.0, gpus_per_worker=1.0,
                                          verbose=False))
