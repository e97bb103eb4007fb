"""The library speaks in arguments, a command in its flags (nnarray.words): the same checks, other words."""

import pytest

import nnarray as nn
from nnarray.words import arg, speaking

FLAGS = {"data_dir": lambda v: f"--data-dir {v}", "download": "run the command", "dataset": lambda v: f"--dataset {v}",
         "fast": lambda v: {"True": "--fast on", "None": "--fast auto", "False": "--fast off"}[v],
         "backend": lambda v: f"--backend {v.strip(chr(39))}"}


def test_arg_in_the_librarys_words_and_a_commands():
    assert arg("fast", "None") == "fast=None"
    assert arg("download", "True", "call with download=True") == "call with download=True"
    with speaking(FLAGS):
        assert arg("fast", "None") == "--fast auto"
        assert arg("download", "True", "call with download=True") == "run the command"
        assert arg("seed", "0") == "seed=0"  # not in the table: the library's words
    assert arg("fast", "False") == "fast=False"  # the vocabulary ends with the block


def _missing_mnist(tmp_path):
    with pytest.raises(nn.datasets.DatasetNotFoundError) as exc:
        nn.datasets.load_mnist(data_dir=tmp_path / "nothing", download=False)
    return str(exc.value)


def test_dataset_advice_names_arguments_in_the_library(tmp_path):
    msg = _missing_mnist(tmp_path)
    assert f"MNIST: data_dir={str(tmp_path / 'nothing')!r} does not exist (download=False" in msg
    assert "pass data_dir=DIR" in msg and "call with download=True" in msg
    assert "nnarray.datasets.load_fashion_mnist()" in msg and "nnarray.datasets.load_digits()" in msg


def test_dataset_advice_names_flags_under_a_command(tmp_path):
    with speaking(FLAGS):
        msg = _missing_mnist(tmp_path)
    for python_words in ("data_dir=", "download=", "load_fashion_mnist()", "load_digits()"):
        assert python_words not in msg, msg
    assert "pass --data-dir DIR" in msg and "run the command on a machine with internet access" in msg
    assert "--dataset fashion-mnist" in msg and "--dataset digits" in msg


def test_fast_path_refusal_in_both_vocabularies(blobs):
    X, t = blobs(n=40, seed=0)
    net = nn.MLP([X.shape[1], 4, 3], backend="array_api_strict", seed=0)  # a backend without a fast path
    with pytest.raises(ValueError,
                       match=r"^fast=True: no fast path available here \(.*\); use fast=None or fast=False$"):
        nn.fit(net, nn.SGD(0.1), X, t, epochs=1, options=nn.FitOptions(fast=True))
    with speaking(FLAGS), pytest.raises(
            ValueError, match=r"^--fast on: no fast path available here \(.*\); use --fast auto or --fast off$"):
        nn.fit(net, nn.SGD(0.1), X, t, epochs=1, options=nn.FitOptions(fast=True))


def test_optimizer_repr_writes_floats_as_a_person_would():
    opt = nn.SGD(0.05, momentum=0.9)
    opt.lr = 0.05 * 0.9  # what an exponential schedule gives at epoch 2
    assert repr(opt) == "SGD(lr=0.045, momentum=0.9, nesterov=False, weight_decay=0.0)"
    assert repr(nn.Adam(1e-3)).startswith("Adam(lr=0.001, betas=(0.9, 0.999), eps=1e-08")
