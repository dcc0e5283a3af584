"""Corpus downloads against a local HTTP server, the lookup order, and the command line's offline error."""

from __future__ import annotations

import gzip
import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import cli
from harness.cell import corpus as data
from harness.cell.corpus import CorpusSource, download, resolve_corpus
from harness.errors import DownloadError, HarnessError

BODY = b"The Time Machine\nby H. G. Wells\n" * 200


class Handler(BaseHTTPRequestHandler):
    """Serves a few fixed behaviours by path; counts the requests each path receives."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        server = self.server
        with server.lock:
            server.hits[self.path] = server.hits.get(self.path, 0) + 1
            hits = server.hits[self.path]
        if self.path == "/book.txt":
            self._send(200, BODY)
        elif self.path == "/slow.txt":
            # No answer until the test is over, so the client's timeout is exceeded however busy the machine.
            server.release.wait()
        elif self.path == "/truncated.txt":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY) + 1000))
            self.end_headers()
            self.wfile.write(BODY)  # then the connection closes, 1000 bytes short
        elif self.path == "/gzip.txt":
            packed = gzip.compress(BODY)
            self._send(200, packed, {"Content-Encoding": "gzip"})
        elif self.path == "/flaky.txt":
            if hits == 1:
                self._send(503, b"busy")
            else:
                self._send(200, BODY)
        else:
            self._send(404, b"not found")

    def _send(self, status, body, headers=None):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the test output quiet
        pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that gave up (timeout test) leaves a broken pipe behind: not a test failure


@pytest.fixture
def server():
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    httpd.hits = {}
    httpd.lock = threading.Lock()
    httpd.release = threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    host, port = httpd.server_address
    yield SimpleNamespace(url=f"http://{host}:{port}", hits=httpd.hits)
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def sleeps(monkeypatch):
    """Record the backoff pauses of harness.cell.corpus instead of waiting them out."""
    recorded = []
    monkeypatch.setattr(data, "time", SimpleNamespace(sleep=recorded.append))
    return recorded


def _leftovers(folder: Path, keep: str | None = None) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != keep)


# --- download() -----------------------------------------------------------------------------------------


def test_download_success_writes_the_whole_file(server, tmp_path):
    dest = tmp_path / "nested" / "folder" / "book.txt"
    result = download(f"{server.url}/book.txt", dest, sha1=hashlib.sha1(BODY).hexdigest(), retries=1)
    assert result == dest
    assert dest.read_bytes() == BODY
    assert _leftovers(dest.parent, keep="book.txt") == []


def test_download_of_a_missing_file_fails_at_once_without_leftovers(server, tmp_path, sleeps):
    dest = tmp_path / "book.txt"
    with pytest.raises(DownloadError) as info:
        download(f"{server.url}/missing.txt", dest, retries=3, backoff=0, hint="set HARNESS_DATA_DIR")
    message = str(info.value)
    assert "HTTP 404" in message and "HARNESS_DATA_DIR" in message
    assert "\n" not in message
    assert server.hits["/missing.txt"] == 1  # a 4xx is not worth another attempt
    assert _leftovers(tmp_path) == []


def test_download_timeout_is_retried_then_reported(server, tmp_path, sleeps):
    dest = tmp_path / "book.txt"
    with pytest.raises(DownloadError) as info:
        download(f"{server.url}/slow.txt", dest, timeout=0.2, retries=2, backoff=0)
    assert "after 2 attempts" in str(info.value) and "Timeout" in str(info.value)
    assert server.hits["/slow.txt"] == 2
    assert sleeps == [0]
    assert _leftovers(tmp_path) == []


def test_download_of_a_truncated_body_is_retried_then_reported(server, tmp_path, sleeps):
    dest = tmp_path / "book.txt"
    with pytest.raises(DownloadError) as info:
        download(f"{server.url}/truncated.txt", dest, retries=2, backoff=0)
    assert "after 2 attempts" in str(info.value)
    assert server.hits["/truncated.txt"] == 2
    assert _leftovers(tmp_path) == []


def test_download_checksum_mismatch_is_an_error_without_leftovers(server, tmp_path, sleeps):
    dest = tmp_path / "book.txt"
    with pytest.raises(DownloadError) as info:
        download(f"{server.url}/book.txt", dest, sha1="0" * 40, retries=3, backoff=0)
    assert "checksum mismatch" in str(info.value)
    assert hashlib.sha1(BODY).hexdigest() in str(info.value)
    assert server.hits["/book.txt"] == 1
    assert _leftovers(tmp_path) == []


def test_download_retries_a_server_error_with_growing_backoff(server, tmp_path, sleeps):
    dest = tmp_path / "book.txt"
    download(f"{server.url}/flaky.txt", dest, retries=3, backoff=0.5)
    assert dest.read_bytes() == BODY
    assert server.hits["/flaky.txt"] == 2
    assert sleeps == [0.5]
    assert _leftovers(tmp_path, keep="book.txt") == []


def test_download_of_a_compressed_response_keeps_the_decoded_text(server, tmp_path, sleeps):
    # Content-Length counts the compressed bytes on the wire, not the decoded text.
    dest = tmp_path / "book.txt"
    download(f"{server.url}/gzip.txt", dest, sha1=hashlib.sha1(BODY).hexdigest(), retries=1)
    assert dest.read_bytes() == BODY


def test_download_from_a_closed_port_reports_the_connection_error(tmp_path, sleeps):
    url = f"http://127.0.0.1:{_closed_port()}/book.txt"
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path / "book.txt", retries=3, backoff=1.0)
    assert "after 3 attempts" in str(info.value) and "ConnectionError" in str(info.value)
    assert sleeps == [1.0, 2.0]
    assert _leftovers(tmp_path) == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- resolve_corpus() -----------------------------------------------------------------------------------


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """An empty data folder and an empty cache folder, with no corpus location inherited from outside."""
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.delenv(data.CACHE_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "data").mkdir()
    (tmp_path / "cache").mkdir()
    return SimpleNamespace(data=tmp_path / "data", cache=tmp_path / "cache")


def _serve_gutenberg_from(monkeypatch, url: str, sha1: str | None = None) -> None:
    monkeypatch.setitem(data.CORPORA, "gutenberg-35", CorpusSource("gutenberg-35", "pg35.txt", url, sha1))


def test_resolve_prefers_the_data_folder_then_the_cache(server, folders, monkeypatch):
    _serve_gutenberg_from(monkeypatch, f"{server.url}/book.txt")
    (folders.data / "pg35.txt").write_text("from the data folder")
    (folders.cache / "pg35.txt").write_text("from the cache")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(folders.data))
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(folders.cache))
    assert resolve_corpus("gutenberg-35") == folders.data / "pg35.txt"
    (folders.data / "pg35.txt").unlink()  # a data folder without the file falls through to the cache
    assert resolve_corpus("gutenberg-35") == folders.cache / "pg35.txt"
    monkeypatch.delenv(data.DATA_DIR_ENV)
    assert resolve_corpus("gutenberg-35") == folders.cache / "pg35.txt"
    assert server.hits == {}


def test_resolve_uses_the_cache_dir_argument_before_the_environment(server, folders, tmp_path, monkeypatch):
    _serve_gutenberg_from(monkeypatch, f"{server.url}/book.txt")
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(folders.cache))
    (folders.cache / "pg35.txt").write_text("from the environment's cache")
    other = tmp_path / "other-cache"
    other.mkdir()
    (other / "pg35.txt").write_text("from the argument's cache")
    assert resolve_corpus("gutenberg-35", cache_dir=other) == other / "pg35.txt"
    assert server.hits == {}


def test_resolve_downloads_into_the_cache_once(server, folders, monkeypatch):
    _serve_gutenberg_from(monkeypatch, f"{server.url}/book.txt")
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(folders.cache))
    path = resolve_corpus("gutenberg-35")
    assert path == folders.cache / "pg35.txt"
    assert path.read_bytes() == BODY
    assert resolve_corpus("gutenberg-35") == path
    assert server.hits == {"/book.txt": 1}


def test_resolve_default_cache_is_under_the_user_cache_folder(server, folders, tmp_path, monkeypatch):
    _serve_gutenberg_from(monkeypatch, f"{server.url}/book.txt")
    path = resolve_corpus("gutenberg-35")
    assert path == tmp_path / "xdg" / "rnn-harness" / "pg35.txt"
    assert path.read_bytes() == BODY


def test_resolve_replaces_a_cached_file_whose_checksum_is_wrong(server, folders, monkeypatch):
    _serve_gutenberg_from(monkeypatch, f"{server.url}/book.txt", sha1=hashlib.sha1(BODY).hexdigest())
    (folders.cache / "pg35.txt").write_text("damaged")
    path = resolve_corpus("gutenberg-35", cache_dir=folders.cache)
    assert path.read_bytes() == BODY
    assert server.hits == {"/book.txt": 1}


def test_resolve_rejects_a_data_folder_file_whose_checksum_is_wrong(folders, monkeypatch):
    (folders.data / "timemachine.txt").write_text("not the d2l file")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(folders.data))
    with pytest.raises(HarnessError, match="SHA-1"):
        resolve_corpus("d2l", cache_dir=folders.cache)


def test_resolve_failed_download_explains_how_to_run_offline(server, folders, monkeypatch):
    _serve_gutenberg_from(monkeypatch, f"{server.url}/missing.txt")
    with pytest.raises(DownloadError) as info:
        resolve_corpus("gutenberg-35", cache_dir=folders.cache)
    assert "HTTP 404" in str(info.value) and "HARNESS_DATA_DIR" in str(info.value)
    assert _leftovers(folders.cache) == []


def test_resolve_accepts_a_file_path_and_rejects_an_unknown_name(tmp_path, folders):
    book = tmp_path / "my book.txt"
    book.write_text("hello")
    assert resolve_corpus(str(book)) == book
    with pytest.raises(HarnessError, match="neither a known corpus"):
        resolve_corpus("gutenberg-36")
    with pytest.raises(HarnessError):
        resolve_corpus(str(tmp_path))  # a folder is not a corpus


# --- the command line -----------------------------------------------------------------------------------


def test_cell_command_without_data_or_network_exits_2_with_one_line(folders, monkeypatch, capsys, sleeps):
    _serve_gutenberg_from(monkeypatch, f"http://127.0.0.1:{_closed_port()}/pg35.txt")
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(folders.cache))
    code = cli.main(["cell", "--corpus", "gutenberg-35", "--epochs", "1", "--hidden", "8", "--json"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: download failed") and "HARNESS_DATA_DIR" in lines[0]
    assert "Traceback" not in captured.err
    assert _leftovers(folders.cache) == []


# --- the corpora shipped with the package -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["gutenberg-35", "d2l"])
def test_named_corpora_come_from_the_package_without_data_folder_cache_or_network(name, folders, sleeps):
    source = data.CORPORA[name]
    path = resolve_corpus(name, cache_dir=folders.cache)
    assert path == data.EMBEDDED_DIR / source.filename
    assert hashlib.sha256(path.read_bytes()).hexdigest() == source.sha256
    assert _leftovers(folders.cache) == [] and sleeps == []


def test_the_data_folder_overrides_the_shipped_copy(folders, monkeypatch):
    (folders.data / "pg35.txt").write_text("a newer Gutenberg release")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(folders.data))
    assert resolve_corpus("gutenberg-35", cache_dir=folders.cache) == folders.data / "pg35.txt"


def test_a_damaged_shipped_copy_is_refused_with_its_path(folders, tmp_path, monkeypatch):
    shipped = tmp_path / "corpora"
    shipped.mkdir()
    (shipped / "pg35.txt").write_bytes((data.EMBEDDED_DIR / "pg35.txt").read_bytes()[:-1])
    monkeypatch.setattr(data, "EMBEDDED_DIR", shipped)
    with pytest.raises(HarnessError, match=r"pg35.txt: SHA-256 .* reinstall"):
        resolve_corpus("gutenberg-35", cache_dir=folders.cache)


def test_a_named_corpus_download_is_checked_against_its_sha256(server, folders, monkeypatch, sleeps):
    monkeypatch.setitem(data.CORPORA, "gutenberg-35",
                        CorpusSource("gutenberg-35", "pg35.txt", f"{server.url}/book.txt", sha256="0" * 64))
    with pytest.raises(DownloadError, match="SHA-256"):
        resolve_corpus("gutenberg-35", cache_dir=folders.cache)
    assert _leftovers(folders.cache) == []
    good = hashlib.sha256(BODY).hexdigest()
    monkeypatch.setitem(data.CORPORA, "gutenberg-35",
                        CorpusSource("gutenberg-35", "pg35.txt", f"{server.url}/book.txt", sha256=good))
    assert resolve_corpus("gutenberg-35", cache_dir=folders.cache).read_bytes() == BODY


def test_another_corpus_is_found_by_name_in_the_data_folder(folders, monkeypatch):
    (folders.data / "my-book.txt").write_text("hello")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(folders.data))
    assert resolve_corpus("my-book.txt") == folders.data / "my-book.txt"


def test_the_offline_hint_names_no_folder_beside_the_repository():
    hint = data._offline_hint(data.CORPORA["gutenberg-35"])
    assert data.DATA_DIR_ENV in hint and "shared" not in hint


def test_the_test_suite_cannot_reach_the_network():
    with pytest.raises(OSError, match="network"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1, never routed


def test_a_corpus_given_by_url_is_downloaded_once_into_the_cache(server, folders):
    url = f"{server.url}/book.txt"
    path = resolve_corpus(url, cache_dir=folders.cache)
    assert path.read_bytes() == BODY and path.parent == folders.cache / "urls" and path.name.endswith("-book.txt")
    assert resolve_corpus(url, cache_dir=folders.cache, offline=True) == path
    assert server.hits == {"/book.txt": 1}
    with pytest.raises(HarnessError, match="not in the cache"):
        resolve_corpus(f"{server.url}/other.txt", cache_dir=folders.cache, offline=True)
    with pytest.raises(DownloadError, match="HTTP 404"):
        resolve_corpus(f"{server.url}/missing.txt", cache_dir=folders.cache)
