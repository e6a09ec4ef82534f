"""`ssvd plan MANIFEST`: the worker pools `ssvd run` would start on a cluster, computed without starting anything.

The cluster is described (`--nodes`, `--gpus-per-node`, `--gpu-memory-gib`, `--cpus-per-node`) or read from a
live Ray cluster (`--ray-address`: its alive nodes' CPU and GPU counts; GPU memory from `--gpu-memory-gib`).
Per phase: workers, GPUs and CPUs per worker, the nodes they land on, and for dialogues the engines per GPU,
max_model_len, KV-cache tokens per engine and full dialogues that fit at once (pipeline/dialogue/sizing.py,
from the model's config.json); for speech and tokens the TTS and codec devices and their weights.
Anything that cannot run is a problem; `ssvd plan` exits 2 when there is one.

Weights of the speech models, in parameters (moshi 0.2.13's constructors on the published configs, meta device;
tests/fixtures/configs/README.md): Kyutai TTS `kyutai/tts-1.6b-en_fr` 1,836,550,272 (bf16: 3.42 GiB), Mimi
79,308,609 (float32: 0.30 GiB).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.corpus.plan import units
from pipeline.dialogue.sizing import GIB, EngineSizeError, context_length, engines_in_worker, size_model
from pipeline.manifest.spec import Manifest

TTS_PARAMS = 1_836_550_272  # kyutai/tts-1.6b-en_fr, bf16
MIMI_PARAMS = 79_308_609  # kyutai/mimi, float32
CPU_KVCACHE_GIB = 2.0  # vLLM's CPU KV-cache space ssvd sets (EngineOptions.cpu_kvcache_gib)


@dataclass(frozen=True, slots=True)
class Node:
    cpus: float
    gpus: int
    gpu_memory_gib: float


@dataclass(frozen=True, slots=True)
class Cluster:
    nodes: tuple[Node, ...]
    source: str  # "described" | "ray ADDRESS"

    @property
    def gpus(self) -> int:
        return sum(n.gpus for n in self.nodes)

    @property
    def cpus(self) -> float:
        return sum(n.cpus for n in self.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "nodes": len(self.nodes), "gpus": self.gpus, "cpus": self.cpus,
                "per_node": [{"cpus": n.cpus, "gpus": n.gpus, "gpu_memory_gib": n.gpu_memory_gib} for n in self.nodes]}


def described(nodes: int, gpus_per_node: int, gpu_memory_gib: float, cpus_per_node: float) -> Cluster:
    if nodes < 1 or gpus_per_node < 0 or cpus_per_node <= 0 or (gpus_per_node and gpu_memory_gib <= 0):
        raise ValueError(f"a cluster needs >= 1 node, >= 0 GPUs and > 0 CPUs per node, and GPU memory when it has "
                         f"GPUs; got nodes={nodes} gpus_per_node={gpus_per_node} gpu_memory_gib={gpu_memory_gib} "
                         f"cpus_per_node={cpus_per_node}")
    return Cluster(tuple(Node(cpus_per_node, gpus_per_node, gpu_memory_gib) for _ in range(nodes)), "described")


def live(address: str, gpu_memory_gib: float | None) -> Cluster:
    """The alive nodes of the Ray cluster at `address` (joins it as a driver; starts no worker)."""
    import ray

    from pipeline.core.ray_pool import init_ray

    init_ray(address)
    nodes = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = n.get("Resources", {})
        gpus = int(res.get("GPU", 0))
        if gpus and not gpu_memory_gib:
            raise ValueError(f"the Ray cluster at {address} has GPUs; give their memory with --gpu-memory-gib "
                             "(Ray does not report it)")
        nodes.append(Node(float(res.get("CPU", 0)), gpus, float(gpu_memory_gib or 0)))
    return Cluster(tuple(nodes), f"ray {address}")


def place(cluster: Cluster, workers: int, gpus_each: int) -> list[int]:
    """Workers per node when each takes `gpus_each` whole GPUs of one node (first fit, node order)."""
    out = [0] * len(cluster.nodes)
    left = workers
    for i, n in enumerate(cluster.nodes):
        take = min(left, n.gpus // gpus_each) if gpus_each else 0
        out[i], left = take, left - take
    return out


def plan(m: Manifest, cluster: Cluster, *, workers: int = 1, device: str = "auto", sizing: dict | None = None,
         model_configs: dict[str, dict] | None = None, separate_engines: bool = False) -> dict[str, Any]:
    """The pools of every phase of `ssvd run` of `m` on `cluster`; `problems` lists what cannot run."""
    problems: list[str] = []
    if device == "cuda" and cluster.gpus == 0:
        problems.append("--device cuda: the cluster has no GPU (a device that does not exist); use --device cpu or auto")
    on_gpu = cluster.gpus > 0 and device != "cpu"
    todo = units(m)
    phases: dict[str, Any] = {}
    if any("dialogues" in u.stages and not u.is_benchmark for u in todo):
        phases["dialogues"] = _dialogues(m, cluster, todo, workers, on_gpu, sizing or {}, model_configs or {},
                                         separate_engines, problems)
    if any("images" in u.stages for u in todo):
        phases["images"] = {"workers": workers if cluster.source != "described" or len(cluster.nodes) > 1 else 0,
                            "device": "cpu", "note": "img2dataset threads; on a joined Ray cluster --workers actors"}
    for phase, what, params, dtype_bytes in (("speech", "tts", TTS_PARAMS, 2), ("tokens", "codec", MIMI_PARAMS, 4)):
        if not any(phase in u.stages for u in todo):
            continue
        p: dict[str, Any] = {"workers": workers, "device": "cuda" if on_gpu else "cpu",
                             "gpus_per_worker": 1 if on_gpu and workers else 0,
                             f"{what}_weights_gib": round(params * dtype_bytes / GIB, 2)}
        if phase == "speech" and m.models.speech.backend not in (None, "kyutai"):
            p[f"{what}_weights_gib"] = 0.0  # piper / espeak: CPU backends
            p["device"], p["gpus_per_worker"] = "cpu", 0
        if p["gpus_per_worker"]:
            p["nodes"] = place(cluster, workers, 1)
            if workers > cluster.gpus:
                problems.append(f"{phase}: {workers} workers x 1 GPU need {workers} GPUs; the cluster has {cluster.gpus}")
        else:
            p["cpus_per_worker"] = max(1, int(cluster.cpus // max(workers, 1))) if workers else 0
        phases[phase] = p
    return {"manifest": m.name, "cluster": cluster.to_dict(), "workers": workers, "device": device,
            "phases": phases, "problems": problems, "ok": not problems}


def _dialogues(m: Manifest, cluster: Cluster, todo, workers: int, on_gpu: bool, sizing: dict,
               configs: dict[str, dict], separate: bool, problems: list[str]) -> dict[str, Any]:
    from types import SimpleNamespace

    from pipeline.corpus.steps import engine_sizing
    from pipeline.dialogue.engines import EngineOptions

    d = m.models.dialogue
    opts = EngineOptions(kind=d.engine, **engine_sizing(d, SimpleNamespace(**sizing)))  # as `ssvd run` does
    tp = opts.tensor_parallel_size
    user, assistant = _model(d.user_model or d.model, configs), _model(d.assistant_model or d.model, configs)
    n_engines = engines_in_worker(user.name, assistant.name, separate)
    out: dict[str, Any] = {"engine": d.engine, "workers": workers, "engines_per_worker": n_engines,
                           "models": sorted({user.name, assistant.name})}
    if d.engine != "vllm":
        out["note"] = "engine openai: the server's own resources; workers only send requests"
        return out
    gpus_each = tp if on_gpu else 0
    out.update(device="cuda" if on_gpu else "cpu", gpus_per_worker=gpus_each,
               engines_per_gpu=n_engines if on_gpu else 0)
    if on_gpu:
        out["nodes"] = place(cluster, workers, tp)
        most = max(n.gpus for n in cluster.nodes)
        if tp > most:
            problems.append(f"dialogues: tensor_parallel_size {tp} is above the GPUs of any one node ({most}); "
                            "an engine's GPUs must be on one node")
        elif sum(out["nodes"]) < workers:
            problems.append(f"dialogues: {workers} workers x {tp} GPU(s) need {workers * tp} GPUs "
                            f"({sum(out['nodes'])} workers fit on the cluster's {cluster.gpus}); use "
                            f"--workers {sum(out['nodes'])} or add GPU nodes")
    memory = int(min(n.gpu_memory_gib for n in cluster.nodes if n.gpus) * GIB) if on_gpu else int(CPU_KVCACHE_GIB * GIB)
    engines = []
    for settings in sorted({(u.settings.max_pairs, u.settings.max_new_tokens) for u in todo
                            if "dialogues" in u.stages and not u.is_benchmark}):
        o = replace(opts, max_model_len=context_length(opts, (user, assistant), *settings))
        for model in ([user] if n_engines == 1 else [user, assistant]):
            row: dict[str, Any] = {"max_pairs": settings[0], "max_new_tokens": settings[1], "model": model.name}
            try:
                size = size_model(model, o, device=out["device"], memory=memory, engines_per_gpu=n_engines,
                                  config=configs.get(model.name))
                if size is None:
                    row["not_checked"] = (f"no config.json of {model.name} here (not in the local Hugging Face cache): "
                                          f"give --model-config {model.name}=PATH")
                else:
                    row.update(size.to_dict())
                    size.check()
            except EngineSizeError as e:
                problems.append(f"dialogues: {e}")
            engines.append(row)
    out["engines"] = engines
    return out


@dataclass(frozen=True)
class _Named:
    """A model as sizing sees it when only its name and config are known (no build, no network)."""

    name: str
    path: str
    max_model_len: int = 0
    revision: str | None = None
    load_format: str = "auto"


def _model(name: str, configs: dict[str, dict]) -> Any:
    """A builtin model resolves (built into the cache if needed); anything else is read where it is (a local
    folder, the local HF cache) or from --model-config, never fetched."""
    if name in configs:
        return _Named(name, name)
    if name.startswith("builtin:"):
        from pipeline.dialogue.models import resolve_model

        return resolve_model(name)
    repo, _, revision = name.partition("@")
    return _Named(name, repo, revision=revision or None)


def format_plan(p: dict[str, Any]) -> str:
    c = p["cluster"]
    lines = [f"cluster ({c['source']}): {c['nodes']} node(s), {c['gpus']} GPU(s), {c['cpus']:g} CPU(s)"]
    for phase, d in p["phases"].items():
        keys = ("workers", "device", "gpus_per_worker", "cpus_per_worker", "engines_per_worker", "engines_per_gpu",
                "nodes", "tts_weights_gib", "codec_weights_gib")
        lines.append(f"{phase:<10} " + " ".join(f"{k}={d[k]}" for k in keys if k in d))
        for e in d.get("engines", []):
            if "not_checked" in e:
                lines.append(f"  engine {e['model']}: {e['not_checked']}")
            else:
                lines.append(f"  engine {e['model']}: max_model_len {e['max_model_len']} ({e['max_pairs']} pairs x "
                             f"{e['max_new_tokens']} tokens), weights {e['weights_gib']} GiB, KV cache {e['kv_cache_gib']} "
                             f"GiB = {e['kv_tokens']} tokens ({e['kv_bytes_per_token'] // 1024} KiB/token), "
                             f"{e['dialogues_at_once']} full dialogues at once")
    lines += [f"REFUSED: {x}" for x in p["problems"]] or ["ok: every phase can run"]
    return "\n".join(lines)


def read_model_configs(items: list[str] | None) -> dict[str, dict]:
    """--model-config NAME=PATH (repeatable): the config.json to size NAME's engine with."""
    out = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise ValueError(f"--model-config {item!r}: write MODEL=PATH to an existing config.json")
        out[name] = json.loads(Path(path).read_text())
    return out
