"""Kills at every step: while batches are written, between the final rename and the cleanup, under
`dvc repro`, with the parent process gone, by SIGTERM. Whatever a kill leaves is either resumed to
the bytes of an uninterrupted run or removed; damaged partial work is computed again, never committed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cnnbench import plugins, store
from cnnbench.errors import StoreError
from cnnbench.extract import extract_split
from cnnbench.settings import ExtractSettings

from conftest import ROOT, tiny_backbone

BY_40 = ExtractSettings(batch_size=40, runtime="eager")  # digits/test: 23 batches, the 11th ends at item 440
ENV = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")])}


def _digits():
    return plugins.create("dataset", "digits")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """digits/test through the tiny backbone, uninterrupted: what every rerun must equal, byte for byte."""
    out = tmp_path_factory.mktemp("ref") / "test.h5"
    return extract_split(tiny_backbone(), _digits(), "test", out, BY_40, progress=False).path


def _killed_at(target: Path, items: int, monkeypatch) -> None:
    """An extraction of digits/test stopped (Ctrl-C) once ``items`` items are recorded."""
    real = store.StoreWriter.append

    def append(self, *args, **kw):
        real(self, *args, **kw)
        if self.kept >= items:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(store.StoreWriter, "append", append)
        with pytest.raises(KeyboardInterrupt):
            extract_split(tiny_backbone(), _digits(), "test", target, BY_40, progress=False)
    assert not target.exists() and store.partial_path(target).is_dir()


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _column(target: Path, name: str) -> Path:
    return store.partial_path(target) / (name.replace("/", "__") + ".bin")


def _row_offset(target: Path, name: str, row: int) -> int:
    """A byte inside row ``row`` of a column of the 440 rows done (arrays: fixed size; text: lines)."""
    path = _column(target, name)
    if name == "ids":
        return sum(len(line) for line in path.read_bytes().splitlines(keepends=True)[:row]) + 3
    return row * (path.stat().st_size // 440) + 2


# -- damaged partial work --------------------------------------------------------------------------------


@pytest.mark.parametrize("column, row, resumes_at", [("features/act", 10, 0), ("features/act", 300, 280),
                                                     ("labels", 439, 400), ("ids", 123, 120)])
def test_a_flipped_byte_in_partial_work_is_computed_again_from_its_batch_never_committed(
        tmp_path, reference, monkeypatch, column, row, resumes_at):
    target = tmp_path / "f" / "test.h5"
    _killed_at(target, 440, monkeypatch)
    _flip(_column(target, column), _row_offset(target, column, row))
    res = extract_split(tiny_backbone(), _digits(), "test", target, BY_40, progress=False)
    assert res.resumed_from == resumes_at
    assert target.read_bytes() == reference.read_bytes()


def test_partial_work_cut_short_resumes_from_its_last_whole_batch(tmp_path, reference, monkeypatch):
    """A copy or a sync that lost the end of a column: the batches it still holds whole are kept."""
    target = tmp_path / "f" / "test.h5"
    _killed_at(target, 440, monkeypatch)
    feats = _column(target, "features/act")
    os.truncate(feats, feats.stat().st_size * 300 // 440)
    res = extract_split(tiny_backbone(), _digits(), "test", target, BY_40, progress=False)
    assert res.resumed_from == 280 and target.read_bytes() == reference.read_bytes()


def test_partial_work_damaged_after_it_was_resumed_is_found_at_commit(tmp_path, reference, monkeypatch):
    target = tmp_path / "f" / "test.h5"
    real = store.StoreWriter.commit

    def commit(self, *args, **kw):
        _flip(_column(target, "features/act"), 156 * 32 + 2)  # row 156: a bit flips under the finished run
        return real(self, *args, **kw)

    with monkeypatch.context() as m:
        m.setattr(store.StoreWriter, "commit", commit)
        with pytest.raises(StoreError, match="damaged on disk after it was written.*nothing was committed"):
            extract_split(tiny_backbone(), _digits(), "test", target, BY_40, progress=False)
    assert not target.exists()
    res = extract_split(tiny_backbone(), _digits(), "test", target, BY_40, progress=False)
    assert res.resumed_from == 120 and target.read_bytes() == reference.read_bytes()  # from that row's batch


@pytest.mark.parametrize("damage", ["truncated record", "another version", "log line damaged"])
def test_partial_work_with_a_broken_or_foreign_record_is_never_trusted(tmp_path, reference, monkeypatch, damage):
    target = tmp_path / "f" / "test.h5"
    _killed_at(target, 440, monkeypatch)
    progress = store.partial_path(target) / "progress.json"
    state = json.loads(progress.read_text())
    if damage == "truncated record":
        progress.write_text(progress.read_text()[:-20])
    elif damage == "another version":
        del state["format"]
        progress.write_text(json.dumps(state))
    else:  # the fourth batch's line: what it records of the features no longer matches their bytes
        log = store.partial_path(target) / "batches.log"
        lines = log.read_bytes().splitlines(keepends=True)
        entry = json.loads(lines[3])
        entry[1]["features/act"][2] ^= 1
        lines[3] = (json.dumps(entry) + "\n").encode()
        log.write_bytes(b"".join(lines))
        state["log_bytes"] = log.stat().st_size
        progress.write_text(json.dumps(state))
    res = extract_split(tiny_backbone(), _digits(), "test", target, BY_40, progress=False)
    assert res.resumed_from == (120 if damage == "log line damaged" else 0)
    assert target.read_bytes() == reference.read_bytes()


# -- a kill between the final rename and the cleanup -------------------------------------------------------


KILLED_RUN = """
import os, sys
sys.path.insert(0, {tests!r})
from conftest import tiny_backbone
from cnnbench import plugins, store
from cnnbench.extract import extract_split
from cnnbench.settings import ExtractSettings
store.{where} = lambda *a, **kw: os._exit(137)  # SIGKILL, right there
extract_split(tiny_backbone(), plugins.create("dataset", "digits"), "test", {target!r},
              ExtractSettings(batch_size=40, runtime="eager"), progress=False, overwrite={overwrite})
"""


def _killed_in_commit(target: Path, where: str, overwrite: bool = False) -> None:
    script = KILLED_RUN.format(tests=str(ROOT / "tests"), target=str(target), where=where, overwrite=overwrite)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ, **ENV))
    assert proc.returncode == 137, proc.stderr


def test_a_kill_after_the_final_rename_leaves_nothing_behind_once_the_rerun_finds_the_file_complete(tmp_path,
                                                                                                  reference):
    target = tmp_path / "f" / "test.h5"
    _killed_in_commit(target, "StoreWriter.discard")
    assert target.read_bytes() == reference.read_bytes()
    assert store.partial_path(target).is_dir() and store.lock_path(target).exists()  # what the kill left
    res = extract_split(tiny_backbone(), _digits(), "test", target, BY_40, progress=False)
    assert res.cached and target.read_bytes() == reference.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["test.h5"]


def test_a_kill_while_overwrite_verifies_its_commit_leaves_no_temporary_copy_for_good(tmp_path, reference):
    target = tmp_path / "f" / "test.h5"
    shutil.copytree(reference.parent, target.parent)
    _killed_in_commit(target, "verify", overwrite=True)
    assert [p.name for p in target.parent.glob("test.h5.tmp-*")]  # a full copy, left by the kill
    assert extract_split(tiny_backbone(), _digits(), "test", target, BY_40, progress=False).cached
    assert sorted(p.name for p in target.parent.iterdir()) == ["test.h5"]


def test_the_cleanup_leaves_a_live_runs_files_alone(tmp_path, reference):
    from cnnbench import extract as engine

    target = tmp_path / "f" / "test.h5"
    shutil.copytree(reference.parent, target.parent)
    ds, bb = _digits(), tiny_backbone()
    items = ds.items("test")
    sig = engine.signature(bb, ds, "test", items, BY_40.resolve("test", ds, bb))
    live = store.StoreWriter(target, sig, expected_ids=[i.id for i in items], fresh=True)  # --overwrite, running
    try:
        assert extract_split(bb, ds, "test", target, BY_40, progress=False).cached
        assert store.partial_path(target).is_dir() and store.lock_path(target).exists()
    finally:
        live.close()


# -- under dvc repro -------------------------------------------------------------------------------------


def test_in_a_dvc_repository_partial_work_lives_outside_the_outputs_dvc_deletes(tmp_path, reference, monkeypatch):
    (tmp_path / ".dvc").mkdir()
    out = tmp_path / "features" / "tiny" / "digits"
    target = out / "test.h5"
    assert store.partial_path(target) == tmp_path / ".cnnbench" / "partial" / "features" / "tiny" / "digits" / \
        "test.h5.partial"
    assert store.lock_path(target).parent == store.partial_path(target).parent
    _killed_at(target, 440, monkeypatch)
    shutil.rmtree(out)  # what `dvc repro` does to a stage's outputs before it runs the stage again
    res = extract_split(tiny_backbone(), _digits(), "test", target, BY_40, progress=False)
    assert res.resumed_from == 440 and target.read_bytes() == reference.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["test.h5"]  # nothing of ours inside the output
    assert not store.partial_path(target).exists()
    for ignore in (".gitignore", ".dvcignore"):
        assert "/.cnnbench/" in (ROOT / ignore).read_text().split()


# -- stopped from outside: SIGTERM, a parent that dies ----------------------------------------------------


SLOW_PLUGIN = """
    import os, sys, time
    sys.path.insert(0, {tests!r})
    from conftest import tiny_backbone
    from cnnbench import hookimpl

    def slow():
        bb = tiny_backbone()
        delay = float(os.environ.get("SLOW_TINY_S", "0"))
        bb.model.register_forward_pre_hook(lambda module, x: time.sleep(delay))
        return bb

    @hookimpl
    def register_backbones(register):
        register("slow-tiny", slow)
"""


@pytest.fixture(scope="module")
def slow_site(tmp_path_factory):
    """`python -m cnnbench` with a backbone that takes 0.1 s a batch (``SLOW_TINY_S``): a run to stop."""
    site = tmp_path_factory.mktemp("site")
    (site / "slow_tiny.py").write_text(textwrap.dedent(SLOW_PLUGIN.format(tests=str(ROOT / "tests"))))
    info = site / "slow_tiny-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: slow-tiny\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[cnnbench]\nslow_tiny = slow_tiny\n")
    return site


def _extract_cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "cnnbench", "extract", "-b", "slow-tiny", "-d", "digits", "--split", "test",
            "--out", str(out), "--no-progress", "--runtime", "eager", "--batch-size", "8"]


def _env(site: Path, delay: float) -> dict:
    path = os.pathsep.join([str(site), str(ROOT / "tests"), ENV["PYTHONPATH"]])  # Ray's workers unpickle from them
    return dict(os.environ, PYTHONPATH=path, SLOW_TINY_S=str(delay))


@pytest.fixture(scope="module")
def slow_reference(slow_site, tmp_path_factory):
    out = tmp_path_factory.mktemp("slow-ref")
    subprocess.run(_extract_cmd(out), env=_env(slow_site, 0), check=True, capture_output=True)
    return out / "test.h5"


def _wait_for_rows(target: Path, proc, n: int = 24) -> None:
    """Until the run has written ``n`` ids (bounded: a run that never gets there fails the test)."""
    ids = store.partial_path(target) / "ids.bin"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if ids.exists() and ids.read_bytes().count(b"\n") >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run did not write {n} rows ({proc.poll()=})")


def _alive(pid: int) -> bool:
    """Running (a zombie nobody has reaped yet is not: it has exited)."""
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except ProcessLookupError:
        return False
    except OSError:  # no /proc: the signal found it
        return True


def _gone(pid: int, within_s: float = 30) -> bool:
    deadline = time.monotonic() + within_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def _resumed(out: Path, site: Path, reference: Path) -> str:
    """Rerun the same command: it must resume, and end with the bytes of an uninterrupted run."""
    proc = subprocess.run(_extract_cmd(out), env=_env(site, 0), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "resuming" in proc.stderr and (out / "test.h5").read_bytes() == reference.read_bytes()
    return proc.stderr


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_sigterm_takes_the_interrupted_path_and_the_rerun_resumes(tmp_path, slow_site, slow_reference, engine):
    """Also under the ray engine, whose ``ray.init`` installs a SIGTERM handler of its own."""
    if engine == "ray":
        pytest.importorskip("ray")
    out = tmp_path / "f"
    proc = subprocess.Popen(_extract_cmd(out) + ["--engine", engine, "--num-workers", "1"], env=_env(slow_site, 0.1),
                            stderr=subprocess.PIPE, text=True)
    _wait_for_rows(out / "test.h5", proc)
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err and "interrupted" in err, err
    assert not store.lock_path(out / "test.h5").exists()
    _resumed(out, slow_site, slow_reference)


PARENT = """
import subprocess, sys, time
child = subprocess.Popen(sys.argv[1:], stdout=open(sys.argv[0] + ".out", "w"), stderr=subprocess.STDOUT)
print(child.pid, flush=True)
time.sleep(600)
"""


def test_an_extraction_stops_when_its_parent_is_killed_and_keeps_its_work(tmp_path, slow_site, slow_reference):
    out = tmp_path / "f"
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script), *_extract_cmd(out)], env=_env(slow_site, 0.1),
                              stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        _wait_for_rows(out / "test.h5", parent)
        parent.kill()
        parent.wait()
        assert _gone(child), "the extraction runs on as an orphan"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
    log = Path(str(script) + ".out").read_text()
    assert "is gone: stopping" in log and "Traceback" not in log, log
    assert store.partial_path(out / "test.h5").is_dir() and not (out / "test.h5").exists()
    _resumed(out, slow_site, slow_reference)


def _dvc(*args: str, cwd: Path, env: dict, **kw):
    return subprocess.Popen([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def test_dvc_repro_killed_with_sigkill_stops_its_extraction_and_the_next_repro_resumes_it(
        tmp_path, slow_site, slow_reference):
    pytest.importorskip("dvc")
    repo = tmp_path / "repo"
    repo.mkdir()
    stage = {"stages": {"extract": {"cmd": " ".join(_extract_cmd(Path("features/slow-tiny/digits"))),
                                    "outs": ["features/slow-tiny/digits"]}}}
    (repo / "dvc.yaml").write_text(json.dumps(stage))
    env = dict(_env(slow_site, 0.1), DVC_NO_ANALYTICS="1", SHELL="/bin/sh")
    assert _dvc("init", "--no-scm", "-q", cwd=repo, env=env).wait() == 0
    target = repo / "features" / "slow-tiny" / "digits" / "test.h5"
    run = _dvc("repro", cwd=repo, env=env, start_new_session=True)
    _wait_for_rows(target, run)
    holder = store.lock_path(target).read_text().split()[1]  # "pid N on host": the cnnbench under dvc
    run.kill()
    run.wait()
    assert _gone(int(holder)), "the extraction runs on as an orphan"
    again = _dvc("repro", cwd=repo, env=dict(env, SLOW_TINY_S="0"))
    log, _ = again.communicate(timeout=300)
    assert again.returncode == 0, log
    assert "resuming" in log and target.read_bytes() == slow_reference.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["test.h5"]
