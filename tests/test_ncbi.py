"""Downloading PubMed from a local HTTP server laid out like NCBI's `pubmed/baseline/` and `pubmed/updatefiles/`
folders: an index page, `.xml.gz` files and `.xml.gz.md5` files beside them."""

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow.parquet as pq
import pytest
from conftest import shared_path

from clinical_modernbert.configs import PreparePubmedArguments
from clinical_modernbert.corpora.pubmed import prepare_pubmed


class NcbiServer:
    """`files` maps a folder (`pubmed/baseline`) to {name: bytes}; each folder gets an Apache-style index page and
    a `<name>.md5` per file. Names in `missing` are listed (with their .md5) but answer 404; names in `corrupt` answer
    damaged bytes `corrupt[name]` times. Binds 127.0.0.1 on a free port; `requests` logs the paths asked for."""

    def __init__(self, files: dict[str, dict[str, bytes]], missing=(), corrupt=None):
        self.files, self.missing, self.corrupt, self.requests = files, set(missing), dict(corrupt or {}), []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(self.path)
                folder, _, name = self.path.strip("/").rpartition("/")
                body = server.answer(folder, name) if folder in server.files else server.index(self.path.strip("/"))
                self.send_response(404 if body is None else 200)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, folder: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/{folder}/"

    def index(self, folder: str) -> bytes | None:
        if folder not in self.files:
            return None
        names = sorted([*self.files[folder], *self.missing])
        links = "".join(f'<a href="{n}">{n}</a>  2025-12-10 14:26  20M\n<a href="{n}.md5">{n}.md5</a>  2025-12-10 14:26'
                        "  60\n" for n in names)
        return (f"<html><head><title>Index of /{folder}</title></head><body><h1>Index of /{folder}</h1><pre>"
                f'<a href="/pubmed/">Parent Directory</a>\n<a href="README.txt">README.txt</a>\n{links}</pre>'
                "</body></html>").encode()

    def answer(self, folder: str, name: str) -> bytes | None:
        if name.endswith(".md5"):
            data = self.files[folder].get(name[:-4], b"missing file's bytes")
            return f"MD5({name[:-4]})= {hashlib.md5(data).hexdigest()}\n".encode()
        if name in self.missing or name not in self.files[folder]:
            return None
        data = self.files[folder][name]
        if self.corrupt.get(name, 0) > 0:
            self.corrupt[name] -= 1
            return data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
        return data

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()


def ncbi_files():
    return {f"pubmed/{folder}": {p.name: p.read_bytes() for p in shared_path(f"data/pubmed_xml/{folder}").glob("*.gz")}
            for folder in ("baseline", "updatefiles")}


def prepare(output_dir, source, updates=None, **kw):
    return prepare_pubmed(PreparePubmedArguments(source=source, updates=updates, output_dir=str(output_dir), **kw))


def test_downloads_are_checked_retried_and_not_repeated(tmp_path):
    files = ncbi_files()
    with NcbiServer(files, corrupt={"pubmed26n1334.xml.gz": 1}) as ncbi:
        prepare(tmp_path / "remote", ncbi.url("pubmed/baseline"), ncbi.url("pubmed/updatefiles"), num_proc=2)
        fetched = [p for p in ncbi.requests if p.endswith("pubmed26n1334.xml.gz")]
        ncbi.requests.clear()
        prepare(tmp_path / "remote", ncbi.url("pubmed/baseline"), ncbi.url("pubmed/updatefiles"))
        again = [p for p in ncbi.requests if p.endswith(".xml.gz")]
    assert len(fetched) == 2  # the corrupt download, then a good one
    assert again == []  # the rerun reads only the index pages and the .md5 files
    assert not list((tmp_path / "remote" / "parsed").glob("*.xml.gz*"))  # downloads are removed once parsed
    prepare(tmp_path / "local", str(shared_path("data/pubmed_xml/baseline")),
            str(shared_path("data/pubmed_xml/updatefiles")))
    remote, local = (pq.read_table(tmp_path / name / "data").to_pylist() for name in ("remote", "local"))
    assert remote == local and len(remote) > 100


def test_a_missing_file_fails_naming_its_url(tmp_path):
    with NcbiServer(ncbi_files(), missing=["pubmed26n1399.xml.gz"]) as ncbi:
        url = ncbi.url("pubmed/baseline") + "pubmed26n1399.xml.gz"
        with pytest.raises(FileNotFoundError, match=f"Could not download {url}: HTTP 404"):
            prepare(tmp_path / "out", ncbi.url("pubmed/baseline"))


def test_a_download_corrupt_at_every_attempt_fails_naming_its_url(tmp_path):
    with NcbiServer(ncbi_files(), corrupt={"pubmed25n1274.xml.gz": 5}) as ncbi:
        url = ncbi.url("pubmed/baseline") + "pubmed25n1274.xml.gz"
        with pytest.raises(OSError, match=f"Could not download {url} after 2 attempts: MD5 .* is not NCBI's"):
            prepare(tmp_path / "out", ncbi.url("pubmed/baseline"), download_retries=2)
        assert sum(p.endswith("pubmed25n1274.xml.gz") for p in ncbi.requests) == 2


def test_an_empty_folder_is_named(tmp_path):
    with NcbiServer({"pubmed/baseline": {}}) as ncbi, pytest.raises(ValueError, match="No PubMed XML files"):
        prepare(tmp_path / "out", ncbi.url("pubmed/baseline"))
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        prepare(tmp_path / "out", str(tmp_path / "nowhere"))
