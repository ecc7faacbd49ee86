"""Train the counting model: one script for a laptop, CI, torchrun and SageMaker's PyTorch container.

    python -m modeling.train --train D/train --val D/val --model-dir M --epochs 2 --image-size 64
    python modeling/train.py ...                       (the same; SageMaker runs it as train.py)
    torchrun --nproc_per_node 2 modeling/train.py ...  (DistributedDataParallel, gloo on CPU, nccl on CUDA)

Paths default from SageMaker's variables (SM_CHANNEL_TRAIN, SM_CHANNEL_VAL, SM_CHANNEL_TEST, SM_MODEL_DIR,
SM_OUTPUT_DATA_DIR; /opt/ml/checkpoints/<job> in a job with checkpoints) with local fallbacks; below `main()` the code sees
plain paths only. Every epoch prints exactly one line: its own metrics, then those of the model kept so far (see
modeling.metric_log; tuning ranks trials by the latter). `--batch-size` is per process.
Runs only on the stdlib, torch, torchvision, pillow and numpy (the container's packages).
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a file (python modeling/train.py, torchrun, SageMaker): import the package,
    # and keep modeling/ itself off the path so its modules cannot shadow top-level ones
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import math
import random
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

from modeling.artifacts import (
    ARGS_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    save_model,
    write_json,
    write_summary_csv,
)
from modeling.checkpoint import (
    CheckpointError,
    check_compatible,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from modeling.counts import CLOSED
from modeling.data import (
    CountFolderDataset,
    DatasetLayoutError,
    bin_ids,
    dataset_fingerprint,
    manifest_sha256,
    resolve_top_class,
)
from modeling.distributed import (
    DistInfo,
    ShardSampler,
    all_reduce_sum,
    broadcast_buffers,
    cleanup_distributed,
    init_distributed,
)
from modeling.losses import build_loss
from modeling.metric_log import format_best_line, format_epoch_line
from modeling.metrics import DECODINGS, confusion_matrix, decode, summarize_confusion
from modeling.model import ModelConfigError, ModelSpec, PretrainedWeightsError, create_model
from modeling.preprocessing import EvalTransform, ImageDecodeError, PreprocessConfig, TrainTransform, normalize_batch
from modeling.settings import BEST_METRICS, DEVICES, LR_SCHEDULES, OPTIMIZERS, add_setting_arguments

SM_CHECKPOINT_DIR = "/opt/ml/checkpoints"
# errors that are the user's to fix: one line on stderr, exit 2, no traceback
USER_ERRORS = (DatasetLayoutError, PretrainedWeightsError, ModelConfigError, CheckpointError, ImageDecodeError)
EXIT_USAGE = 2


# ---------------------------------------------------------------- arguments

def default_checkpoint_dir() -> str:
    """In a SageMaker training job (TRAINING_JOB_NAME is set) with checkpoints configured, the job's own folder in
    /opt/ml/checkpoints, which SageMaker syncs with S3 (spot training); elsewhere off unless asked.

    The folder is named by the job: the trials of a tuning job share one checkpoint prefix, and a trial must resume
    only its own run (a spot restart keeps the job's name)."""
    job = os.environ.get("TRAINING_JOB_NAME", "")
    return os.path.join(SM_CHECKPOINT_DIR, job) if job and os.path.isdir(SM_CHECKPOINT_DIR) else ""


def default_failure_file() -> str:
    """SageMaker reports the first 1024 characters of <SM_OUTPUT_DIR>/failure as the job's FailureReason."""
    return os.path.join(os.environ["SM_OUTPUT_DIR"], "failure") if os.environ.get("SM_OUTPUT_DIR") else ""


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """Every flag has a default and a help string; SageMaker passes hyperparameters as `--name value`. The
    settings come from modeling.settings (shared with the jobs layer and the dashboard), the paths from SM_*."""
    p = argparse.ArgumentParser(description="Train the BinAudit counting model.", add_help=add_help,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_setting_arguments(p)
    g = p.add_argument_group("paths (defaults from SageMaker's SM_* variables)")
    g.add_argument("--train", default=os.environ.get("SM_CHANNEL_TRAIN", "data/dataset/train"),
                   help="training folder of <count>/<image> (SM_CHANNEL_TRAIN)")
    g.add_argument("--val", default=os.environ.get("SM_CHANNEL_VAL", "data/dataset/val"),
                   help="validation folder (SM_CHANNEL_VAL)")
    g.add_argument("--recounts", default=os.environ.get("SM_CHANNEL_RECOUNTS", ""),
                   help="optional folder of analysts' recounts (<count>/<bin_id>.jpg) added to the training data; "
                        "a recounted bin replaces its photo in --train; recounts of bins in --val or --test are left out "
                        "(SM_CHANNEL_RECOUNTS)")
    g.add_argument("--test", default=os.environ.get("SM_CHANNEL_TEST", ""),
                   help="optional test folder, evaluated once with the best model (SM_CHANNEL_TEST)")
    g.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "model"),
                   help="where model.pth, model_config.json, metrics.json, summary.csv, args.json go (SM_MODEL_DIR)")
    g.add_argument("--output-data-dir", default=os.environ.get("SM_OUTPUT_DATA_DIR", "output"),
                   help="copies of metrics.json and summary.csv (SM_OUTPUT_DATA_DIR)")
    g.add_argument("--checkpoint-dir", default=default_checkpoint_dir(),
                   help="resume checkpoint, written every epoch and read on start (empty: off; "
                        f"default in a SageMaker job: {SM_CHECKPOINT_DIR}/<TRAINING_JOB_NAME> when {SM_CHECKPOINT_DIR} "
                        "exists)")
    g.add_argument("--failure-file", default=default_failure_file(),
                   help="where a user error's one-line message is also written (SageMaker: <SM_OUTPUT_DIR>/failure, "
                        "the job's FailureReason; empty: nowhere)")
    return p


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Known args and the unknown extras (SageMaker may add some; they are logged, not fatal)."""
    return get_args_parser().parse_known_args(argv)


# ---------------------------------------------------------------- building blocks (tests build them too)

def resolve_device(name: str, info: DistInfo | None = None) -> torch.device:
    if name not in DEVICES:
        raise ValueError(f"Invalid device {name!r}. Only {', '.join(DEVICES)} are supported.")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelConfigError("--device cuda but no CUDA device is visible; use --device auto or --device cpu")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", info.local_rank if info else 0)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_spec(args: argparse.Namespace) -> ModelSpec:
    """The model's shape; --top-class auto is open when the training folder has the open class folder ("6+")."""
    top_class = resolve_top_class(args.top_class, args.train, args.max_count)
    return ModelSpec(arch=args.arch, max_count=args.max_count, preprocess=PreprocessConfig(args.image_size),
                     top_class=top_class)


def build_transforms(spec: ModelSpec) -> tuple[TrainTransform, EvalTransform]:
    side = spec.preprocess.image_size
    return TrainTransform(side, mean=spec.preprocess.mean), EvalTransform(side)


def build_datasets(args: argparse.Namespace, spec: ModelSpec) -> dict[str, CountFolderDataset]:
    """train, val and (with --test) test; recounts of bins in val or test stay out of train
    (modeling.recounts.usable_recounts)."""
    train_tf, eval_tf = build_transforms(spec)
    side, open_top = spec.preprocess.image_size, spec.classes.open_top
    held_out = {"val": CountFolderDataset(args.val, spec.max_count, eval_tf, decode_side=side, open_top=open_top)}
    if args.test:
        held_out["test"] = CountFolderDataset(args.test, spec.max_count, eval_tf, decode_side=side, open_top=open_top)
    train = CountFolderDataset(args.train, spec.max_count, train_tf, decode_side=side,
                               recounts_root=args.recounts or None,
                               held_out_bins=set().union(*(bin_ids(ds.samples) for ds in held_out.values())),
                               open_top=open_top)
    return {"train": train, **held_out}


def build_train_loader(dataset: CountFolderDataset, args: argparse.Namespace, info: DistInfo,
                       device: torch.device) -> DataLoader:
    """Shuffled batches; under DDP a DistributedSampler gives each rank its share (set_epoch every epoch)."""
    if info.enabled:
        sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                     seed=args.seed)
        per_rank = len(sampler)
    else:
        generator = torch.Generator()
        generator.manual_seed(args.seed)
        sampler = RandomSampler(dataset, generator=generator)
        per_rank = len(dataset)
    return DataLoader(
        dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0,
        drop_last=per_rank > args.batch_size,  # a 1-image last batch breaks BatchNorm at small image sizes
    )


def build_eval_loader(dataset: CountFolderDataset, args: argparse.Namespace, info: DistInfo,
                      device: torch.device) -> DataLoader:
    """In order; under DDP each rank takes every world_size-th photo, none twice (see ShardSampler)."""
    sampler = ShardSampler(len(dataset), info) if info.enabled else SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                      pin_memory=device.type == "cuda")


def set_loader_epoch(loader: DataLoader, epoch: int, seed: int) -> None:
    """Make the shuffle of each epoch a function of (seed, epoch), so a resumed run sees the same order."""
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    elif isinstance(loader.sampler, RandomSampler) and loader.sampler.generator is not None:
        loader.sampler.generator.manual_seed(seed * 1000 + epoch)


def build_optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """Weight decay on conv/linear weights only (norm scales and biases are not decayed, as in timm)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if args.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum)
    if args.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=args.lr, betas=(args.momentum, 0.999))
    raise ValueError(f"Invalid optimizer {args.optimizer!r}. Only {', '.join(OPTIMIZERS)} are supported.")


def build_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch."""
    if args.lr_schedule == "step":
        step_size = args.lr_step_size or max(1, args.epochs // 3)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=args.lr_gamma)
    if args.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    raise ValueError(f"Invalid lr schedule {args.lr_schedule!r}. Only {', '.join(LR_SCHEDULES)} are supported.")


def replan_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace,
                     epochs_done: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule `args` asks for, advanced past `epochs_done` epochs (a resumed run whose schedule changed)."""
    for group in optimizer.param_groups:
        # the checkpoint's optimizer state carries the old run's initial_lr, which a new scheduler keeps
        # (setdefault): start from --lr instead, so a changed --lr takes effect (unchanged, it is the same value)
        group["initial_lr"] = group["lr"] = args.lr
    scheduler = build_scheduler(optimizer, args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": intended here
        for _ in range(epochs_done):
            scheduler.step()
    return scheduler


def _schedule_changed(saved: dict[str, Any], now: dict[str, Any]) -> bool:
    keys = ("epochs", "lr", "lr_schedule", "lr_step_size", "lr_gamma")
    return any(saved.get(k) != now.get(k) for k in keys)


def build_criterion(args: argparse.Namespace, spec: ModelSpec) -> nn.Module:
    return build_loss(args.loss, spec.num_classes, label_smoothing=args.label_smoothing,
                      ordinal_weight=args.ordinal_weight)


# ---------------------------------------------------------------- one epoch

class Runtime:
    """Where and how batches run: device, AMP, memory format, normalisation constants, ranks."""

    def __init__(self, device: torch.device, spec: ModelSpec, info: DistInfo) -> None:
        self.device = device
        self.info = info
        self.spec = spec
        self.amp = device.type == "cuda"
        self.memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.to(self.device, non_blocking=True)
        return normalize_batch(batch, self.spec.preprocess.mean, self.spec.preprocess.std, self.memory_format)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp)


def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader,
                    scaler: torch.amp.GradScaler, rt: Runtime) -> dict[str, float]:
    """One pass over the training data; loss and accuracy averaged over every image of every rank."""
    model.train()
    sums = torch.zeros(3, dtype=torch.float64, device=rt.device)  # loss x images, correct, images
    for images, targets in loader:
        x = rt.inputs(images)
        y = targets.to(rt.device, non_blocking=True)
        with rt.autocast():
            logits = model(x)
            loss = criterion(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            sums += torch.stack([loss.detach().double() * y.numel(), (logits.argmax(1) == y).sum().double(),
                                 torch.tensor(float(y.numel()), dtype=torch.float64, device=rt.device)])
    loss_sum, correct, n = all_reduce_sum(sums, rt.info).tolist()
    return {"train_loss": loss_sum / max(n, 1), "train_accuracy": correct / max(n, 1)}


@torch.inference_mode()
def evaluate(model: nn.Module, criterion: nn.Module, loader: DataLoader, rt: Runtime) -> dict[str, Any]:
    """Loss and count confusion matrices of both decodings, summed over ranks: {"loss", "n", "argmax", "expected"}."""
    model.eval()
    counts = rt.spec.class_to_count
    size = len(counts)
    cms = np.zeros((len(DECODINGS), size, size), dtype=np.int64)
    loss_sum = torch.zeros(1, dtype=torch.float64, device=rt.device)
    for images, targets in loader:
        y = targets.to(rt.device, non_blocking=True)
        with rt.autocast():
            logits = model(rt.inputs(images)).float()
        loss_sum += criterion(logits, y).double() * y.numel()
        probs = logits.softmax(dim=1).cpu().numpy()
        true = np.asarray(counts)[targets.numpy()]
        for i, name in enumerate(DECODINGS):
            cms[i] += confusion_matrix(true, decode(probs, counts, name), size)
    reduced = all_reduce_sum(torch.from_numpy(cms).to(rt.device), rt.info).cpu().numpy()
    loss_total = float(all_reduce_sum(loss_sum, rt.info).item())
    labels = rt.spec.classes.labels
    result: dict[str, Any] = {name: summarize_confusion(reduced[i], labels) for i, name in enumerate(DECODINGS)}
    result["n"] = result["argmax"]["n"]
    result["loss"] = loss_total / max(result["n"], 1)
    return result


def flat_metrics(evaluation: dict[str, Any], split: str) -> dict[str, float]:
    """One evaluation as flat `<split>_<figure>` numbers (argmax figures, then the expected decoding's): the
    epoch rows, the epoch line and model_config.json's final_metrics all use this one view."""
    argmax, expected = evaluation["argmax"], evaluation["expected"]
    return {
        f"{split}_loss": evaluation["loss"],
        **{f"{split}_{name}": argmax[name] for name in ("accuracy", "rmse", "mae", "within_one")},
        f"{split}_accuracy_expected": expected["accuracy"],
        f"{split}_rmse_expected": expected["rmse"],
    }


def epoch_metrics(epoch: int, lr: float, train: dict[str, float], val: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The history row of one epoch (summary.csv); the first metrics are those of the epoch line."""
    return {"epoch": epoch, **train, **flat_metrics(val, "val"), "lr": lr, "seconds": round(seconds, 3)}


def is_better(value: float, best: float | None, metric: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if BEST_METRICS[metric] == "max" else value < best


# ---------------------------------------------------------------- the run

def log(info: DistInfo, message: str) -> None:
    if info.is_main:
        print(message, flush=True)


def hold_for_test(epoch: int) -> None:
    """Inert unless BINAUDIT_TEST_PAUSE_AFTER_EPOCH=k and BINAUDIT_TEST_BARRIER=FILE: after epoch k, wait for FILE."""
    barrier = os.environ.get("BINAUDIT_TEST_BARRIER")
    if barrier and os.environ.get("BINAUDIT_TEST_PAUSE_AFTER_EPOCH") == str(epoch):
        while not os.path.exists(barrier):  # tests stop, kill or resume the run here, at a known epoch
            time.sleep(0.05)


def _limit_cpu_threads(info: DistInfo, device: torch.device) -> None:
    """Several training processes on one CPU machine share its cores instead of each taking all of them."""
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
    if device.type == "cpu" and local_world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))


def recount_report(train: CountFolderDataset) -> dict[str, Any] | None:
    """What train.py did with the --recounts folder (metrics.json's "recounts"); None without one."""
    if train.recounts_root is None:
        return None
    left_out = sorted(bin_ids(train.held_out_recounts))
    return {"folder": str(train.recounts_root), "used": len(train.recounts), "replaced": train.replaced_by_recounts,
            "left_out": len(left_out), "left_out_bins": left_out,
            "beyond_range": len(train.beyond_range_recounts)}


def _log_recounts(info: DistInfo, report: dict[str, Any] | None) -> None:
    if report is None:
        return
    line = (f"recounts: {report['used']} used ({report['replaced']} replacing their photo in --train), "
            f"{report['left_out']} left out of training because their bins are in val/test")
    if report["left_out"]:
        shown = report["left_out_bins"][:10]
        line += f" (training on them would leak held-out photos): {', '.join(shown)}" + (
            ", ..." if report["left_out"] > 10 else "")
    log(info, line)


def _resolved_args(args: argparse.Namespace, info: DistInfo, device: torch.device, spec: ModelSpec) -> dict[str, Any]:
    return {**vars(args), "world_size": info.world_size, "resolved_device": str(device),
            "resolved_top_class": spec.top_class}


def check_resumable(saved_args: dict[str, Any], resolved: dict[str, Any]) -> None:
    """A checkpoint resumes only a run of the same model shape; one saved before the open class existed was closed."""
    check_compatible({"resolved_top_class": CLOSED, **saved_args}, resolved,
                     keys=("arch", "max_count", "resolved_top_class", "image_size", "loss"))


def run_training(args: argparse.Namespace) -> dict[str, Any]:
    """Train, validate every epoch, keep the best model, write the artifacts; returns the final metrics."""
    info = init_distributed(resolve_device(args.device))
    try:
        return _run(args, info)
    finally:
        cleanup_distributed()


def _run(args: argparse.Namespace, info: DistInfo) -> dict[str, Any]:
    device = resolve_device(args.device, info)
    _limit_cpu_threads(info, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    seed_everything(args.seed + info.rank)
    spec = build_spec(args)
    datasets = build_datasets(args, spec)
    resolved = _resolved_args(args, info, device, spec)
    provenance = run_provenance(resolved, datasets, args) if info.is_main else {}
    recounts = recount_report(datasets["train"])
    _log_recounts(info, recounts)

    model = create_model(args.arch, spec.num_classes, args.pretrained, args.weights_path or None).to(device)
    rt = Runtime(device, spec, info)
    model = model.to(memory_format=rt.memory_format)
    criterion = build_criterion(args, spec).to(device)
    optimizer = build_optimizer(model, args)
    scheduler = build_scheduler(optimizer, args)
    scaler = torch.amp.GradScaler("cuda", enabled=rt.amp)
    train_loader = build_train_loader(datasets["train"], args, info, device)
    val_loader = build_eval_loader(datasets["val"], args, info, device)

    state = TrainState()
    checkpoint = load_checkpoint(args.checkpoint_dir)
    if checkpoint is not None:
        check_resumable(checkpoint["args"], resolved)
        state = TrainState.from_checkpoint(checkpoint, model, optimizer, scheduler, scaler)
        if _schedule_changed(checkpoint["args"], resolved):
            scheduler = replan_scheduler(optimizer, args, state.epoch)
            log(info, f"--epochs or the lr schedule changed since the checkpoint: lr schedule re-planned for "
                      f"{args.epochs} epochs")
        set_rng_state(checkpoint["rng"])
        if info.rank:
            torch.manual_seed(args.seed + info.rank * 7919 + state.epoch)  # ranks must not share augmentation
        log(info, f"resuming from {args.checkpoint_dir} after epoch {state.epoch}")

    ddp_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if info.enabled else model
    log(info, f"training {args.arch} on {len(datasets['train'])} images (val {len(datasets['val'])}), "
              f"{args.image_size}px, device {device}, {info.world_size} process(es), epochs {state.epoch + 1}..{args.epochs}")

    for epoch in range(state.epoch + 1, args.epochs + 1):
        start = time.perf_counter()
        set_loader_epoch(train_loader, epoch, args.seed)
        lr = optimizer.param_groups[0]["lr"]
        train = train_one_epoch(ddp_model, criterion, optimizer, train_loader, scaler, rt)
        if not math.isfinite(train["train_loss"]):
            raise FloatingPointError(f"training loss is {train['train_loss']} in epoch {epoch}; lower --lr")
        scheduler.step()
        broadcast_buffers(model, info)  # every rank evaluates (and rank 0 saves) the same BatchNorm statistics
        val = evaluate(model, criterion, val_loader, rt)
        row = epoch_metrics(epoch, lr, train, val, time.perf_counter() - start)
        state.record(epoch, row, val, model, args.best_metric)
        # one line per epoch: that epoch's figures, then the kept model's (what a tuner ranks this run by)
        log(info, f"{format_epoch_line(epoch, row)} {format_best_line(flat_metrics(state.best_eval, 'val'))}")
        if info.is_main and args.checkpoint_dir:  # the checkpoint carries the best weights: model.pth comes at the end
            save_checkpoint(args.checkpoint_dir, state.to_checkpoint(model, optimizer, scheduler, scaler, resolved))
        hold_for_test(epoch)

    test = None
    if "test" in datasets and state.best_state is not None:
        model.load_state_dict(state.best_state)
        test = evaluate(model, criterion, build_eval_loader(datasets["test"], args, info, device), rt)
    final = final_metrics(state, test)
    if info.is_main:
        write_artifacts(args, spec, state, final, test, provenance, recounts)
        log(info, f"done: best epoch {state.best_epoch} by {args.best_metric}; accuracy {final['val_accuracy']:.4f}, "
                  f"rmse {final['val_rmse']:.4f} -> {args.model_dir}")
    return final


class TrainState:
    """Progress that a checkpoint carries across an interruption: last epoch, history, best epoch and weights."""

    def __init__(self) -> None:
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best_epoch = 0
        self.best_value: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_eval: dict[str, Any] | None = None

    def record(self, epoch: int, row: dict[str, Any], val: dict[str, Any], model: nn.Module, metric: str) -> None:
        self.epoch = epoch
        self.history.append(row)
        if is_better(row[metric], self.best_value, metric) or self.best_state is None:
            self.best_epoch, self.best_value, self.best_eval = epoch, row[metric], val
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def to_checkpoint(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                      scaler: torch.amp.GradScaler, resolved: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "epoch": self.epoch, "args": resolved, "history": self.history,
            "best": {"epoch": self.best_epoch, "value": self.best_value, "state_dict": self.best_state,
                     "evaluation": self.best_eval},
            "rng": rng_state(),
        }

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any, scaler: torch.amp.GradScaler) -> TrainState:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scheduler"):
            scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        state = cls()
        state.epoch, state.history = int(ckpt["epoch"]), list(ckpt["history"])
        best = ckpt["best"]
        state.best_epoch, state.best_value = int(best["epoch"]), best["value"]
        state.best_state, state.best_eval = best["state_dict"], best["evaluation"]
        return state


def final_metrics(state: TrainState, test: dict[str, Any] | None) -> dict[str, Any]:
    """Flat figures of the saved (best) model: what model_config.json and the jobs layer report."""
    out: dict[str, Any] = {"best_epoch": state.best_epoch}
    for split, evaluation in (("val", state.best_eval), ("test", test)):
        if evaluation is not None:
            out.update(flat_metrics(evaluation, split))
    return out


def run_provenance(resolved: dict[str, Any], datasets: dict[str, CountFolderDataset],
                   args: argparse.Namespace) -> dict[str, Any]:
    """What model_config.json records beside the spec and the metrics: args, data fingerprint, versions."""
    splits = [(name, str(ds.root), ds.samples) for name, ds in datasets.items() if name in ("train", "val")]
    return {
        "resolved_args": resolved,
        "dataset_fingerprint": dataset_fingerprint(splits),
        "manifest_sha256": manifest_sha256(args.train),
        "train_class_counts": datasets["train"].class_counts(),
        "best_metric": args.best_metric,
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def evaluation_report(evaluation: dict[str, Any], split: str, epoch: int) -> dict[str, Any]:
    """metrics.json's view of one evaluation: argmax figures at the top, both decodings side by side."""
    return {
        "split": split, "epoch": epoch, "n": evaluation["n"], "loss": evaluation["loss"],
        **{k: evaluation["argmax"][k] for k in ("accuracy", "rmse", "mae", "within_one", "per_class",
                                                "confusion_matrix")},
        "labels": evaluation["argmax"].get("labels"),  # a checkpoint saved before labels existed has none
        "decodings": {name: evaluation[name] for name in DECODINGS},
    }


def write_artifacts(args: argparse.Namespace, spec: ModelSpec, state: TrainState, final: dict[str, Any],
                    test: dict[str, Any] | None, provenance: dict[str, Any], recounts: dict[str, Any] | None) -> None:
    """model.pth with its config (the best epoch's weights: saved here, once), metrics.json, summary.csv, args."""
    model_dir = Path(args.model_dir)
    if state.best_state is not None:
        save_model(model_dir, state.best_state, spec, {**provenance, "final_metrics": final})
    metrics = {
        "history": state.history,
        "best_epoch": state.best_epoch,
        "best_metric": args.best_metric,
        "class_to_count": list(spec.class_to_count),
        "class_labels": list(spec.classes.labels),
        "top_class": spec.top_class,
        "final": evaluation_report(state.best_eval, "val", state.best_epoch) if state.best_eval else None,
        "test": evaluation_report(test, "test", state.best_epoch) if test else None,
        "recounts": recounts,
    }
    write_json(model_dir / METRICS_FILE, metrics)
    write_summary_csv(model_dir / SUMMARY_FILE, state.history)
    write_json(model_dir / ARGS_FILE, provenance["resolved_args"])
    if args.output_data_dir:
        write_json(Path(args.output_data_dir) / METRICS_FILE, metrics)
        write_summary_csv(Path(args.output_data_dir) / SUMMARY_FILE, state.history)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: parse, train; user errors become one `error: ...` line and exit status 2."""
    args, unknown = parse_args(argv)
    if unknown and int(os.environ.get("RANK", "0")) == 0:
        print(f"ignoring unknown arguments: {' '.join(unknown)}", flush=True)
    try:
        run_training(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        if args.failure_file:  # written before the launcher's own (generic) failure message, which then stands back
            Path(args.failure_file).parent.mkdir(parents=True, exist_ok=True)
            Path(args.failure_file).write_text(f"error: {exc}\n", encoding="utf-8")
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        print("interrupted: rerun with the same --checkpoint-dir to resume", file=sys.stderr, flush=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
