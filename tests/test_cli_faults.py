"""One line for every mistake: each case of the fault-injection report, run through the command line.

Every case must exit non-zero, print no traceback, name what was wrong, and leave no file that claims
to be complete. The cases run in-process (click's runner) to keep the table fast; the last tests run
real processes for what only a process shows (exit codes of signals, output at shutdown).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cnnbench import hookimpl, plugins
from cnnbench.cli import main

from conftest import tiny_backbone, write_image


class _TestPlugins:
    """In-process plugins: a small backbone, and two broken ones."""

    @hookimpl
    def register_backbones(self, register):
        register("tiny", lambda **kw: tiny_backbone())
        register("raises", _raises)
        register("returns-none", lambda **kw: None)


def _raises(**kw):
    raise RuntimeError("weights server on fire")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plugins.register_plugin(_TestPlugins(), name="test-plugins")
    folder = tmp_path / "data" / "imagefolder"
    for c in "abc":
        for k in range(4):
            write_image(folder / "train" / c / f"{k}.jpg", seed=k + 10 * ord(c))
            write_image(folder / "test" / c / f"{k}.jpg", seed=k + 20 * ord(c))
    write_image(folder / "test" / "zebra" / "0.jpg", seed=1)
    small = tmp_path / "data" / "small"
    for c in "ab":
        for k in range(3):
            write_image(small / c / f"{k}.jpg", seed=k + 30 * ord(c))
    (tmp_path / "data" / "empty").mkdir()
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    return tmp_path


EXTRACT = ["extract", "-b", "tiny", "-d", "digits", "--no-progress", "--runtime", "eager"]
EVALUATE = ["evaluate", "-b", "tiny", "-d", "digits", "--head", "svm"]

# (case id, params.yaml content or None, command line, text the message must hold)
CASES = [
    # values that made no sense and were accepted with exit 0
    ("batch-size-negative", None, EXTRACT + ["--batch-size", "-5"], "batch_size"),
    ("rotation-angles-one", {"extract": {"views": "jitter16", "rotation_angles": [3]}}, EXTRACT, "rotation_angles"),
    ("svm-C-negative", None, EVALUATE + ["-H", "C=-1"], "C"),
    ("svm-C-zero", None, EVALUATE + ["-H", "C=0"], "C"),
    ("svm-power-negative", None, EVALUATE + ["-H", "power=-1"], "power"),
    ("pooling-bogus", {"extract": {"pooling": "bogus"}}, EXTRACT, "pooling"),
    ("levels-zero", None, EXTRACT + ["--views", "spatial", "--levels", "0"], "levels"),
    ("empty-image-folder", None, ["extract", "-b", "tiny", "-d", "imagefolder", "-D", "path=data/empty",
                                  "--no-progress"], "data/empty"),
    ("missing-params-file", None, ["--params", "nope.yaml"] + EXTRACT, "nope.yaml"),
    ("unknown-top-level-key", {"batch_size": 3}, EXTRACT, "batch_size"),
    ("unknown-extract-key", {"extract": {"batchsize": 3}}, EXTRACT, "did you mean 'batch_size'"),
    # tracebacks before
    ("batch-size-abc", {"extract": {"batch_size": "abc"}}, EXTRACT, "batch_size"),
    ("workers-negative", {"extract": {"workers": -1}}, EXTRACT, "workers"),
    ("views-bogus", {"extract": {"views": "bogus"}}, EXTRACT, "views"),
    ("runtime-bogus", {"extract": {"runtime": "bogus"}}, EXTRACT, "runtime"),
    ("precision-bogus", {"extract": {"precision": "bogus"}}, EXTRACT, "precision"),
    ("extract-a-string", {"extract": "fast"}, EXTRACT, "extract"),
    ("layers-a-string", {"extract": {"layers": "pre_logits"}}, EXTRACT, "layers"),
    ("box-scale-abc", {"extract": {"box_scale": "abc"}}, EXTRACT, "box_scale"),
    ("seeds-x", {"dataset_options": {"imagefolder": {"seeds": "x"}}},
     ["extract", "-b", "tiny", "-d", "imagefolder", "-D", "path=data/small"], "seeds"),
    ("features-dir-null", {"features_dir": None}, EXTRACT, "features_dir"),
    ("layer-nonexistent", None, EXTRACT + ["--layer", "nonexistent"], "nonexistent"),
    ("device-cuda-without-gpu", None, EXTRACT + ["--device", "cuda"], "cuda"),
    ("device-bogus", None, EXTRACT + ["--device", "bogus"], "bogus"),
    ("fp16-on-cpu", None, EXTRACT + ["--precision", "fp16", "--device", "cpu"], "fp16"),
    ("train-per-class-abc", None, ["extract", "-b", "tiny", "-d", "imagefolder", "-D", "path=data/small",
                                   "-D", "train_per_class=abc"], "train_per_class"),
    ("svm-C-abc", None, EVALUATE + ["-H", "C=abc"], "C"),
    ("svm-loss-bogus", None, EVALUATE + ["-H", "loss=bogus"], "loss"),
    ("svm-C-grid-empty", None, EVALUATE + ["-H", "C_grid=[]"], "C_grid"),
    ("l2-pca-dim-bogus", None, ["evaluate", "-b", "tiny", "-d", "digits", "--head", "l2", "-H", "pca_dim=bogus"],
     "pca_dim"),
    ("l2-index-bogus", None, ["evaluate", "-b", "tiny", "-d", "digits", "--head", "l2", "-H", "index=bogus"], "index"),
    ("svm-cv-folds-one", None, EVALUATE + ["-H", "cv_folds=1"], "cv_folds"),
    ("broken-safetensors", None, ["extract", "-b", "effnet-lite0", "-d", "digits", "--weights",
                                  "broken.safetensors"], "broken.safetensors"),
    ("plugin-build-raises", None, ["extract", "-b", "raises", "-d", "digits"], "weights server on fire"),
    ("plugin-build-returns-none", None, ["extract", "-b", "returns-none", "-d", "digits"], "None"),
    ("test-class-missing-from-train", None, ["extract", "-b", "tiny", "-d", "imagefolder", "-D",
                                             "path=data/imagefolder", "--no-progress"], "zebra"),
    ("fewer-images-than-train-per-class", None,
     ["evaluate", "-b", "tiny", "-d", "imagefolder", "-D", "path=data/small", "-D", "train_per_class=5",
      "--head", "svm"], "train_per_class"),
    ("key-value-without-equals", None, EVALUATE + ["-H", "C"], "key=value"),
    ("head-option-unknown", None, EVALUATE + ["-H", "Cee=1"], "Cee"),
    ("unknown-split", None, EXTRACT + ["--split", "validation"], "validation"),
    ("download-size-abc", None, ["datasets", "download", "holidays", "--data-root", "data",
                                 "--max-unpacked-size", "abc"], "max-unpacked-size"),
    ("dataset-option-typo", None, ["extract", "-b", "tiny", "-d", "imagefolder", "-D", "path=data/small",
                                   "-D", "trian_per_class=1"], "did you mean 'train_per_class'"),
    ("svm-tune-on-bogus", None, EVALUATE + ["-H", "tune_on=val"], "tune_on"),
    ("compare-level-one", {"compare": {"level": 1}}, ["compare"], "compare.level"),
    ("compare-bootstrap-ten", None, ["compare", "--bootstrap", "10"], "compare.bootstrap"),
    ("distractors-on-a-class-set", None, EVALUATE + ["-E", "distractors=revisitop1m"],
     "digits is a multiclass data set; leave distractors out"),
    ("shots-as-a-dataset-option", None, EVALUATE + ["-D", "shots=5"], "use -E shots=5 or a recipe"),
    ("shots-on-a-multilabel-set", None, ["evaluate", "-b", "tiny", "-d", "voc2007", "--data-root", "data", "-E",
                                         "shots=1"], "recipe cnn with -E: shots"),
    ("recipe-unknown", None, EXTRACT + ["--recipe", "cnnagu"], "did you mean 'cnnaug'"),
    ("head-asked-for-another-task", None, ["evaluate", "-b", "tiny", "-d", "oxford5k-subset", "--data-root", "data",
                                           "--head", "svm"], "--head svm: the svm head scores"),
    ("show-without-outcomes", None, ["show", "-b", "tiny", "-d", "digits"], "cnnbench evaluate"),
]


def _complete_files(root: Path) -> list[Path]:
    import h5py

    out = []
    for p in root.rglob("*.h5"):
        try:
            with h5py.File(p, "r") as f:
                if f.attrs.get("complete"):
                    out.append(p)
        except OSError:
            pass
    return out


@pytest.mark.parametrize("case_id,params,args,expect", CASES, ids=[c[0] for c in CASES])
def test_every_mistake_is_one_line_and_a_non_zero_exit(workdir, case_id, params, args, expect):
    if params is not None:
        (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(main, args)
    assert result.exit_code not in (0, None), result.output
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}"
    assert "Traceback" not in result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error")]
    assert errors, result.output
    assert expect in result.output, result.output
    assert _complete_files(workdir) == []
    if case_id in ("svm-C-negative", "svm-C-zero", "svm-power-negative"):
        assert not (workdir / "metrics").exists()  # nothing chance-level written


def test_verbose_shows_the_traceback_of_a_mistake(workdir):
    result = CliRunner().invoke(main, ["-v"] + EXTRACT + ["--batch-size", "-5"])
    assert result.exit_code == 1 and "Traceback" in result.output and "batch_size" in result.output


def test_ctrl_c_exits_130_and_keeps_the_partial_file(tmp_path):
    """A real SIGINT to a real extraction (effnet-lite0 on digits takes a few seconds here)."""
    out = tmp_path / "f"
    proc = subprocess.Popen([sys.executable, "-m", "cnnbench", "extract", "-b", "effnet-lite0", "-d", "digits",
                             "--split", "train", "--out", str(out), "--no-progress", "--runtime", "eager",
                             "--batch-size", "16"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    partial = out / "train.h5.partial"
    while time.time() < deadline and not partial.exists() and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "resume" in err
    assert partial.exists() and not (out / "train.h5").exists()
