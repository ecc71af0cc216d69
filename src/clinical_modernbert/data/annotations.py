"""Documents with entity mentions, read from PubTator or IOB files: the text and each mention's character span.

PubTator (BC5CDR, NCBI-disease, BioRED): per document `PMID|t|title`, `PMID|a|abstract`, then one line per mention,
`PMID<TAB>start<TAB>end<TAB>mention<TAB>type<TAB>identifier[<TAB>more]`, and a blank line between documents. Offsets
are Python character offsets into `title + " " + abstract`, end exclusive (the NCBI files are ASCII, where characters
and bytes agree; offsets that fit as UTF-8 byte offsets only are reported as such); relation lines
(`PMID<TAB>CID<TAB>D1<TAB>D2`, `PMID<TAB>Association<TAB>...`) are skipped.

IOB (`token<TAB>tag`, as `recipes/finetune.py` reads): each sentence is a document, its tokens joined by single
spaces, its mentions the `B-`/`I-` spans (type: the tag's suffix).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..finetuning.metrics import iob_entities
from ..finetuning.ner import TAG_PATTERN, read_iob

PUBTATOR, IOB = "pubtator", "iob"
TEXT_LINE = re.compile(r"([^|\t]+)\|([ta])\|(.*)", re.DOTALL)


@dataclass(frozen=True)
class Mention:
    """A mention's characters `text[start:end]` and its entity type."""

    start: int
    end: int
    type: str


@dataclass
class AnnotatedDocument:
    """A document's id (PMID, or the sentence number in an IOB file), its text and its mentions."""

    id: str
    text: str
    mentions: list[Mention]


def detect_format(path: str | Path) -> str:
    """`pubtator` or `iob`, from the file's first non-blank line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Annotation file not found: {path}")
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            line = _decode(raw, path, number)
            if not line.strip():
                continue
            if TEXT_LINE.fullmatch(line):
                return PUBTATOR
            parts = line.split("\t")
            if len(parts) == 2 and TAG_PATTERN.fullmatch(parts[1]):
                return IOB
            raise ValueError(
                f"{path}:{number}: neither PubTator ('PMID|t|title') nor IOB ('token<TAB>tag'): {line[:80]!r}; "
                "give a PubTator file (title, abstract and mention lines per document) or an IOB file"
            )
    raise ValueError(f"{path} holds no documents (empty file?)")


def read_annotations(path: str | Path) -> list[AnnotatedDocument]:
    """The documents of a PubTator or IOB file (see `detect_format`), mentions in order of (start, end, type)."""
    return _read_pubtator(Path(path)) if detect_format(path) == PUBTATOR else _read_iob_documents(Path(path))


def _read_iob_documents(path: Path) -> list[AnnotatedDocument]:
    documents, iob = [], read_iob(path)
    for number, (words, tags) in enumerate(zip(iob.words, iob.tags), 1):
        starts = [0]
        for word in words[:-1]:
            starts.append(starts[-1] + len(word) + 1)
        mentions = [Mention(starts[first], starts[last - 1] + len(words[last - 1]), kind)
                    for kind, first, last in iob_entities(tags)]
        documents.append(AnnotatedDocument(str(number), " ".join(words), _sorted(mentions)))
    return documents


def _read_pubtator(path: Path) -> list[AnnotatedDocument]:
    documents, title, document = [], None, None  # title: (pmid, text) until the abstract line completes a document
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            line = _decode(raw, path, number)
            where = f"{path}:{number}"
            if not line.strip():
                if title is not None:
                    raise ValueError(f"{where}: document {title[0]} has a title line but no 'PMID|a|abstract' line")
                document = None
                continue
            text_line = TEXT_LINE.fullmatch(line)
            if text_line:
                pmid, kind, text = text_line.groups()
                if kind == "t" and title is None:
                    title, document = (pmid, text), None
                elif kind == "a" and title is not None and title[0] == pmid:
                    document = AnnotatedDocument(pmid, f"{title[1]} {text}", [])
                    documents.append(document)
                    title = None
                else:
                    expected = f"'{title[0]}|a|abstract'" if title else "'PMID|t|title' (a new document)"
                    raise ValueError(f"{where}: expected {expected}, got {line[:80]!r}")
                continue
            fields = line.split("\t")
            if document is None:
                raise ValueError(
                    f"{where}: annotation line {line[:80]!r} outside a document; each document starts with "
                    "'PMID|t|title' and 'PMID|a|abstract' lines, documents are separated by blank lines"
                )
            if fields[0] != document.id:
                raise ValueError(f"{where}: line of document {fields[0]!r} in the block of document {document.id!r};"
                                 " separate documents with a blank line")
            second = fields[1][:1] if len(fields) > 1 else ""
            if second.isdigit():
                document.mentions.append(_mention(line, document.text, where))
            elif not (len(fields) >= 4 and second.isalpha()):  # relation lines (PMID, CID, id, id) are skipped
                raise ValueError(
                    f"{where}: malformed annotation line {line[:80]!r}; expected "
                    "'PMID<TAB>start<TAB>end<TAB>mention<TAB>type<TAB>id' or a relation 'PMID<TAB>CID<TAB>id<TAB>id'"
                )
    if title is not None:
        raise ValueError(f"{path}: document {title[0]} has a title line but no 'PMID|a|abstract' line")
    if not documents:
        raise ValueError(f"{path} holds no documents (empty file?)")
    for document in documents:
        document.mentions = _sorted(document.mentions)
    return documents


def _mention(line: str, text: str, where: str) -> Mention:
    """The mention of a `PMID, start, end, mention, type, ...` line, checked against the document's text."""
    fields = line.split("\t")
    if len(fields) < 5 or not (fields[1].isdigit() and fields[2].isdigit() and fields[3].strip() and fields[4].strip()):
        raise ValueError(
            f"{where}: malformed mention line {line[:80]!r}; expected 'PMID<TAB>start<TAB>end<TAB>mention<TAB>type"
            "<TAB>id' with integer offsets and a non-blank mention and type"
        )
    start, end, mention = int(fields[1]), int(fields[2]), fields[3]
    if start < end <= len(text) and text[start:end] == mention:
        return Mention(start, end, fields[4])
    as_bytes = text.encode("utf-8")[start:end] == mention.encode("utf-8")
    fix = ("they look like UTF-8 byte offsets; give character offsets" if as_bytes
           else "fix the offsets (characters of title + ' ' + abstract, end exclusive)")
    if not start < end <= len(text):
        raise ValueError(f"{where}: offsets {start}-{end} of {mention!r} are not a span of the document's "
                         f"{len(text)} characters; {fix}")
    raise ValueError(f"{where}: mention {mention!r} at {start}-{end} differs from the text there, "
                     f"{text[start:end]!r}; {fix}")


def _sorted(mentions: list[Mention]) -> list[Mention]:
    return sorted(mentions, key=lambda m: (m.start, m.end, m.type))


def _decode(raw: bytes, path: Path, number: int) -> str:
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}:{number}: not valid UTF-8 ({e.reason} at byte {e.start} of the line); "
                         "save the file as UTF-8") from None
