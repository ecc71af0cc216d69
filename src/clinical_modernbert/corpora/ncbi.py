"""NCBI's PubMed file folders (https://ftp.ncbi.nlm.nih.gov/pubmed/baseline/ and .../updatefiles/), local or remote.

A folder, local or an https index page, lists `pubmedYYnNNNN.xml.gz` files (2016-era: `medlineYYnNNNN.xml.gz`) with
`<name>.md5` beside each, reading `MD5(<name>)= <hex>`. Downloads are checked against it and retried.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

FILE_NAME = re.compile(r"(?:pubmed|medline)(\d\d)n(\d{4})\.xml\.gz")
MD5_LINE = re.compile(r"MD5\s*\((?P<name>[^)]+)\)\s*=\s*(?P<md5>[0-9a-fA-F]{32})")
TIMEOUT_S = 120


@dataclass(frozen=True)
class NcbiFile:
    """One input file: its name and where it is (a local path or a URL)."""

    name: str
    location: str

    @property
    def remote(self) -> bool:
        return is_url(self.location)

    @property
    def year(self) -> int:
        """The year of the file's release, from its name (`pubmed25n0001` -> 2025)."""
        return 2000 + int(FILE_NAME.fullmatch(self.name).group(1))


def is_url(location: str) -> bool:
    return location.startswith(("https://", "http://"))


def list_files(folder: str) -> list[NcbiFile]:
    """The PubMed XML files of a folder (local, or an https index page like NCBI's), by year and file number."""
    names = _remote_names(folder) if is_url(folder) else _local_names(folder)
    if not names:
        raise ValueError(f"No PubMed XML files (pubmedYYnNNNN.xml.gz) in {folder}")
    names = sorted(names, key=lambda name: tuple(map(int, FILE_NAME.fullmatch(name).groups())))  # (year, number)
    if is_url(folder):
        return [NcbiFile(name, folder.rstrip("/") + "/" + name) for name in names]
    return [NcbiFile(name, str(Path(folder) / name)) for name in names]


def _local_names(folder: str) -> list[str]:
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; give a folder or https URL of NCBI's PubMed XML files")
    return [p.name for p in path.iterdir() if FILE_NAME.fullmatch(p.name)]


def _remote_names(url: str) -> list[str]:
    index = _get(url.rstrip("/") + "/", retries=3).decode("utf-8", "replace")
    return sorted(set(re.findall(r'href="(?:[^"]*/)?((?:pubmed|medline)\d\dn\d{4}\.xml\.gz)"', index)))


def expected_md5(file: NcbiFile, retries: int = 3) -> str | None:
    """The MD5 NCBI publishes for `file` (its `.md5` file); None for a local file without one."""
    if file.remote:
        text = _get(file.location + ".md5", retries).decode("ascii", "replace")
    else:
        md5_path = Path(file.location + ".md5")
        if not md5_path.is_file():
            return None
        text = md5_path.read_text()
    found = MD5_LINE.search(text)
    if not found:
        raise ValueError(f"{file.location}.md5 does not read 'MD5({file.name})= <hex>': {text[:100]!r}")
    return found.group("md5").lower()


def file_md5(path: str | Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, destination: Path, md5: str, retries: int = 3) -> Path:
    """Download `url` to `destination`, retried (with backoff) until its MD5 is `md5`; the error names the URL."""
    partial = destination.with_name(destination.name + ".part")

    def save(response) -> Path:
        with open(partial, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
        got = file_md5(partial)
        if got != md5:
            raise _Corrupt(f"MD5 {got} is not NCBI's {md5}")
        return partial.replace(destination)

    try:
        return _fetch(url, retries, save)
    finally:
        partial.unlink(missing_ok=True)


def _get(url: str, retries: int) -> bytes:
    """A small file (index page, `.md5`), retried like a download."""
    return _fetch(url, retries, lambda response: response.read())


class _Corrupt(Exception):
    """A download whose content is not what NCBI published: retried."""


def _fetch(url: str, retries: int, read):
    """`read(response)` of `url`, retried with backoff on server and network errors and corrupt content; a missing
    file (HTTP 4xx) fails at once. Errors name the URL."""
    for attempt in range(1, retries + 1):
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                return read(response)
        except urllib.error.HTTPError as err:
            if err.code < 500:  # missing or forbidden: retrying will not help
                raise FileNotFoundError(f"Could not download {url}: HTTP {err.code} {err.reason}") from err
            problem = f"HTTP {err.code} {err.reason}"
        except (_Corrupt, urllib.error.URLError, OSError) as err:
            problem = str(err)
        logger.warning("Download %d/%d of %s failed: %s", attempt, retries, url, problem)
        if attempt < retries:
            time.sleep(2 ** (attempt - 1))
    raise OSError(f"Could not download {url} after {retries} attempts: {problem}")
