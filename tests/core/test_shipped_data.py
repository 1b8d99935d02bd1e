"""The mnist-10k subset ships inside the package: found from any working directory, listed as
package data (so a non-editable install has it), with its provenance and licence note."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from rnncomp.train import data

ROOT = Path(__file__).resolve().parents[2]
FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_shipped_folder_is_in_the_package():
    d = data.SHIPPED_MNIST_DIR
    assert d.is_relative_to(Path(data.__file__).resolve().parent)
    for name in FILES:
        assert (d / name).is_file()
    readme = (d / "README.md").read_text()
    assert "CC BY-SA 3.0" in readme and "dataset-fashion-mnist" in readme
    assert sum((d / n).stat().st_size for n in FILES) < 2_000_000


def test_default_dir_from_any_working_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RNNCOMP_MNIST_DIR"}
    code = ("from rnncomp.train.data import default_mnist_dir, load_mnist; "
            "d = default_mnist_dir(); x, y = load_mnist(d, 'test'); print(d, x.shape)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert str(data.SHIPPED_MNIST_DIR) in out.stdout and "(2000, 28, 28)" in out.stdout


def test_env_var_wins(tmp_path, monkeypatch):
    d = tmp_path / "mine"
    d.mkdir()
    for name in FILES:
        (d / name).write_bytes((data.SHIPPED_MNIST_DIR / name).read_bytes())
    monkeypatch.setenv("RNNCOMP_MNIST_DIR", str(d))
    assert data.default_mnist_dir() == d


def test_wheel_contains_the_data(tmp_path):
    """A non-editable install gets the files: pyproject's package-data puts them in the wheel."""
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "--quiet", "-w", str(tmp_path), str(ROOT)], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    (whl,) = tmp_path.glob("rnncomp-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    for name in FILES + ["README.md"]:
        assert f"rnncomp/train/datasets/mnist-10k/{name}" in names
