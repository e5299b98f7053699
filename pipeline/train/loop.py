"""The training loop shared by every recipe: warmup schedule, clipping, autocast on GPU,
checkpoints with exact resume, a JSONL log, validation and the best checkpoint.

A recipe supplies a `TrainTask`: the model, its batches per epoch (deterministic given the
epoch), a loss, an evaluation, and what its inference checkpoint must carry.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from pipeline.checkpoints import half_state_dict


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int = 20_000
    max_minutes: float | None = None  # wall-clock budget of one run; stops with a checkpoint
    peak_lr: float = 1e-3
    warmup_steps: int = 1_000  # linear warmup, then inverse square-root decay (Noam)
    min_lr: float = 1e-5
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    log_every: int = 50
    eval_every: int = 500
    save_every: int = 500
    keep_snapshots: bool = False  # each save's weights also kept, fp16, as snapshots/step-N.pt
    seed: int = 0
    device: str = "cpu"
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    threads: int | None = None  # torch CPU threads

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.warmup_steps < 1:
            raise ValueError("max_steps and warmup_steps must be >= 1")
        if self.peak_lr <= 0:
            raise ValueError("peak_lr must be positive")

    def lr_at(self, step: int) -> float:
        step = max(step, 1)
        factor = min(step / self.warmup_steps, math.sqrt(self.warmup_steps / step))
        return max(self.peak_lr * factor, self.min_lr)


class TrainTask(Protocol):
    model: nn.Module

    def batches(self, epoch: int) -> Iterator[Any]:
        """The epoch's batches, the same sequence for the same epoch."""
        ...

    def loss(self, batch: Any, step: int) -> dict[str, Tensor]:
        """Must contain "loss"; other entries are logged."""
        ...

    def evaluate(self) -> dict[str, float]:
        """Validation metrics; "score" (lower is better) picks the best checkpoint."""
        ...

    def checkpoint(self) -> dict:
        """Everything inference needs besides the weights: dims, features, vocabulary..."""
        ...


def save_checkpoint(path: Path, payload: dict) -> None:
    """Atomic torch.save."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def describe_machine(device: torch.device | str = "cpu") -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, {os.cpu_count()} CPUs"
    return f"{platform.machine()} CPU, {os.cpu_count()} cores"


def export_checkpoint(src: Path, dst: Path, half: bool = True, **extra) -> Path:
    """An inference checkpoint without optimizer state, weights in fp16 (small enough for git).
    `extra` entries are merged into the checkpoint (a benchmark's scores, say)."""
    ckpt = inference_checkpoint(torch.load(src, map_location="cpu", weights_only=False), half)
    ckpt.update(extra)
    save_checkpoint(dst, ckpt)
    return dst


def inference_checkpoint(ckpt: dict, half: bool = True) -> dict:
    """`ckpt` without what only resuming needs (optimizer state, RNG), weights in fp16 unless not
    `half`."""
    out = {k: v for k, v in ckpt.items() if k not in ("optimizer", "rng")}
    if half:
        out["state_dict"] = half_state_dict(out["state_dict"])
    return out


def command_line() -> str:
    """This process's command, as a user would retype it."""
    program = sys.argv[0]
    if program.endswith("speechq"):
        return shlex.join(["speechq", *sys.argv[1:]])
    if program.endswith("pipeline/__main__.py"):
        return shlex.join(["python", "-m", "pipeline", *sys.argv[1:]])
    return shlex.join(sys.argv)


class Trainer:
    def __init__(self, task: TrainTask, config: TrainConfig, out_dir: str | Path):
        self.task, self.config, self.out = task, config, Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(config.device)
        self.model = task.model.to(self.device)
        decay = [p for n, p in self.model.named_parameters() if p.dim() > 1]
        no_decay = [p for n, p in self.model.named_parameters() if p.dim() <= 1]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr_at(1), betas=(0.9, 0.98),
        )
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best: float | None = None
        self.elapsed = 0.0  # training seconds over all runs, resumed ones included
        self.commands: list[str] = []  # the command line of every run, resumed ones included

    # ---------------------------------------------------------------- checkpoints

    def _payload(self, full: bool) -> dict:
        payload = {
            **self.task.checkpoint(),
            "state_dict": self.model.state_dict(),
            "train_config": asdict(self.config),
            "progress": {"step": self.step, "epoch": self.epoch,
                         "batch_in_epoch": self.batch_in_epoch, "best": self.best,
                         "elapsed_seconds": self.elapsed},
            "provenance": {"commands": self.commands, "machine": describe_machine(self.device),
                           "torch": str(torch.__version__)},
        }
        if full:
            payload["optimizer"] = self.optimizer.state_dict()
            payload["rng"] = {"torch": torch.get_rng_state(), "python": random.getstate()}
        return payload

    def resume(self) -> bool:
        path = self.out / "last.pt"
        if not path.exists():
            return False
        ckpt = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        progress = ckpt["progress"]
        self.step, self.epoch = progress["step"], progress["epoch"]
        self.batch_in_epoch, self.best = progress["batch_in_epoch"], progress["best"]
        self.elapsed = progress.get("elapsed_seconds", 0.0)
        self.commands = list(ckpt.get("provenance", {}).get("commands", []))
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        random.setstate(ckpt["rng"]["python"])
        return True

    def _log(self, record: dict) -> None:
        with (self.out / "train_log.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")

    # ---------------------------------------------------------------- loop

    def _evaluate(self) -> dict:
        self.model.eval()
        with torch.no_grad():
            metrics = self.task.evaluate()
        self.model.train()
        record = {"step": self.step, "epoch": self.epoch, "elapsed_seconds": round(self.elapsed, 1),
                  "eval": metrics}
        self._log(record)
        score = metrics.get("score")
        if score is not None and (self.best is None or score < self.best):
            self.best = score
            payload = self._payload(full=False)
            payload["metrics"] = metrics
            save_checkpoint(self.out / "best.pt", payload)
        return metrics

    def fit(self, resume: bool = True) -> dict:
        from tqdm import tqdm

        config = self.config
        if config.threads:
            torch.set_num_threads(config.threads)
        if not (resume and self.resume()):
            torch.manual_seed(config.seed)
            random.seed(config.seed)
        self.commands.append(command_line())
        use_amp = config.amp and self.device.type == "cuda"
        bar = tqdm(total=config.max_steps, initial=self.step, disable=not sys.stderr.isatty(),
                   unit="step", dynamic_ncols=True)
        started, last_eval = time.monotonic(), {}
        base_elapsed = self.elapsed
        self.model.train()
        while self.step < config.max_steps:
            batches = self.task.batches(self.epoch)
            for index, batch in enumerate(batches):
                if index < self.batch_in_epoch:
                    continue  # resuming mid-epoch: these were already trained on
                for group in self.optimizer.param_groups:
                    group["lr"] = config.lr_at(self.step + 1)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
                    losses = self.task.loss(batch, self.step)
                self.optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
                if torch.isfinite(grad_norm):
                    self.optimizer.step()
                self.step += 1
                self.batch_in_epoch = index + 1
                self.elapsed = base_elapsed + time.monotonic() - started
                bar.update()
                if self.step % config.log_every == 0:
                    record = {k: round(float(v.detach()), 5) for k, v in losses.items()}
                    record.update(step=self.step, epoch=self.epoch, lr=config.lr_at(self.step),
                                  grad_norm=round(float(grad_norm), 3),
                                  elapsed_seconds=round(self.elapsed, 1))
                    self._log(record)
                    bar.set_postfix(loss=record["loss"])
                if self.step % config.eval_every == 0:
                    last_eval = self._evaluate()
                if self.step % config.save_every == 0:
                    self._save()
                if self.step >= config.max_steps or (
                    config.max_minutes and time.monotonic() - started > config.max_minutes * 60
                ):
                    break
            else:
                self.epoch += 1
                self.batch_in_epoch = 0
                continue
            break
        bar.close()
        if self.step % config.eval_every:
            last_eval = self._evaluate()
        self._save()
        return last_eval

    def _save(self) -> None:
        """last.pt, to resume from; with keep_snapshots also this step's weights on their own."""
        payload = self._payload(full=True)
        save_checkpoint(self.out / "last.pt", payload)
        if self.config.keep_snapshots:
            save_checkpoint(self.out / "snapshots" / f"step-{self.step:06d}.pt", inference_checkpoint(payload))
