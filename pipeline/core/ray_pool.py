"""A pool of Ray actors for any stage: submit chunks of work items, collect finished ones.

A worker class has `info()` and `run(items) -> list[dict]` (sync or async). A worker that died
(or whose engine did) is restarted and its chunk resent.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

from pipeline.core.procguard import guard_descendants, guarded

# Environment the workers need (copied from the driver when set there).
_FORWARD_ENV = ("VLLM_", "HF_", "HUGGING_FACE_", "SSVD_", "OPENAI_", "OMP_", "CUDA_VISIBLE_DEVICES", "TRANSFORMERS_")


_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH")


def is_secret(name: str) -> bool:
    """An environment variable that holds a secret (OPENAI_API_KEY, HF_TOKEN, ...), by its name."""
    return any(w in name.upper() for w in _SECRET_WORDS)


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def init_ray(address: str | None, *, verbose: bool = False) -> None:
    import ray

    if ray.is_initialized():
        return
    guard_descendants()  # a local cluster's processes (and their engines) die with this driver
    # Secrets never go into Ray's runtime_env: Ray writes it in plain text to its session logs
    # (runtime_env_agent.log). A local cluster's workers inherit the driver's environment anyway; on a
    # joined cluster, set them in the environment of each node's `ray start` (docs/cluster.md).
    env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARD_ENV) and not is_secret(k)}
    # No address: always a new local cluster ("local"), never the last `ray start` cluster on this
    # machine that Ray would otherwise join (two corpus runs on one machine must not share one).
    kwargs: dict[str, Any] = dict(
        address=address or os.environ.get("RAY_ADDRESS") or "local",
        log_to_driver=verbose,
        runtime_env={"env_vars": env} if env else None,
        configure_logging=True,
        logging_level="INFO" if verbose else "WARNING",
    )
    if kwargs["address"] == "local":
        kwargs["include_dashboard"] = False
        # Ray starts workers at niceness 15; on a busy CPU machine that halves the speed of CPU-bound
        # stages (measured: Mimi encode 10.8 s vs 4.4 s in-process). Our workers are the job itself.
        os.environ.setdefault("RAY_worker_niceness", "0")
        if not verbose:  # Ray 2.60 turns token authentication on for a new local cluster and says so
            # on every run ("Token authentication is enabled ..."): right for us, and not news.
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    try:
        ray.init(**kwargs)
    except Exception as e:  # ray.exceptions.AuthenticationError, or ConnectionError after InvalidAuthToken
        if kwargs["address"] != "local" and (isinstance(e, ConnectionError) or "auth" in str(e).lower()):
            e.add_note(
                f"ssvd tried to join the Ray cluster at {kwargs['address']!r} with RAY_AUTH_MODE="
                f"{os.environ.get('RAY_AUTH_MODE', '(unset)')}. If Ray logged InvalidAuthToken or Unauthenticated: every node (`ray start --head`, each "
                "`ray start --address=...`) and the ssvd driver must use the same mode: with token "
                "authentication, set RAY_AUTH_MODE=token everywhere and give every node and the driver "
                "the head's token (copy ~/.ray/auth_token, or set RAY_AUTH_TOKEN); or run all of them "
                "with RAY_AUTH_MODE=disabled on a trusted network. See docs/cluster.md.")
        raise


class RayPool:
    """`workers` actors of `worker_cls(spec)`; submit chunks, collect finished ones, restart dead workers."""

    MAX_RESTARTS = 3

    def __init__(self, spec: Any, workers: int, gpus_per_worker: float = 0.0, max_concurrency: int = 4096,
                 *, worker_cls: type, cpus_per_worker: float = 0.0):
        import ray

        self._ray = ray
        self._cls = ray.remote(_located(guarded(worker_cls)))
        self._options = dict(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_concurrency=max_concurrency)
        self.spec = spec
        self.size = workers
        self._pg, self._slots = None, [(w, workers) for w in range(workers)]
        if gpus_per_worker == 0 and workers > 0:
            self._place_on_cpu_nodes(workers, cpus_per_worker)
        self._pending: dict[Any, tuple[int, list, Any]] = {}
        self._load = [0] * workers
        self.restarts = 0  # workers that died and were started again (lost workers, lost nodes)
        self.resent = 0  # work items that were in flight on a dead worker and were sent again
        self._new_infos: dict[int, list] = {}  # restarted worker -> its info refs, not yet taken in
        self.actors = [self._new_actor(w) for w in range(workers)]
        self.infos: list[dict] = [{} for _ in range(workers)]
        for w in range(workers):  # a worker (or its node) lost while starting is started again
            while True:
                try:
                    self.infos[w] = self._info(self.actors[w])
                    break
                except Exception as e:
                    if not _is_engine_death(e):
                        raise
                    _raise_if_start_error(w, e, self)
                    self._restart(w, e)
                    self._new_infos.pop(w, None)

    def _place_on_cpu_nodes(self, workers: int, cpus_per_worker: float) -> None:
        """CPU workers ask for (almost) no CPU, so Ray alone would put them all on one node: spread them
        over the cluster's nodes with a SPREAD placement group, and give each worker its slot among the
        workers of its own node (its engine computes on that share of its node's cores)."""
        from ray.util.placement_group import placement_group, placement_group_table

        cpus = max(cpus_per_worker, 0.01)
        total = float(self._ray.cluster_resources().get("CPU", 0))
        if 0 < total < cpus * workers:  # a cluster smaller than asked (or one that lost a node): never fits
            cpus = max(int(total / workers * 100) / 100, 0.01)
            logging.getLogger("ssvd").warning(
                "the Ray cluster has %g CPU, fewer than %d workers x %g CPU: each worker asks for %g CPU instead",
                total, workers, cpus_per_worker, cpus)
            self._options["num_cpus"] = cpus
        self._pg = placement_group([{"CPU": cpus}] * workers, strategy="SPREAD")
        ready = self._pg.ready()
        while not self._ray.wait([ready], timeout=60)[0]:  # an autoscaling cluster may still be adding nodes
            logging.getLogger("ssvd").warning(
                "waiting for the Ray cluster to fit %d workers of %g CPU each (cluster has %s CPU, %s free)",
                workers, cpus, self._ray.cluster_resources().get("CPU", 0), self._ray.available_resources().get("CPU", 0))
        nodes = placement_group_table(self._pg)["bundles_to_node_id"]
        seen: dict[str, int] = {}
        index = []
        for w in range(workers):
            index.append(seen.get(nodes[w], 0))
            seen[nodes[w]] = index[-1] + 1
        self._slots = [(index[w], seen[nodes[w]]) for w in range(workers)]

    def _new_actor(self, w: int, placed: bool = True) -> Any:
        """Worker w's actor, in its bundle of the placement group; a replacement (`placed=False`) goes wherever the
        cluster has room, asking for no CPU: the bundle of a lost node waits for Ray to place it again, which on
        a cluster that lost capacity never happens."""
        options = dict(self._options)
        if not placed:
            options["num_cpus"] = 0
        elif self._pg is not None:
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(self._pg, placement_group_bundle_index=w)
        return self._cls.options(**options).remote(self._spec(w))

    def _spec(self, w: int) -> Any:
        """Worker w's spec: specs with `for_worker(index, workers)` learn their place among the workers of
        their node (CPU core shares)."""
        for_worker = getattr(self.spec, "for_worker", None)
        return for_worker(*self._slots[w]) if for_worker else self.spec

    def inflight(self) -> int:
        return sum(len(p[1]) for p in self._pending.values())

    def submit(self, items: list) -> Any:
        w = min(range(self.size), key=self._load.__getitem__)
        ref = self.actors[w].run.remote(items)
        self._pending[ref] = (w, items, self.actors[w])
        self._load[w] += len(items)
        return ref

    def wait(self, timeout_s: float) -> list[tuple[Any, list[dict]]]:
        if not self._pending:
            time.sleep(min(timeout_s, 0.05))
            return []
        ready, _ = self._ray.wait(list(self._pending), num_returns=len(self._pending), timeout=timeout_s)
        out = []
        for ref in ready:
            w, items, actor = self._pending.pop(ref)
            self._load[w] -= len(items)
            try:
                out.append((ref, self._ray.get(ref)))
            except Exception as e:  # the actor died or its engine did (or its node): restart it, resend the chunk
                if not _is_engine_death(e):
                    raise
                _raise_if_start_error(w, e, self)
                if self.actors[w] is actor:  # not yet restarted by another of its failed chunks
                    self._restart(w, e)
                self.resent += len(items)
                logging.getLogger("ssvd").warning("worker %d lost %d items in flight; sent again (%d so far)",
                                                  w, len(items), self.resent)
                self.submit(items)
        if self._new_infos:
            self._take_new_infos()
        return out

    def _restart(self, w: int, error: Exception) -> None:
        self.restarts += 1
        info = self.infos[w] if w < len(self.infos) else {}
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        logging.getLogger("ssvd").warning(
            "worker %d (pid %s on node %s) died: %s: %s; starting a new one (restart %d; its node may be gone: "
            "the new one goes wherever the cluster has room)", w, info.get("pid", "?"), info.get("node_ip", "?"),
            type(error).__name__, first, self.restarts)
        if self.restarts > self.MAX_RESTARTS * self.size:
            raise RuntimeError(f"workers keep dying ({self.restarts} restarts); last error: {error}") from error
        try:
            self._ray.kill(self.actors[w])
        except Exception:
            pass
        self.actors[w] = self._new_actor(w, placed=False)
        actor = self.actors[w]
        self._new_infos[w] = [actor.info.remote(), actor.ray_node.remote()]  # taken in by wait() when ready

    def _info(self, actor: Any) -> dict:
        """The worker's info, with the node it runs on."""
        info, where = self._ray.get([actor.info.remote(), actor.ray_node.remote()])
        return {**info, **where}

    def _take_new_infos(self) -> None:
        for w, refs in list(self._new_infos.items()):
            if len(self._ray.wait(refs, num_returns=len(refs), timeout=0)[0]) == len(refs):
                del self._new_infos[w]
                try:
                    info, where = self._ray.get(refs)
                    self.infos[w] = {**info, **where}
                except Exception:  # it died too: its chunk says so
                    pass

    def shutdown(self) -> None:
        for a in self.actors:
            try:
                self._ray.kill(a)
            except Exception:
                pass
        if self._pg is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self._pg)
            self._pg = None


def _located(worker_cls: type) -> type:
    """`worker_cls` with `ray_node()`: the Ray node its actor runs on (for the pool's infos and reports)."""

    class Located(worker_cls):  # type: ignore[misc, valid-type]
        def ray_node(self) -> dict:
            import ray

            return {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address()}

    Located.__name__, Located.__qualname__ = worker_cls.__name__, worker_cls.__qualname__
    Located.__doc__ = worker_cls.__doc__
    return Located


class NotEnoughGpus(ValueError):
    """More GPU workers than the cluster has GPUs: Ray would keep them waiting for a GPU forever."""


def check_gpu_workers(what: str, workers: int, gpus_per_worker: float, cluster_gpus: float) -> None:
    """Refuse, before any actor is created, more GPU workers than the Ray cluster's GPUs can hold."""
    if gpus_per_worker > 0 and workers * gpus_per_worker > cluster_gpus:
        fit = int(cluster_gpus // gpus_per_worker)
        raise NotEnoughGpus(f"{workers} {what} workers x {gpus_per_worker:g} GPU each need {workers * gpus_per_worker:g} "
                            f"GPUs; the Ray cluster has {cluster_gpus:g}: they would wait for GPUs forever. Use "
                            f"--workers {fit} or fewer{' (or a smaller --tensor-parallel-size)' if gpus_per_worker > 1 else ''}, "
                            "or add GPU nodes (`ssvd plan` shows the pools first)")


class WorkerStartError(RuntimeError):
    """A worker's constructor raised (an engine that does not fit, a model vLLM refuses, a bad setting): the
    same error would come back from every restart, so the run ends with it, once."""


def start_error(e: Exception) -> str | None:
    """The constructor's own error when `e` says an actor's __init__ raised (Ray's ActorDiedError with
    `actor_init_failed`, ray/exceptions.py), else None. The last line of the remote traceback that names an
    exception is kept, with what follows it (a multi-line message)."""
    if not getattr(e, "actor_init_failed", False):
        return None
    text = str(e)
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        head = lines[i].split(":", 1)[0].strip()
        if head and " " not in head and (head.endswith(("Error", "Exception", "Unavailable")) or "." in head):
            return "\n".join(lines[i:]).strip()
    return text.strip()


def _raise_if_start_error(w: int, e: Exception, pool: "RayPool") -> None:
    cause = start_error(e)
    if cause is None:
        return
    pool.shutdown()
    raise WorkerStartError(f"worker {w} could not start (a configuration error; not restarted): {cause}") from None


def _is_engine_death(e: Exception) -> bool:
    from ray.exceptions import RayActorError

    return isinstance(e, RayActorError) or "EngineDead" in str(e)


class LocalPool:
    """The same interface in-process, without Ray (`--workers 0`): each chunk runs when submitted."""

    def __init__(self, worker: Any):
        self.worker = worker
        self.size = 1
        self._done: list[tuple[Any, list[dict]]] = []
        self.infos = [worker.info()]

    def inflight(self) -> int:
        return sum(len(rows) for _, rows in self._done)  # finished but not yet collected

    def submit(self, items: list) -> Any:
        rows = self.worker.run(items)
        self._done.append((len(self._done), rows))
        return len(self._done) - 1

    def wait(self, timeout_s: float) -> list[tuple[Any, list[dict]]]:
        out, self._done = self._done, []
        return out

    def shutdown(self) -> None:
        pass


class KeptPool:
    """Keeps one worker pool alive across several stage runs (the splits of a corpus), so that an
    engine or a codec is loaded once. `get(key, make)` returns the kept pool when `key` equals the
    last one; otherwise it shuts the old pool down first (one pool alive at a time: memory)."""

    def __init__(self) -> None:
        self.key: Any = None
        self.pool: Any = None

    def get(self, key: Any, make) -> Any:
        if self.pool is not None and key == self.key:
            return self.pool
        self.close()
        self.pool, self.key = make(), key
        return self.pool

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        self.pool = self.key = None
