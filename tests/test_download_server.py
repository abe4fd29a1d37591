"""The download client against a real HTTP server on 127.0.0.1, started here, serving archives written
here, and told to misbehave the ways academic servers do: answer 404, drop the connection half way,
announce more bytes than it sends, serve the wrong bytes, stall, redirect, ignore ``Range``, change
the file between two tries. Timeouts are fractions of a second and files a few hundred KiB."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections import namedtuple
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cnnbench import download
from cnnbench.dataset import Dataset
from cnnbench.download import Download, DownloadError, download_dataset, fetch

from conftest import write_tar

BODY = os.urandom(300 << 10)  # 300 KiB: a "cut" or "short" response sends the first half of what it owes
SHA = hashlib.sha256(BODY).hexdigest()


@dataclass
class Served:
    """What the server does for one path."""

    body: bytes = BODY
    etag: str | None = '"v1"'  # None: no validator, so nothing can be resumed safely
    ranges: bool = True  # False: ignores Range and sends the whole file (200) every time
    status: int = 200  # 404, 503 …: that status and nothing else
    cut: int = 0  # the next `cut` responses stop half way and close the connection
    short: bool = False  # every response announces its full length and sends half of it
    delay: float = 0.0  # seconds before answering: a stalled server
    location: str | None = None  # answer 302 with this Location


@dataclass
class Server:
    port: int
    routes: dict[str, Served] = field(default_factory=dict)
    requests: list[tuple[str, dict]] = field(default_factory=list)  # (path, headers), in order

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"

    def headers_of(self, path: str) -> list[dict]:
        return [h for p, h in self.requests if p == path]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        state: Server = self.server.state
        state.requests.append((self.path, dict(self.headers)))
        r = state.routes.get(self.path)
        try:
            if r is None:
                return self._empty(404)
            if r.delay:
                time.sleep(r.delay)
            if r.location:
                return self._empty(302, Location=r.location)
            if r.status != 200:
                return self._empty(r.status)
            start, status = 0, 200
            want, if_range = self.headers.get("Range"), self.headers.get("If-Range")
            if r.ranges and want and (if_range is None or if_range == r.etag):
                start, status = int(want.removeprefix("bytes=").split("-")[0]), 206
                if start >= len(r.body):  # as Apache answers a range past the end
                    return self._empty(416, **{"Content-Range": f"bytes */{len(r.body)}"})
            body = r.body[start:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(r.body) - 1}/{len(r.body)}")
            if r.etag:
                self.send_header("ETag", r.etag)
            if r.ranges:
                self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if r.cut or r.short:
                r.cut = max(0, r.cut - 1)
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
                return
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout): fine
            self.close_connection = True

    def _empty(self, status: int, **headers):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def serve():
    """``serve()`` starts one more server on a free loopback port; all are stopped after the test."""
    started = []

    def start() -> Server:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.state = Server(httpd.server_address[1])
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append(httpd)
        return httpd.state

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _fetch(url, dest, sha=SHA, **kw):
    kw.setdefault("timeout", 2.0)
    return fetch(url, dest, sha, progress=False, **kw)


# -- mirrors -----------------------------------------------------------------------------------------


def test_a_404_moves_on_to_the_next_mirror_in_one_line(tmp_path, serve):
    down, up = serve(), serve()
    down.routes["/a.bin"] = Served(status=404)
    up.routes["/a.bin"] = Served()
    said = []
    out = _fetch(down.url("/a.bin"), tmp_path / "a.bin", mirrors=(up.url("/a.bin"),), warn=said.append)
    assert out.read_bytes() == BODY
    assert said == [f"a.bin: HTTP 404 Not Found; trying the next mirror, {up.host}"]
    assert _leftovers(tmp_path) == ["a.bin"]


def test_when_every_mirror_fails_one_line_names_each_address_and_its_failure(tmp_path, serve):
    a, b = serve(), serve()
    a.routes["/a.bin"] = Served(status=404)
    b.routes["/a.bin"] = Served(status=503)
    with pytest.raises(DownloadError) as err:
        _fetch(a.url("/a.bin"), tmp_path / "a.bin", mirrors=(b.url("/a.bin"),), warn=lambda m: None)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("could not download a.bin: ")
    assert f"{a.url('/a.bin')}: HTTP 404" in msg and f"{b.url('/a.bin')}: HTTP 503" in msg
    assert _leftovers(tmp_path) == []


def test_a_stalled_server_times_out_naming_its_host_and_the_next_mirror(tmp_path, serve):
    slow, fast = serve(), serve()
    slow.routes["/a.bin"] = Served(delay=1.5)
    fast.routes["/a.bin"] = Served()
    said = []
    started = time.monotonic()
    out = _fetch(slow.url("/a.bin"), tmp_path / "a.bin", mirrors=(fast.url("/a.bin"),), timeout=0.3,
                 warn=said.append)
    assert out.read_bytes() == BODY and time.monotonic() - started < 1.4, "the stall was not waited out"
    assert said == [f"a.bin: timed out after 0.3 s waiting for {slow.host}; trying the next mirror, {fast.host}"]
    with pytest.raises(DownloadError, match=rf"could not download b\.bin: .*timed out after 0\.3 s waiting for "
                                            rf"{slow.host}") as err:
        _fetch(slow.url("/a.bin"), tmp_path / "b.bin", timeout=0.3)
    assert "\n" not in str(err.value)


def test_a_redirect_is_followed_to_http_but_never_to_file_or_ftp(tmp_path, serve):
    srv = serve()
    srv.routes["/a.bin"] = Served()
    srv.routes["/moved"] = Served(location="/a.bin")
    srv.routes["/to-file"] = Served(location="file:///etc/passwd")
    srv.routes["/to-ftp"] = Served(location="ftp://127.0.0.1/a.bin")
    assert _fetch(srv.url("/moved"), tmp_path / "a.bin").read_bytes() == BODY
    assert [p for p, _ in srv.requests] == ["/moved", "/a.bin"]
    for path, why in (("/to-file", "redirect refused"), ("/to-ftp", "redirected to ftp://127.0.0.1/a.bin, which is "
                                                                   "not an http(s) address: refused")):
        with pytest.raises(DownloadError) as err:
            _fetch(srv.url(path), tmp_path / "x.bin", sha=None)
        assert f"{srv.url(path)}: {why}" in str(err.value) and "\n" not in str(err.value)
    assert _leftovers(tmp_path) == ["a.bin"]


# -- interrupted, short and changed files --------------------------------------------------------------


def test_a_connection_cut_half_way_resumes_with_range_to_identical_bytes(tmp_path, serve):
    srv = serve()
    srv.routes["/a.bin"] = Served(cut=1)
    said = []
    out = _fetch(srv.url("/a.bin"), tmp_path / "a.bin", warn=said.append)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == SHA
    first, second = srv.headers_of("/a.bin")
    assert "Range" not in first
    half = len(BODY) // 2
    assert second["Range"] == f"bytes={half}-" and second["If-Range"] == '"v1"'
    assert said == [f"a.bin: the connection to {srv.host} closed after {half:,} of {len(BODY):,} bytes; resuming "
                    f"from byte {half:,} (try 2 of 4)"]
    assert _leftovers(tmp_path) == ["a.bin"]


def test_an_interrupted_download_is_kept_as_a_part_and_resumes_on_the_next_run(tmp_path, serve):
    srv = serve()
    srv.routes["/a.bin"] = Served(cut=1)
    with pytest.raises(DownloadError, match=r"closed after .*the partial download is kept: it resumes"):
        _fetch(srv.url("/a.bin"), tmp_path / "a.bin", resumes=0)
    assert _leftovers(tmp_path) == ["a.bin.part", "a.bin.part.json"], "nothing under the real name"
    assert _fetch(srv.url("/a.bin"), tmp_path / "a.bin").read_bytes() == BODY
    assert srv.headers_of("/a.bin")[1]["Range"] == f"bytes={len(BODY) // 2}-"
    assert _leftovers(tmp_path) == ["a.bin"]


def test_a_file_changed_on_the_server_since_the_interruption_starts_over(tmp_path, serve):
    srv = serve()
    srv.routes["/a.bin"] = Served(cut=1)
    with pytest.raises(DownloadError):
        _fetch(srv.url("/a.bin"), tmp_path / "a.bin", resumes=0)
    new = os.urandom(len(BODY))
    srv.routes["/a.bin"] = Served(body=new, etag='"v2"')  # If-Range "v1" no longer matches: a 200, whole
    said = []
    out = _fetch(srv.url("/a.bin"), tmp_path / "a.bin", sha=hashlib.sha256(new).hexdigest(), warn=said.append)
    assert out.read_bytes() == new, "no mix of the old file's first half and the new one's second"
    assert srv.headers_of("/a.bin")[1]["If-Range"] == '"v1"'
    assert len(said) == 1 and "sent the whole file again" in said[0] and "starting over" in said[0]


def test_a_part_already_whole_that_the_server_refuses_to_resume_starts_over(tmp_path, serve):
    srv = serve()
    srv.routes["/a.bin"] = Served()
    (tmp_path / "a.bin.part").write_bytes(BODY)  # the last run ended between the last byte and the rename
    (tmp_path / "a.bin.part.json").write_text(json.dumps({"url": srv.url("/a.bin"), "etag": '"v1"'}))
    said = []
    assert _fetch(srv.url("/a.bin"), tmp_path / "a.bin", warn=said.append).read_bytes() == BODY
    assert srv.headers_of("/a.bin")[0]["Range"] == f"bytes={len(BODY)}-"
    assert said == [f"a.bin: {srv.host} refuses to resume at byte {len(BODY):,} (HTTP 416); starting over"]
    assert _leftovers(tmp_path) == ["a.bin"]


def test_a_server_that_ignores_range_makes_the_download_start_over(tmp_path, serve):
    srv = serve()
    srv.routes["/a.bin"] = Served(cut=1, ranges=False)
    said = []
    out = _fetch(srv.url("/a.bin"), tmp_path / "a.bin", warn=said.append)
    assert out.read_bytes() == BODY
    assert srv.headers_of("/a.bin")[1]["Range"] == f"bytes={len(BODY) // 2}-", "it asked for the rest …"
    assert any("sent the whole file again" in m for m in said), "… got all of it, and started over"


def test_a_short_body_is_never_taken_for_the_whole_file(tmp_path, serve):
    srv = serve()
    srv.routes["/a.bin"] = Served(short=True, etag=None, ranges=False)  # always half, nothing to resume with
    with pytest.raises(DownloadError) as err:
        _fetch(srv.url("/a.bin"), tmp_path / "a.bin", sha=None, resumes=1, warn=lambda m: None)
    msg = str(err.value)
    assert srv.url("/a.bin") in msg and f"closed after {len(BODY) // 2:,} of {len(BODY):,} bytes (2 tries)" in msg
    assert len(srv.headers_of("/a.bin")) == 2 and "Range" not in srv.headers_of("/a.bin")[1], "started over"
    assert _leftovers(tmp_path) == [], "no half file under any name"


# -- the wrong file --------------------------------------------------------------------------------------


def test_wrong_bytes_fail_the_checksum_leave_nothing_and_name_the_address(tmp_path, serve):
    bad, good = serve(), serve()
    bad.routes["/a.bin"] = Served(body=b"x" * len(BODY))
    good.routes["/a.bin"] = Served()
    with pytest.raises(DownloadError) as err:
        _fetch(bad.url("/a.bin"), tmp_path / "a.bin")
    msg = str(err.value)
    assert f"{bad.url('/a.bin')}: checksum mismatch: expected SHA-256 {SHA}" in msg and "\n" not in msg
    assert _leftovers(tmp_path) == [], "nothing that looks whole, no .part either"
    said = []
    assert _fetch(bad.url("/a.bin"), tmp_path / "a.bin", mirrors=(good.url("/a.bin"),),
                  warn=said.append).read_bytes() == BODY
    assert said[0].startswith("a.bin: checksum mismatch") and said[0].endswith(f"trying the next mirror, {good.host}")


def test_a_file_of_another_size_than_published_is_refused_before_its_bytes_are_read(tmp_path, serve):
    srv = serve()
    srv.routes["/a.bin"] = Served()
    with pytest.raises(DownloadError, match=rf"offers {len(BODY):,} bytes, not the 1,000 published"):
        _fetch(srv.url("/a.bin"), tmp_path / "a.bin", size=1000)
    assert _leftovers(tmp_path) == []


# -- the local disk ----------------------------------------------------------------------------------------


def test_not_enough_free_space_is_refused_before_a_byte_is_fetched(tmp_path, serve, monkeypatch):
    srv = serve()
    srv.routes["/a.bin"] = Served()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 30, (1 << 30) - 1000, 1000))
    with pytest.raises(DownloadError) as err:
        _fetch(srv.url("/a.bin"), tmp_path / "a.bin", size=len(BODY))
    assert str(err.value) == (f"not enough free space for a.bin: it needs 300.0 KiB more and {tmp_path} has "
                              "1000 B free; free some space or choose another --data-root, and run again")
    assert srv.requests == [], "the size was published: refused before asking the server"
    with pytest.raises(DownloadError, match="not enough free space for a.bin"):
        _fetch(srv.url("/a.bin"), tmp_path / "a.bin")  # no published size: the Content-Length decides
    assert _leftovers(tmp_path) == []


# -- a whole data set -----------------------------------------------------------------------------------


def test_a_data_set_comes_from_its_mirror_verified_before_it_is_unpacked(tmp_path, serve):
    archive = write_tar(tmp_path / "set.tgz", [("jpg/a.jpg", b"A"), ("jpg/b.jpg", b"B")]).read_bytes()
    down, up = serve(), serve()
    down.routes["/set.tgz"] = Served(status=503)
    up.routes["/set.tgz"] = Served(body=archive, cut=1)

    class Mirrored(Dataset):
        name = "mirrored-set"
        folder = "mirrored"
        layout = "  jpg/*.jpg"
        downloads = (Download(down.url("/set.tgz"), hashlib.sha256(archive).hexdigest(),
                              mirrors=(up.url("/set.tgz"),), size=len(archive)),)

    said = []
    root = download_dataset(Mirrored(data_root=tmp_path / "data"), progress=False, warn=said.append, timeout=2.0)
    assert (root / "jpg" / "b.jpg").read_bytes() == b"B"
    assert said[0] == f"set.tgz: HTTP 503 Service Unavailable; trying the next mirror, {up.host}"
    assert "resuming" in said[1]
    assert not (tmp_path / "data" / ".downloads").exists()

    up.routes["/set.tgz"] = Served(body=archive[:-1] + bytes([archive[-1] ^ 1]))  # one byte off: never unpacked
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_dataset(Mirrored(data_root=tmp_path / "other"), progress=False, warn=lambda m: None, timeout=2.0)
    assert not (tmp_path / "other" / "mirrored").exists()
    assert download.DEFAULT_TIMEOUT == 60.0


# -- the command line -------------------------------------------------------------------------------------


def _cli(tmp_path, *args):
    from click.testing import CliRunner

    from cnnbench.cli import main

    (tmp_path / "params.yaml").write_text("{}\n")  # not the checkout's params.yaml
    return CliRunner().invoke(main, ["--params", str(tmp_path / "params.yaml"), *args])


def test_datasets_download_all_fetches_the_missing_sets_of_the_paper_preset_and_reports_the_rest(tmp_path,
                                                                                               monkeypatch):
    (tmp_path / "data" / "ukbench" / "full").mkdir(parents=True)  # present: skipped
    asked = []

    def fake_download(ds, **kw):
        asked.append(ds.name)
        if ds.name == "holidays":
            raise DownloadError("could not download jpg1.tar.gz: ftp://…: timed out")
        if not ds.downloads:
            raise DownloadError(f"data set {ds.name!r} has no automatic download; get it from {ds.url}\nlayout")
        for path in ds.required_paths():  # as if unpacked
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch() if path.suffix else path.mkdir(exist_ok=True)
        return ds.root

    monkeypatch.setattr(download, "download_dataset", fake_download)
    result = _cli(tmp_path, "datasets", "download", "--all", "--data-root", str(tmp_path / "data"), "--no-progress")
    paper = ["voc2007", "mit67", "cub200", "flowers102", "uiuc-attributes", "h3d-attributes", "oxford5k", "paris6k",
             "sculptures6k", "holidays", "ukbench"]
    assert asked == [n for n in paper if n != "ukbench"], "every set of paper/params.yaml, in its order, once"
    assert f"ukbench: present in {tmp_path / 'data' / 'ukbench'}" in result.output
    assert "holidays: could not download jpg1.tar.gz" in result.output
    assert "sculptures6k: data set 'sculptures6k' has no automatic download" in result.output
    assert result.exit_code != 0
    assert "still missing: sculptures6k, holidays (why: above); the others are ready" in result.output


def test_datasets_download_takes_a_name_or_all_not_both(tmp_path):
    for args in ((), ("voc2007", "--all")):
        result = _cli(tmp_path, "datasets", "download", *args)
        assert result.exit_code != 0 and "give a data set NAME or --all" in result.output


def test_datasets_lists_the_host_each_set_would_use_and_how_many_files_are_pinned(tmp_path):
    result = _cli(tmp_path, "datasets", "--data-root", str(tmp_path))
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in result.output.splitlines() if line.startswith("│") and line.split("│")[1].strip()}
    assert rows["voc2007"][2:4] == ["host.robots.ox.ac.uk (+2 mirrors)", "2/2"]
    assert rows["flowers102"][2:4] == ["www.robots.ox.ac.uk", "3/3"]
    assert rows["ukbench"][2:4] == ["archive.org (+1 mirror)", "0/1"]
    assert rows["uiuc-attributes"][3] == "1/3" and rows["cub200"][3] == "1/1"
    assert rows["sculptures6k"][2] == "none: by hand (see its url)" and rows["digits"][2] == "(bundled)"


def test_datasets_files_gives_each_file_its_pin_size_and_addresses_in_order(tmp_path):
    result = _cli(tmp_path, "datasets", "files", "voc2007", "ukbench")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "7d8cd951101b0957ddfd7a530bdc8a94f06121cfc1e511bb5937e973020c7508" in out and "460,032,000" in out
    assert out.index("https://archive.org/download/ukbench/ukbench.zip") < out.index("http://vis.uky.edu/~stewe/")
    assert "not pinned" in out
