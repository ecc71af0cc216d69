"""Reading NCBI's PubMed XML files one citation at a time, memory flat per file.

Both layouts NCBI has published are read: `PubmedArticleSet` (baseline and update files since 2017:
`PubmedArticle/MedlineCitation`) and the older `MedlineCitationSet` (`MedlineCitation` at the top level). Book records
(`PubmedBookArticle`) are skipped. Inline markup (`<i>`, `<sub>`, `<sup>`, MathML) becomes its text; character
entities are decoded, also those NCBI escaped twice (`&amp;lt;`).
"""

from __future__ import annotations

import gzip
import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOTS = ("PubmedArticleSet", "MedlineCitationSet")
YEAR = re.compile(r"\b(\d{4})\b")


@dataclass
class Deletion:
    """A PMID listed in a file's `<DeleteCitation>`: removed from the corpus by this file."""

    pmid: int


def iter_file(path: str | Path) -> Iterator[dict | Deletion]:
    """The citations (dicts: pmid, version, title, abstract, year, language, publication_types) and deletions of one
    PubMed XML file (`.xml` or `.xml.gz`), in file order; each element is freed once read."""
    opener = gzip.open if str(path).endswith(".gz") else open
    depth, root = 0, None
    try:
        with opener(path, "rb") as stream:
            for event, elem in ET.iterparse(stream, events=("start", "end")):
                if event == "start":
                    if root is None:
                        root = elem
                        if elem.tag not in ROOTS:
                            raise ValueError(f"{path}: root element <{elem.tag}> is not one of {ROOTS}; is this a "
                                             "PubMed XML file from https://ftp.ncbi.nlm.nih.gov/pubmed/?")
                    depth += 1
                    continue
                depth -= 1
                if depth != 1:
                    continue
                if elem.tag == "PubmedArticle":
                    yield citation_record(elem.find("MedlineCitation"))
                elif elem.tag == "MedlineCitation":
                    yield citation_record(elem)
                elif elem.tag == "DeleteCitation":
                    yield from (Deletion(int(p.text)) for p in elem.iter("PMID"))
                root.clear()  # frees the element just read: memory stays flat whatever the file's size
    except (ET.ParseError, EOFError, OSError) as err:
        raise ValueError(f"{path} is not a readable PubMed XML file ({err}); download it again") from err


def citation_record(citation: ET.Element) -> dict:
    """The fields of one `<MedlineCitation>`; structured abstracts keep their labels ("BACKGROUND: ..."). An empty
    `<ArticleTitle/>` (it happens) gives way to the `<VernacularTitle>`."""
    pmid = citation.find("PMID")
    article = citation.find("Article")
    sections = []
    for part in article.iterfind("Abstract/AbstractText"):
        body = element_text(part)
        if body:
            label = part.get("Label")
            sections.append(f"{label}: {body}" if label else body)
    pub_date = article.find("Journal/JournalIssue/PubDate")
    return {
        "pmid": int(pmid.text),
        "version": int(pmid.get("Version", "1")),
        "title": element_text(article.find("ArticleTitle")) or element_text(article.find("VernacularTitle")),
        "abstract": "\n".join(sections),
        "year": publication_year(pub_date),
        "language": article.findtext("Language"),
        "publication_types": [element_text(t) for t in article.iterfind("PublicationTypeList/PublicationType")],
    }


def element_text(elem: ET.Element | None) -> str:
    """All the text inside `elem` (inline markup dropped, whitespace collapsed, entities decoded); "" for None."""
    if elem is None:
        return ""
    text = " ".join("".join(elem.itertext()).split())
    return html.unescape(text) if "&" in text else text


def publication_year(pub_date: ET.Element | None) -> int | None:
    """The year of a `<PubDate>`: its `<Year>`, else the first year in `<MedlineDate>` ("1998 Dec-1999 Jan")."""
    if pub_date is None:
        return None
    found = YEAR.search(pub_date.findtext("Year") or pub_date.findtext("MedlineDate") or "")
    return int(found.group(1)) if found else None
