"""Each hyperparameter reaches the optimizer, scheduler, loss, transform or loader that it names.

The objects are built from parsed command lines by the same functions train.py uses; the last test spies on a
real training run to show that run_training uses exactly those builders with the parsed values.
"""

from __future__ import annotations

import math

import pytest
import torch

from modeling import train as train_module
from modeling.distributed import DistInfo
from modeling.losses import OrdinalEMDLoss
from modeling.model import ModelConfigError, create_model
from modeling.preprocessing import EvalTransform, TrainTransform
from modeling.train import (
    build_criterion,
    build_datasets,
    build_optimizer,
    build_scheduler,
    build_spec,
    build_train_loader,
    build_transforms,
    is_better,
    parse_args,
    replan_scheduler,
    resolve_device,
    seed_everything,
)
from tests.modeling_fixtures import train_cli_args


def _args(*argv: str):
    args, unknown = parse_args(["--train", "T", "--val", "V", *argv])
    assert unknown == []
    return args


def _model(args):
    return create_model(args.arch, build_spec(args).num_classes)


def test_lr_momentum_weight_decay_reach_sgd():
    args = _args("--optimizer", "sgd", "--lr", "0.123", "--momentum", "0.77", "--weight-decay", "0.0042")
    opt = build_optimizer(_model(args), args)
    assert type(opt) is torch.optim.SGD
    decayed, plain = opt.param_groups
    assert decayed["lr"] == plain["lr"] == 0.123
    assert decayed["momentum"] == 0.77
    assert decayed["weight_decay"] == 0.0042 and plain["weight_decay"] == 0.0  # norms and biases not decayed
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim == 1 for p in plain["params"])


def test_optimizer_flag_selects_adamw_with_momentum_as_beta1():
    args = _args("--optimizer", "adamw", "--lr", "0.0007", "--momentum", "0.8", "--weight-decay", "0.05")
    opt = build_optimizer(_model(args), args)
    assert type(opt) is torch.optim.AdamW
    assert opt.param_groups[0]["lr"] == 0.0007 and opt.param_groups[0]["betas"] == (0.8, 0.999)
    assert opt.param_groups[0]["weight_decay"] == 0.05


def test_cosine_schedule_spans_the_epochs():
    args = _args("--lr-schedule", "cosine", "--epochs", "7", "--lr", "0.1")
    sched = build_scheduler(build_optimizer(_model(args), args), args)
    assert type(sched) is torch.optim.lr_scheduler.CosineAnnealingLR and sched.T_max == 7


def test_step_schedule_takes_step_size_and_gamma():
    args = _args("--lr-schedule", "step", "--lr-step-size", "4", "--lr-gamma", "0.5", "--epochs", "12")
    opt = build_optimizer(_model(args), args)
    sched = build_scheduler(opt, args)
    assert type(sched) is torch.optim.lr_scheduler.StepLR and sched.step_size == 4 and sched.gamma == 0.5
    default = _args("--lr-schedule", "step", "--epochs", "12")
    assert build_scheduler(build_optimizer(_model(default), default), default).step_size == 4  # a third


def test_replanned_schedule_follows_a_changed_lr():
    """Resume after 3 of 10 cosine epochs at --lr 0.1 with --lr 0.01: the re-planned lr is 0.01's, not 0.1's."""
    old, new = _args("--lr", "0.1", "--epochs", "10"), _args("--lr", "0.01", "--epochs", "10")
    model = torch.nn.Linear(2, 2)  # the optimizer's two groups (weights, bias) are all the test needs
    opt = build_optimizer(model, old)
    sched = build_scheduler(opt, old)
    for _ in range(3):
        opt.step()
        sched.step()
    resumed = build_optimizer(model, new)
    build_scheduler(resumed, new)
    resumed.load_state_dict(opt.state_dict())  # as TrainState.from_checkpoint does
    replanned = replan_scheduler(resumed, new, epochs_done=3)
    assert replanned.base_lrs == [0.01, 0.01]
    expected = 0.01 * (1 + math.cos(math.pi * 3 / 10)) / 2  # 0.00794
    assert [g["lr"] for g in resumed.param_groups] == pytest.approx([expected, expected])


def test_label_smoothing_and_loss_choice_reach_the_criterion():
    ce_args = _args("--loss", "ce", "--label-smoothing", "0.15")
    ce = build_criterion(ce_args, build_spec(ce_args))
    assert type(ce) is torch.nn.CrossEntropyLoss and ce.label_smoothing == 0.15
    ord_args = _args("--loss", "ordinal", "--label-smoothing", "0.05", "--ordinal-weight", "2.5", "--max-count", "7")
    ordinal = build_criterion(ord_args, build_spec(ord_args))
    assert isinstance(ordinal, OrdinalEMDLoss)
    assert (ordinal.label_smoothing, ordinal.emd_weight, ordinal.num_classes) == (0.05, 2.5, 8)


def test_image_size_reaches_the_transforms():
    from PIL import Image

    args = _args("--image-size", "72")
    train_tf, eval_tf = build_transforms(build_spec(args))
    assert isinstance(train_tf, TrainTransform) and isinstance(eval_tf, EvalTransform)
    img = Image.new("RGB", (130, 90), (1, 2, 3))
    assert tuple(train_tf(img).shape) == tuple(eval_tf(img).shape) == (3, 72, 72)
    assert build_spec(args).preprocess.image_size == 72


def test_arch_and_max_count_reach_the_model():
    args = _args("--arch", "resnet34", "--max-count", "9")
    model = _model(args)
    assert len(model.layer3) == 6 and model.fc.out_features == 10  # resnet34: 3-4-6-3 blocks


def test_batch_size_workers_and_seed_reach_the_loader(tiny_dataset):
    args, _ = parse_args(train_cli_args(tiny_dataset, tiny_dataset / "unused", "--batch-size", "5",
                                        "--workers", "0", "--seed", "11"))
    spec = build_spec(args)
    loader = build_train_loader(build_datasets(args, spec)["train"], args, DistInfo(), torch.device("cpu"))
    assert loader.batch_size == 5 and loader.num_workers == 0
    order = list(loader.sampler)
    again = build_train_loader(build_datasets(args, spec)["train"], args, DistInfo(), torch.device("cpu"))
    assert list(again.sampler) == order
    args.seed = 12
    other = build_train_loader(build_datasets(args, spec)["train"], args, DistInfo(), torch.device("cpu"))
    assert list(other.sampler) != order


def test_seed_fixes_the_initial_weights():
    seed_everything(5)
    a = _model(_args())
    seed_everything(5)
    b = _model(_args())
    seed_everything(6)
    c = _model(_args())
    assert torch.equal(a.conv1.weight, b.conv1.weight) and not torch.equal(a.conv1.weight, c.conv1.weight)


def test_device_flag_is_resolved_or_refused_clearly():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelConfigError, match="--device cuda but no CUDA device"):
            resolve_device("cuda")


def test_best_metric_direction():
    assert is_better(0.6, 0.5, "val_accuracy") and not is_better(0.4, 0.5, "val_accuracy")
    assert is_better(0.8, 0.9, "val_rmse") and not is_better(1.0, 0.9, "val_rmse")
    assert is_better(1.0, None, "val_rmse")


def test_invalid_choices_name_the_allowed_values(capsys):
    for flag, value in [("--optimizer", "rmsprop"), ("--arch", "vgg"), ("--loss", "mse"),
                        ("--lr-schedule", "poly"), ("--pretrained", "yes"), ("--best-metric", "val_mae")]:
        with pytest.raises(SystemExit):
            _args(flag, value)
        assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _args("--lr", "-1")
    assert "must be a positive number" in capsys.readouterr().err


def test_every_flag_has_a_default_and_help():
    parser = train_module.get_args_parser()
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help, action.dest
        assert action.default is not None, action.dest


def test_training_uses_the_builders_with_the_parsed_values(tiny_dataset, tmp_path, monkeypatch):
    seen: dict[str, object] = {}

    def spy(name, fn):
        def wrapper(*a, **k):
            seen[name] = result = fn(*a, **k)
            return result
        monkeypatch.setattr(train_module, name, wrapper)

    for name in ("build_optimizer", "build_scheduler", "build_criterion", "build_datasets", "build_train_loader"):
        spy(name, getattr(train_module, name))
    real_epoch = train_module.train_one_epoch

    def epoch_spy(model, criterion, optimizer, loader, scaler, rt):
        seen["epoch_lr"] = optimizer.param_groups[0]["lr"]
        seen["epoch_objects"] = (criterion, optimizer, loader)
        return real_epoch(model, criterion, optimizer, loader, scaler, rt)

    monkeypatch.setattr(train_module, "train_one_epoch", epoch_spy)
    args, _ = parse_args(train_cli_args(
        tiny_dataset, tmp_path / "m", "--optimizer", "adamw", "--lr", "0.0031", "--momentum", "0.85",
        "--weight-decay", "0.02", "--lr-schedule", "step", "--lr-step-size", "3", "--lr-gamma", "0.3",
        "--loss", "ordinal", "--label-smoothing", "0.1", "--ordinal-weight", "0.7", "--batch-size", "12",
        "--image-size", "40"))
    train_module.run_training(args)
    criterion, optimizer, loader = seen["epoch_objects"]
    assert optimizer is seen["build_optimizer"] and type(optimizer) is torch.optim.AdamW
    assert seen["epoch_lr"] == 0.0031 and optimizer.param_groups[0]["betas"][0] == 0.85
    assert optimizer.param_groups[0]["weight_decay"] == 0.02
    assert seen["build_scheduler"].step_size == 3 and seen["build_scheduler"].gamma == 0.3
    assert criterion is seen["build_criterion"] and criterion.emd_weight == 0.7 and criterion.label_smoothing == 0.1
    assert loader is seen["build_train_loader"] and loader.batch_size == 12
    assert seen["build_datasets"]["train"].transform.side == 40
