"""README.md's usage example runs as written, and .ci/run finds the README's test command."""

import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _block_after(marker, lang):
    m = re.search(re.escape(marker) + r".*?\n```" + lang + r"\n(.*?)\n```", README, re.S)
    assert m, f"README.md has no ```{lang} block after {marker!r}"
    return m.group(1)


def test_usage_example_runs_as_written(tmp_path, monkeypatch, capsys):
    code = _block_after("<!-- example", "python")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md example", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out.splitlines()
    val_acc, acc = map(float, out[0].split())
    assert val_acc == acc and acc > 0.9
    assert "'W1': (20, 100)" in out[1]
    assert (tmp_path / "model.npz").exists()


def test_ci_runs_the_readme_test_command():
    shown = _block_after("<!-- test-command -->", "bash").strip()
    # The part of .ci/run that extracts the command (minus its own `cd`), run from the repository root.
    script = (ROOT / ".ci" / "run").read_text().split("if [ -z")[0]
    script = "\n".join(line for line in script.splitlines() if not line.startswith("cd "))
    found = subprocess.run(["bash", "-c", script + '\nprintf "%s" "$cmd"'], cwd=ROOT, capture_output=True, text=True)
    assert found.stdout == shown


def test_best_command_is_one_valid_training_command_with_one_hidden_layer():
    """The command after <!-- best-command --> parses with the training command's own parser and config."""
    import shlex

    from nnarray import cli

    words = shlex.split(_block_after("<!-- best-command -->", "bash").strip())
    assert words[:2] == [".venv/bin/nnarray", "train"]
    args = cli.parse(words[2:])
    cfg, state = cli.config(args)
    assert state is None and len(cfg["hidden"]) == 1 and args.epochs <= 40
    assert cfg["dataset"] == "fashion-mnist"


def test_data_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """The README's Fashion-MNIST example, where the data are installed (ci/install.sh installs them)."""
    import pytest

    import nnarray as nn

    if nn.datasets.find_dataset_dir("fashion-mnist") is None:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist, or bash ci/install.sh test)")
    code = _block_after("<!-- example-data", "python")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md data example", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "(60000, 784) float32 int64"
    assert float(out[1]) > 0.75
