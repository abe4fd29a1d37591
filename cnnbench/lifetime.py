"""A run that is stopped keeps its work: SIGTERM and the death of the process that started the run
take the Ctrl-C path (the extraction's partial work is kept, the exit is clean, exit code 130).

Called once at the command line's start (:func:`cnnbench.cli.run`), before any work."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

log = logging.getLogger("cnnbench.lifetime")


SHELLS = {"sh", "dash", "bash", "zsh", "ksh", "mksh", "fish", "busybox"}


def keep_work_when_stopped(poll_s: float = 0.5) -> None:
    """Make SIGTERM take the Ctrl-C path (the partial work is kept, the exit is clean), and stop the
    process that way when its parent dies: a ``dvc repro`` killed with SIGKILL must not leave its
    extraction running on as an orphan, writing outputs and holding their locks. DVC runs a stage's
    command through ``$SHELL -c``, and ``sh -c`` (dash) does not exec it: such a shell is looked
    through, to the process that started it. A thread watches the parents (``PR_SET_PDEATHSIG``
    would fire when the parent's *thread* ends, would not see through the shell, and is Linux only).
    A run started detached on purpose keeps going: under ``nohup`` (SIGHUP ignored), ``setsid`` (its
    own session), or with init as its parent."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, _stopped)
    links = _parents()
    detached = (links[-1][1] <= 1 or os.getsid(0) == os.getpid()
                or signal.getsignal(signal.SIGHUP) == signal.SIG_IGN)
    if not detached:
        threading.Thread(target=_watch_parents, args=(links, poll_s), name="cnnbench-parent", daemon=True).start()


def _parents() -> list[tuple[int, int]]:
    """(process, its parent) from this one up, through every ``shell -c`` in between."""
    links = [(os.getpid(), os.getppid())]
    while links[-1][1] > 1:
        pid = links[-1][1]
        args = _cmdline(pid)
        if len(args) < 2 or os.path.basename(args[0]).lstrip("-") not in SHELLS or "-c" not in args[1:]:
            break
        links.append((pid, _parent_of(pid)))
    return links


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:  # no /proc (macOS) or gone: the direct parent is all we watch
        return []


def _parent_of(pid: int) -> int:
    """The parent of ``pid`` (this process: ``getppid``); 0 once it is gone or cannot be read."""
    if pid == os.getpid():
        return os.getppid()
    try:  # the command name in (...) may hold spaces and parentheses: the fields follow the last ')'
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _stopped(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise KeyboardInterrupt


def _watch_parents(links: list[tuple[int, int]], poll_s: float) -> None:
    while all(_parent_of(pid) == parent for pid, parent in links):
        time.sleep(poll_s)
    log.warning("the process that started this run (pid %d) is gone: stopping, the partial work is kept",
                links[-1][1])
    os.kill(os.getpid(), signal.SIGTERM)
