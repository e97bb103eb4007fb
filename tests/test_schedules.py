"""Learning-rate schedules: PyTorch's lr_scheduler values per epoch, config round trips, errors, use in fit."""

import math

import numpy as np
import pytest

import nnarray as nn
from nnarray import schedules as S


def torch_lrs(make_scheduler, lr, epochs):
    """The learning rate PyTorch trains each of ``epochs`` epochs with (scheduler stepped once per epoch)."""
    import torch  # noqa: PLC0415

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make_scheduler(opt)
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def _torch_cases():
    import torch.optim.lr_scheduler as L  # noqa: PLC0415

    return [
        (S.Exponential(0.05, gamma=0.9), lambda o: L.ExponentialLR(o, gamma=0.9), 0.05, 20),
        (S.Step(0.1, step_size=3), lambda o: L.StepLR(o, step_size=3), 0.1, 12),
        (S.Step(0.1, step_size=4, gamma=0.5), lambda o: L.StepLR(o, step_size=4, gamma=0.5), 0.1, 13),
        (S.Cosine(0.1, epochs=40), lambda o: L.CosineAnnealingLR(o, T_max=40), 0.1, 40),
        (S.Cosine(0.2, epochs=7, eta_min=0.01), lambda o: L.CosineAnnealingLR(o, T_max=7, eta_min=0.01), 0.2, 7),
        (
            S.Warmup(S.Cosine(0.1, epochs=35), epochs=5),
            lambda o: L.SequentialLR(
                o, [L.LinearLR(o, start_factor=1 / 5, end_factor=1.0, total_iters=4),
                    L.CosineAnnealingLR(o, T_max=35)], milestones=[5]
            ),
            0.1,
            40,
        ),
        (
            S.Warmup(S.Step(0.1, step_size=2, gamma=0.5), epochs=3),
            lambda o: L.SequentialLR(
                o, [L.LinearLR(o, start_factor=1 / 3, end_factor=1.0, total_iters=2),
                    L.StepLR(o, step_size=2, gamma=0.5)], milestones=[3]
            ),
            0.1,
            10,
        ),
    ]


@pytest.mark.torch
@pytest.mark.parametrize("i", range(7))
def test_equals_torch_lr_scheduler_per_epoch(i):
    schedule, make, lr, epochs = _torch_cases()[i]
    ours = [schedule(e) for e in range(1, epochs + 1)]
    np.testing.assert_allclose(ours, torch_lrs(make, lr, epochs), rtol=1e-12, atol=0)


def test_closed_forms():
    assert [S.Step(1.0, 2, gamma=0.5)(e) for e in range(1, 7)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    c = S.Cosine(0.1, epochs=4, eta_min=0.02)
    assert c(1) == 0.1 and math.isclose(c(3), 0.06, rel_tol=1e-15) and c(4) > 0.02
    w = S.Warmup(S.Constant(0.3), epochs=3)
    assert [w(e) for e in range(1, 6)] == pytest.approx([0.1, 0.2, 0.3, 0.3, 0.3], rel=1e-15)


@pytest.mark.parametrize(
    "schedule",
    [
        S.Constant(0.1),
        S.Exponential(0.05, gamma=0.95),
        S.Step(0.1, step_size=5, gamma=0.3),
        S.Cosine(0.1, epochs=40, eta_min=1e-4),
        S.Warmup(S.Cosine(0.1, epochs=35), epochs=5),
        S.Warmup(S.Warmup(S.Exponential(0.1, 0.9), 2), 3),
    ],
    ids=repr,
)
def test_config_round_trips(schedule):
    import json  # noqa: PLC0415

    config = json.loads(json.dumps(schedule.config()))
    again = S.from_config(config)
    assert type(again) is type(schedule) and again.config() == schedule.config()
    assert [again(e) for e in range(1, 30)] == [schedule(e) for e in range(1, 30)]
    assert repr(again) == repr(schedule)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: S.Step(0.1, step_size=0), r"step_size: expected a positive integer, got 0"),
        (lambda: S.Step(0.1, step_size=2, gamma=0), r"gamma: expected a factor in \(0, 1\], got 0.0"),
        (lambda: S.Exponential(0.1, gamma="0.9"), r"gamma: expected a number, got '0.9'"),
        (lambda: S.Cosine(0.1, epochs=2.5), r"epochs: expected a positive integer, got 2.5"),
        (lambda: S.Cosine(0.1, epochs=10, eta_min=0.2), r"eta_min: expected a value in \[0, lr\)"),
        (lambda: S.Cosine(-0.1, epochs=10), r"lr: expected a positive finite learning rate"),
        (lambda: S.Warmup(0.1, epochs=3), r"schedule: expected a Schedule"),
        (lambda: S.Warmup(S.Constant(0.1), epochs=0), r"epochs: expected a positive integer, got 0"),
        (lambda: S.Cosine(0.1, epochs=3)(4), r"epoch: the cosine schedule was made for epochs 1..3, got epoch 4"),
        (lambda: S.from_config({"name": "linear"}), r"schedule: unknown schedule 'linear'"),
    ],
)
def test_bad_arguments_name_the_argument(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_fit_trains_each_epoch_at_the_schedules_rate(blobs):
    X, t = blobs(n=200, seed=2)
    schedule = S.Warmup(S.Cosine(0.1, epochs=4), epochs=2)
    net = nn.MLP([12, 8, 3], backend="numpy", dtype="float64", seed=0)
    hist = nn.fit(net, nn.SGD(0.1, momentum=0.9), X, t, epochs=6, batch_size=50, schedule=schedule)
    assert hist.lr == [schedule(e) for e in range(1, 7)]
    before = {k: v.copy() for k, v in net.params.items()}
    with pytest.raises(ValueError, match=r"schedule: Cosine\(lr=0.1, epochs=4, eta_min=0.0\) covers epochs 1..4, "
                                         r"but this fit would train epoch 7"):
        nn.fit(net, nn.SGD(0.1), X, t, epochs=1, batch_size=50, schedule=S.Cosine(0.1, epochs=4),
               options=nn.FitOptions(history=hist))
    assert all(np.array_equal(net.params[k], before[k]) for k in before) and len(hist) == 6


def test_a_schedule_shorter_than_the_run_is_refused_before_any_update(blobs):
    """The issue's case: fit(..., epochs=4, schedule=Cosine(0.1, epochs=2)) must not touch the parameters."""
    X, t = blobs(n=100, seed=2)
    net = nn.MLP([12, 8, 3], backend="numpy", dtype="float64", seed=0)
    before = {k: v.copy() for k, v in net.params.items()}
    seen = []
    with pytest.raises(ValueError, match=r"schedule: .* covers epochs 1..2, but this fit would train epochs 1..4"):
        nn.fit(net, nn.SGD(0.1), X, t, epochs=4, batch_size=50, schedule=S.Cosine(0.1, epochs=2), callbacks=seen.append)
    assert all(np.array_equal(net.params[k], before[k]) for k in before) and seen == []
    with pytest.raises(ValueError, match=r"schedule: .* covers epochs 1..3, but this fit would train epochs 1..4"):
        nn.fit(net, nn.SGD(0.1), X, t, epochs=4, batch_size=50, schedule=S.Warmup(S.Cosine(0.1, epochs=2), epochs=1))
    assert all(np.array_equal(net.params[k], before[k]) for k in before)
