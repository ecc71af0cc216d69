"""PubMed XML parsing on NCBI's real files (../shared/data/pubmed_xml) and on files the tests write."""

import gzip
import tracemalloc

import pytest
from conftest import shared_path

from clinical_modernbert.corpora.pubmed_xml import Deletion, iter_file

PUBMED_XML = "data/pubmed_xml"


def citations(path):
    return [item for item in iter_file(path) if not isinstance(item, Deletion)]


def article(pmid, title="A title.", abstract="<AbstractText>Some text.</AbstractText>", version=1, language="eng",
            year="<Year>2024</Year>"):
    """One `<PubmedArticle>` as NCBI writes it (the parts the parser reads, plus some it skips)."""
    body = f"<Abstract>{abstract}</Abstract>" if abstract is not None else ""
    return (f'<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM"><PMID Version="{version}">{pmid}</PMID>'
            f"<Article><Journal><JournalIssue><PubDate>{year}</PubDate></JournalIssue></Journal>"
            f"<ArticleTitle>{title}</ArticleTitle>{body}<AuthorList><Author><LastName>Doe</LastName></Author>"
            f"</AuthorList><Language>{language}</Language><PublicationTypeList><PublicationType>Journal Article"
            "</PublicationType></PublicationTypeList></Article></MedlineCitation><PubmedData><ReferenceList>"
            f'<Reference><ArticleIdList><ArticleId IdType="pubmed">{pmid + 1}</ArticleId></ArticleIdList></Reference>'
            "</ReferenceList></PubmedData></PubmedArticle>")


def write_xml(path, articles, deleted=()):
    """A PubMed XML file (gzip), with a `<DeleteCitation>` list when `deleted` is given."""
    deletes = "".join(f'<PMID Version="1">{p}</PMID>' for p in deleted)
    text = ('<?xml version="1.0" encoding="UTF-8"?>\n<PubmedArticleSet>\n' + "".join(articles)
            + (f"<DeleteCitation>{deletes}</DeleteCitation>" if deleted else "") + "</PubmedArticleSet>\n")
    path.write_bytes(gzip.compress(text.encode()))
    return path


@pytest.mark.parametrize("name", ["baseline/pubmed25n1274.xml.gz", "baseline/pubmed26n1334.xml.gz",
                                  "updatefiles/pubmed25n1275.xml.gz", "updatefiles/pubmed26n1335.xml.gz"])
def test_real_files_parse_into_clean_citations(name):
    path = shared_path(f"{PUBMED_XML}/{name}")
    records = citations(path)
    assert len(records) == 30 and len({r["pmid"] for r in records}) == 30
    raw = gzip.decompress(path.read_bytes()).decode()
    assert all(f">{r['pmid']}</PMID>" in raw for r in records)
    assert all(r["title"] and r["version"] >= 1 and r["language"] and r["publication_types"] for r in records)
    assert all(2000 <= r["year"] <= 2026 for r in records)
    texts = [r["title"] + r["abstract"] for r in records]
    assert not any(tag in t for t in texts for tag in ("<i>", "</i>", "<sub>", "<sup>", "&lt;", "&amp;"))
    assert sum(1 for r in records if not r["abstract"]) >= 1  # citations without abstract are read too
    assert any(line.split(": ", 1)[0] in {"BACKGROUND", "METHODS", "RESULTS", "CONCLUSIONS", "OBJECTIVE"}
               for r in records for line in r["abstract"].split("\n"))  # structured abstracts keep their labels


def test_inline_markup_becomes_its_text_on_a_real_abstract():
    records = citations(shared_path(f"{PUBMED_XML}/baseline/pubmed26n1334.xml.gz"))
    (record,) = [r for r in records if r["pmid"] == 41580931]
    assert "molybdenum disulfide (MoS2)" in record["abstract"]  # MoS<sub>2</sub> in the file


def test_real_files_hold_other_languages_and_deletions():
    german = citations(shared_path(f"{PUBMED_XML}/baseline/pubmed25n1274.xml.gz"))
    assert sorted(r["language"] for r in german).count("ger") == 2
    deletions = [d.pmid for d in iter_file(shared_path(f"{PUBMED_XML}/updatefiles/pubmed26n1335.xml.gz"))
                 if isinstance(d, Deletion)]
    assert deletions == [41456105, 41557076, 41616784, 41618748, 41618749, 41618779]


def test_legacy_medline_citation_set_is_read():
    items = list(iter_file(shared_path(f"{PUBMED_XML}/legacy/medline16n0902.xml.gz")))
    records = [i for i in items if not isinstance(i, Deletion)]
    assert len(records) == 604 and [i.pmid for i in items if isinstance(i, Deletion)] == [26432306]
    assert sum(r["language"] == "ita" for r in records) == 18 and sum(not r["abstract"] for r in records) == 78
    assert all(r["title"] for r in records)


def test_labels_entities_and_mathml(tmp_path):
    abstract = ('<AbstractText Label="BACKGROUND" NlmCategory="BACKGROUND">CO<sub>2</sub> &amp; O<sub>2</sub> at '
                '5&#xa0;&#x3bc;m, &amp;lt;10%.</AbstractText><AbstractText Label="RESULTS">Area '
                '<mml:math xmlns:mml="http://www.w3.org/1998/Math/MathML"><mml:mi>x</mml:mi><mml:mo>=</mml:mo>'
                "<mml:msup><mml:mi>r</mml:mi><mml:mn>2</mml:mn></mml:msup></mml:math> grew.</AbstractText>")
    path = write_xml(tmp_path / "pubmed26n0001.xml.gz", [
        article(1, title="Effect of <i>E. coli</i> on T<sub>reg</sub> cells.", abstract=abstract),
        article(2, abstract=None, year="<MedlineDate>1998 Dec-1999 Jan</MedlineDate>", version=3),
    ])
    first, second = citations(path)
    assert first["title"] == "Effect of E. coli on Treg cells."
    assert first["abstract"] == "BACKGROUND: CO2 & O2 at 5 μm, <10%.\nRESULTS: Area x=r2 grew."  # nbsp: a space
    assert (second["abstract"], second["year"], second["version"]) == ("", 1998, 3)


def test_files_that_are_not_pubmed_xml_are_named(tmp_path):
    other = tmp_path / "other.xml.gz"
    other.write_bytes(gzip.compress(b"<?xml version='1.0'?><html><body/></html>"))
    with pytest.raises(ValueError, match="other.xml.gz: root element <html>"):
        list(iter_file(other))
    truncated = tmp_path / "pubmed26n0002.xml.gz"
    full = write_xml(tmp_path / "full.xml.gz", [article(i) for i in range(1, 50)]).read_bytes()
    truncated.write_bytes(full[: len(full) // 2])
    with pytest.raises(ValueError, match="pubmed26n0002.xml.gz is not a readable PubMed XML file"):
        list(iter_file(truncated))


def test_memory_stays_flat_whatever_the_file_size(tmp_path):
    """Each citation is freed once read: peak memory over a file 8x longer is about the same."""
    text = "Sentence about a study of patients with an abstract long enough to weigh something. " * 20
    peaks = []
    for n in (1000, 8000):
        path = write_xml(tmp_path / f"pubmed26n{n:04d}.xml.gz",
                         [article(i, abstract=f"<AbstractText>{text}</AbstractText>") for i in range(1, n + 1)])
        tracemalloc.start()
        count = sum(1 for _ in iter_file(path))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert count == n
    assert peaks[1] < 1.5 * peaks[0], peaks  # without clearing, the tree of 8,000 articles is ~8x larger
