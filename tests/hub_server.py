"""A local stand-in for the Hugging Face Hub: the part of its HTTP API that `huggingface_hub` uses to create a repo,
commit files (preupload answers "regular", then the NDJSON commit), list them (`tree`, recursive or not, as
`HfFileSystem` globs them for `datasets`) and download them again (`resolve` URLs with the
`X-Repo-Commit`/`ETag`/`Content-Length` headers `hf_hub_download` reads). Binds 127.0.0.1 on a free port.

    with HubServer(token="hf_test") as hub:   # point huggingface_hub at hub.url with HF_ENDPOINT
        ...
        hub.files("org/name")                  # {path: bytes} of the latest commit on main
        hub.add_repo("ncbi/pubmed", SCRIPT_ONLY_PUBMED)   # a repository laid out like a real one
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
REPO = r"(?P<repo>[^/]+/[^/]+)"
API_REPO = r"^/api/(?P<type>models|datasets|spaces)/" + REPO


# The real `ncbi/pubmed` dataset repository: a loading script and its README, no data files.
SCRIPT_ONLY_PUBMED = {
    "pubmed.py": b'"""MEDLINE/PubMed data."""\n\nimport datasets\n\n_URLs = ["https://ftp.ncbi.nlm.nih.gov/pubmed/'
                 b'baseline/pubmed25n0001.xml.gz"]\n\n\nclass Pubmed(datasets.GeneratorBasedBuilder):\n    pass\n',
    "README.md": b"---\nlicense: other\npretty_name: PubMed\n---\n\n# Dataset Card for PubMed\n",
}


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_type: str
    private: bool
    sdk: str | None
    branches: dict[str, list[Commit]] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)


class HubServer:
    """The stand-in server; `requests` logs (method, path) of every request, `fail_commits` makes commits fail."""

    def __init__(self, token: str | None = None):
        self.token = token
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_commits = False
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def add_repo(self, repo_id: str, files: dict[str, bytes], repo_type: str = "dataset") -> Repo:
        """A public repository holding `files` in one commit on main, as if pushed earlier."""
        repo = Repo(repo_type, private=False, sdk=None)
        repo.branches["main"] = [Commit(_oid(b"".join(files.values())), "add files", dict(files))]
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def commits(self, repo_id: str, repo_type: str = "model", branch: str = "main") -> list[Commit]:
        return self.repo(repo_id, repo_type).branches[branch]

    def files(self, repo_id: str, repo_type: str = "model", branch: str = "main") -> dict[str, bytes]:
        return self.commits(repo_id, repo_type, branch)[-1].files


def _handler_for(hub: HubServer):
    routes = [
        ("POST", r"^/api/repos/create$", "create_repo"),
        ("POST", r"^/api/validate-yaml$", "validate_yaml"),
        ("POST", API_REPO + r"/preupload/(?P<rev>[^/]+)$", "preupload"),
        ("POST", API_REPO + r"/commit/(?P<rev>[^/]+)$", "commit"),
        ("POST", API_REPO + r"/branch/(?P<rev>[^/]+)$", "create_branch"),
        ("POST", r"^/api/(?P<type>spaces)/" + REPO + r"/variables$", "add_variable"),
        ("GET", API_REPO + r"(?:/revision/(?P<rev>[^/]+))?$", "repo_info"),
        ("GET", API_REPO + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?$", "tree"),
        ("GET", r"^/(?:(?P<type>datasets|spaces)/)?" + REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", "resolve"),
        ("HEAD", r"^/(?:(?P<type>datasets|spaces)/)?" + REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", "resolve"),
    ]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def do_GET(self):
            self._dispatch("GET")

        def do_HEAD(self):
            self._dispatch("HEAD")

        def do_POST(self):
            self._dispatch("POST")

        def _dispatch(self, method: str):
            path = urlsplit(self.path).path
            hub.requests.append((method, path))
            for route_method, pattern, name in routes:
                match = re.match(pattern, path)
                if route_method == method and match:
                    params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    params["type"] = REPO_TYPES.get(params.get("type", "models"), "model")
                    with hub._lock:
                        return getattr(self, name)(**params)
            self._error(404, "EntryNotFound", f"{method} {path} is not served by the stand-in Hub")

        # -- helpers ----------------------------------------------------------------------------------------------
        def _authorized(self) -> bool:
            return hub.token is None or self.headers.get("authorization") == f"Bearer {hub.token}"

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("content-length", 0)))

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, data, status: int = 200):
            self._send(status, json.dumps(data).encode())

        def _error(self, status: int, code: str | None, message: str):
            headers = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {})}
            self._send(status, json.dumps({"error": message}).encode(), headers)

        def _repo(self, repo_type: str, repo: str, write: bool = False) -> Repo | None:
            found = hub.repos.get((repo_type, repo))
            if found is None or ((write or found.private) and not self._authorized()):
                self._error(404, "RepoNotFound", f"Repository {repo} not found")
                return None
            return found

        def _commit(self, repo: Repo, rev: str) -> Commit | None:
            if rev in repo.branches:
                return repo.branches[rev][-1]
            for commits in repo.branches.values():
                for commit in commits:
                    if commit.oid == rev:
                        return commit
            self._error(404, "RevisionNotFound", f"Revision {rev} not found")
            return None

        # -- routes -----------------------------------------------------------------------------------------------
        def create_repo(self, type):
            payload = json.loads(self._body())
            if not self._authorized():
                return self._error(401, None, "Invalid credentials in Authorization header")
            repo_type = payload.get("type") or "model"
            repo_id = f"{payload['organization']}/{payload['name']}"
            url = f"{hub.url}/{URL_PREFIX[repo_type]}{repo_id}"
            if (repo_type, repo_id) in hub.repos:  # the Hub's conflict answer carries the url too
                return self._send(409, json.dumps({"error": "You already created this repo", "url": url}).encode())
            repo = Repo(repo_type, payload.get("visibility") == "private" or bool(payload.get("private")),
                        payload.get("sdk"))
            repo.branches["main"] = [Commit(_oid(b"initial commit" + repo_id.encode()), "initial commit", {})]
            hub.repos[(repo_type, repo_id)] = repo
            self._json({"url": url, "name": repo_id})

        def validate_yaml(self, type):
            self._body()
            self._json({"errors": [], "warnings": []})

        def preupload(self, type, repo, rev):
            payload = json.loads(self._body())
            if self._repo(type, repo, write=True) is None:
                return
            files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in payload["files"]]
            self._json({"files": files})

        def commit(self, type, repo, rev):
            lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
            target = self._repo(type, repo, write=True)
            if target is None:
                return
            if rev not in target.branches:
                return self._error(404, "RevisionNotFound", f"Branch {rev} not found")
            if hub.fail_commits:
                return self._error(500, None, "Commit failed (stand-in Hub told to fail)")
            header, *operations = lines
            files = dict(target.branches[rev][-1].files)
            for op in operations:
                if op["key"] != "file" or op["value"].get("encoding") != "base64":
                    return self._error(400, None, f"Unsupported commit operation {op['key']!r}")
                files[op["value"]["path"]] = base64.b64decode(op["value"]["content"])
            oid = _oid(json.dumps(header).encode() + b"".join(k.encode() + v for k, v in sorted(files.items())))
            target.branches[rev].append(Commit(oid, header["value"]["summary"], files))
            url = f"{hub.url}/{URL_PREFIX[type]}{repo}/commit/{oid}"
            self._json({"commitUrl": url, "commitOid": oid, "pullRequestUrl": None})

        def create_branch(self, type, repo, rev):
            self._body()
            target = self._repo(type, repo, write=True)
            if target is None:
                return
            if rev in target.branches:
                return self._error(409, None, f"Branch {rev} already exists")
            target.branches[rev] = [target.branches["main"][-1]]
            self._json({})

        def add_variable(self, type, repo):
            payload = json.loads(self._body())
            target = self._repo(type, repo, write=True)
            if target is None:
                return
            target.variables[payload["key"]] = payload["value"]
            self._json({k: {"value": v} for k, v in target.variables.items()})

        def repo_info(self, type, repo, rev="main"):
            target = self._repo(type, repo)
            commit = target and self._commit(target, rev)
            if commit is None:
                return
            siblings = [{"rfilename": path} for path in sorted(commit.files)]
            self._json({"id": repo, "sha": commit.oid, "private": target.private, "siblings": siblings})

        def tree(self, type, repo, rev, path=""):
            target = self._repo(type, repo)
            commit = target and self._commit(target, rev)
            if commit is None:
                return
            recursive = parse_qs(urlsplit(self.path).query).get("recursive", ["false"])[0].lower() == "true"
            prefix = path.rstrip("/") + "/" if path else ""
            files, folders = {}, set()
            for name, data in commit.files.items():
                if not name.startswith(prefix):
                    continue
                parts = name[len(prefix) :].split("/")
                for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                    folders.add(prefix + "/".join(parts[:depth]))
                if recursive or len(parts) == 1:
                    files[name] = data
            if path and not files and not folders:
                return self._error(404, "EntryNotFound", f"{path} not found")
            entries = [{"type": "directory", "path": name, "oid": _oid(name.encode())} for name in sorted(folders)]
            entries += [{"type": "file", "path": n, "size": len(d), "oid": _oid(d)} for n, d in sorted(files.items())]
            self._json(entries)

        def resolve(self, type, repo, rev, path):
            target = self._repo(type, repo)
            commit = target and self._commit(target, rev)
            if commit is None:
                return
            if path not in commit.files:
                return self._error(404, "EntryNotFound", f"{path} not found in {repo}@{rev}")
            data = commit.files[path]
            etag = '"' + hashlib.sha256(data).hexdigest() + '"'
            self._send(200, data, {"X-Repo-Commit": commit.oid, "ETag": etag}, "application/octet-stream")

    return Handler


def _oid(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()
