"""`ssvd train CONFIG --data CORPUS --out RUN_DIR`: train the adapters on a corpus made by `ssvd run`.

AdamW on the adapter parameters only (asserted: nothing else requires grad), linear warm-up then
cosine decay, gradient clipping, bf16 autocast where supported, gradient accumulation, a periodic
eval loss on the held-out slice, adapter-only checkpoints with optimizer and loader state,
`--resume` from the newest one, `RUN_DIR/metrics.jsonl` (one JSON object per logged step) and a
progress bar. Under `torchrun` (WORLD_SIZE > 1) it runs DDP, each rank reading its own share of
the shards; otherwise one process (CPU or one GPU).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainer import checkpoint
from trainer.config import TrainConfig


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_dist() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return Dist(dist.get_rank(), world, local)


def _device(d: Dist) -> torch.device:
    return torch.device(f"cuda:{d.local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def _autocast(precision: str, device: torch.device):
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    if bf16:
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to 1 over `warmup` steps, then cosine down to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def batch_digest(batch: dict[str, Any]) -> str:
    """A short fingerprint of a batch (ids and token tensors): equal batches, equal digests."""
    h = hashlib.sha256(json.dumps(batch.get("ids", [])).encode())
    for k in ("text", "audio"):
        if torch.is_tensor(batch.get(k)):
            h.update(batch[k].cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class _Metrics:
    def __init__(self, path: Path, resume_step: int | None, enabled: bool):
        self.path, self.enabled = path, enabled
        if enabled and resume_step is not None and path.is_file():
            # drop what was logged after the checkpoint we resume from: it will be redone
            keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln).get("step", -1) <= resume_step]
            path.write_text("".join(ln + "\n" for ln in keep))
        elif enabled and resume_step is None:
            path.write_text("")

    def log(self, rec: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(rec, sort_keys=True) + "\n")


def _check_frozen(model, params: list[torch.nn.Parameter]) -> None:
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    adapters = {id(p) for p in params}
    if trainable != adapters or not adapters:
        raise AssertionError(f"only adapter parameters may require grad: {len(trainable)} trainable, "
                             f"{len(adapters)} adapter parameters")


def manifest_hash(data_dir: Path) -> str:
    """sha256 of the corpus' manifest.json (its splits, weights and shard lists): another --data, another hash."""
    p = Path(data_dir) / "manifest.json"
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`section.key: old -> new` for every setting that differs (lists and tuples compare equal)."""
    from pipeline.core.runstate import _flatten, diff_keys

    old, new = json.loads(json.dumps(old, default=list)), json.loads(json.dumps(new, default=list))
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k, '(unset)')!r} -> {b.get(k, '(unset)')!r}" for k in diff_keys(old, new)]


def check_resume(run: dict[str, Any], ckpt: Path, *, config: dict[str, Any], world: int, manifest: str,
                 data_dir: Path) -> None:
    """Refuse, naming the difference, a resume that cannot continue the checkpoint's run."""
    errors = []
    if run.get("world_size", world) != world:
        errors.append(f"world size: the run was trained on {run['world_size']} process(es), this resume has {world}: "
                      f"each rank's loader position belongs to its rank; resume with "
                      f"torchrun --nproc-per-node {run['world_size']} (or 1 process if it was 1)")
    if run.get("manifest_sha256", manifest) != manifest:
        errors.append(f"--data {data_dir}: another corpus than the run's ({run.get('data')}): manifest.json sha256 "
                      f"{manifest[:12]} != {run['manifest_sha256'][:12]}; resume with the same --data")
    if "config" in run:
        diff = config_diff(run["config"], config)
        if diff:
            errors.append("config differs from the run's: " + "; ".join(diff))
    if errors:
        raise ValueError(f"cannot resume from {ckpt}:\n  " + "\n  ".join(errors) +
                         "\n  (or pick another --out to start a new run)")


def _allreduce_grads(params: list[torch.nn.Parameter], extra: list[float], world: int) -> list[float]:
    """One all-reduce per optimizer step: the adapters' gradients (averaged) and a few scalars (summed), packed
    into one flat buffer. The frozen model is never reduced or broadcast."""
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [torch.tensor(extra, dtype=grads[0].dtype, device=grads[0].device)])
    dist.all_reduce(flat)
    n = flat.numel() - len(extra)
    flat_g = flat[:n] / world
    off = 0
    for p, g in zip(params, grads):
        p.grad = flat_g[off:off + g.numel()].view_as(g).clone()
        off += g.numel()
    return flat[n:].tolist()


def train(cfg: TrainConfig, data_dir: Path, run_dir: Path, *, resume: bool = False, progress: bool = True,
          stop_after: int | None = None) -> dict[str, Any]:
    """Train; returns a summary. `stop_after`: stop (with a checkpoint) after that many steps in total,
    as if interrupted there — `--resume` continues the same schedule."""
    from trainer.config import resolve_missing_images
    from trainer.data import CorpusLoader
    from trainer.model import build_model

    d = _init_dist()
    device = _device(d)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    opt_cfg = cfg.train
    torch.manual_seed(opt_cfg.seed)
    cfg_dict = json.loads(json.dumps(cfg.to_dict(), default=list))
    manifest = manifest_hash(data_dir)
    ckpt = checkpoint.latest(run_dir) if resume else None
    saved: tuple | None = None
    if ckpt is not None:  # every rank reads the (immutable) checkpoint, never config.json, which rank 0 writes
        saved = checkpoint.load(ckpt)
        check_resume(saved[2], ckpt, config=cfg_dict, world=d.world, manifest=manifest, data_dir=Path(data_dir))
    elif not resume and checkpoint.latest(run_dir) is not None:
        raise ValueError(f"{run_dir} already holds checkpoints: pass --resume to continue, or pick another --out")
    if d.main and saved is None:
        from pipeline.core.runstate import write_json_atomic

        write_json_atomic(run_dir / "config.json", {"config": cfg_dict, "data": str(Path(data_dir).resolve()),
                                                    "manifest_sha256": manifest, "world_size": d.world,
                                                    "path": cfg.path})
    missing = resolve_missing_images(cfg)
    data_cfg = dataclasses.replace(cfg.data, missing_images=missing)

    from trainer.memory import check_before_training

    est = check_before_training(cfg, d.world, device)  # before any weight is loaded: refuse what cannot fit
    if d.main:
        print(est.line() + ("" if device.type == "cuda" else " (not checked: no GPU)"), file=sys.stderr)
    model = build_model(cfg.model, device=str(device))
    params = [p for p in model.adapter_parameters()]
    _check_frozen(model, params)
    groups = model.adapter_param_groups(opt_cfg.weight_decay)
    opt = torch.optim.AdamW(groups, lr=opt_cfg.lr, betas=tuple(opt_cfg.betas), weight_decay=opt_cfg.weight_decay)
    params = [p for g in groups for p in g["params"]]  # the reduction's order
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, opt_cfg.warmup_steps, opt_cfg.steps, opt_cfg.min_lr_ratio))
    loader = CorpusLoader(data_dir, data_cfg, split="train", rank=d.rank, world=d.world)
    start = 0
    if saved is not None:
        adapters, state, run = saved
        model.load_adapter_state_dict(adapters)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        loader.load_state_dict(run["loader"][d.rank])
        start = int(state["step"])
    if d.world > 1:  # the adapters start equal on every rank (seeded; made sure once); nothing frozen is sent
        import torch.distributed as dist

        with torch.no_grad():
            for p in params:
                dist.broadcast(p.data, src=0)
    metrics = _Metrics(run_dir / "metrics.jsonl", start if ckpt else None, d.main)
    autocast = _autocast(opt_cfg.precision, device)
    end = opt_cfg.steps if stop_after is None else min(opt_cfg.steps, stop_after)
    from tqdm import tqdm

    bar = tqdm(total=opt_cfg.steps, initial=start, disable=not (progress and d.main), desc="train", unit="step",
               dynamic_ncols=True)
    it = iter(loader)
    t0 = time.monotonic()
    rec: dict[str, Any] = {}
    placeholders = ("images_missing", "images_unreadable")
    for step in range(start, end):
        model.train()
        total, parts, digests, kinds = 0.0, {}, [], []
        before = sum(loader.images.stats[k] for k in placeholders)
        before_store = loader.images.stats["images_from_store"]
        for _ in range(opt_cfg.grad_accum):
            batch = next(it)
            digests.append(batch_digest(batch))
            kinds.append(batch["kind"])
            with autocast():
                loss, m = model.loss(_to(batch, device))
            (loss / opt_cfg.grad_accum).backward()  # local gradients only: reduced once below
            total += float(loss.detach()) / opt_cfg.grad_accum
            for k, v in m.items():
                parts[k] = parts.get(k, 0.0) + float(v) / opt_cfg.grad_accum
        n_missing = sum(loader.images.stats[k] for k in placeholders) - before
        if d.world > 1:
            total, n_missing = _allreduce_grads(params, [total, float(n_missing)], d.world)
            total, n_missing = total / d.world, int(round(n_missing))
        gnorm = torch.nn.utils.clip_grad_norm_(params, opt_cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        bar.update(1)
        bar.set_postfix(loss=f"{total:.3f}", refresh=False)
        done = step + 1
        if done % opt_cfg.log_every == 0 or done == end:
            rec = {"step": done, "loss": total, "lr": sched.get_last_lr()[0], "grad_norm": float(gnorm),
                   "kinds": kinds, "batches": digests, "elapsed_s": round(time.monotonic() - t0, 3),
                   "images_missing": n_missing,
                   "images_from_store": loader.images.stats["images_from_store"] - before_store,
                   "rows_skipped_no_image": sum(sum(c.values()) for c in loader.skipped_images.values()), **parts}
            metrics.log(rec)
        if d.main and ((opt_cfg.eval_every and done % opt_cfg.eval_every == 0) or done == opt_cfg.steps):
            # rank 0 only (the held-out slice is small); the others go on to the next step's all-reduce
            metrics.log({"step": done, "eval_loss": evaluate(model, cfg, data_dir, device, autocast,
                                                             data_cfg=data_cfg)})
        if (opt_cfg.ckpt_every and done % opt_cfg.ckpt_every == 0) or done == end:
            _save(run_dir, done, model, opt, sched, loader, d, opt_cfg.keep_checkpoints,
                  {"config": cfg_dict, "manifest_sha256": manifest, "data": str(Path(data_dir).resolve()),
                   "world_size": d.world})
    bar.close()
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return {"rank": d.rank, "world": d.world, "run_dir": str(run_dir), "steps": end, "start": start, "last": rec,
            "loader": getattr(loader, "stats", {})}


def _save(run_dir, step, model, opt, sched, loader, d: Dist, keep: int, run: dict[str, Any]) -> None:
    state = loader.state_dict()
    states: list = [state]
    if d.world > 1:
        import torch.distributed as dist

        states = [None] * d.world
        dist.all_gather_object(states, state)
    if d.main:
        checkpoint.save(run_dir, step, model.adapter_state_dict(),
                        {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, keep,
                        run=dict(run, loader=states))


@torch.no_grad()
def evaluate(model, cfg: TrainConfig, data_dir: Path, device, autocast, data_cfg=None) -> float:
    """Mean loss over the held-out slice (the same batches every time)."""
    from trainer.data import CorpusLoader

    model.eval()
    losses = []
    for i, batch in enumerate(CorpusLoader(data_dir, data_cfg or cfg.data, split="eval")):
        if i >= cfg.train.eval_batches:
            break
        with autocast():
            loss, _ = model.loss(_to(batch, device))
        losses.append(float(loss))
    return sum(losses) / max(1, len(losses))
