"""Reading documents with entity mentions: PubTator and IOB files."""

import re
from collections import Counter

import pytest
from conftest import shared_path

from clinical_modernbert.data.annotations import AnnotatedDocument, Mention, detect_format, read_annotations

# The form of BC5CDR's files: a tab after the identifier, a composite mention with its parts, relation lines
PUBTATOR = """\
3403780|t|Paracetamol-associated coma, metabolic acidosis, renal and hepatic failure.
3403780|a|A case of metabolic acidosis following paracetamol ingestion.
3403780\t0\t11\tParacetamol\tChemical\tD000082\t
3403780\t23\t27\tcoma\tDisease\tD003128\t
3403780\t29\t47\tmetabolic acidosis\tDisease\tD000138\t
3403780\t39\t47\tacidosis\tDisease\tD000138\t
3403780\t49\t74\trenal and hepatic failure\tDisease\tD058186|D017093\trenal failure|hepatic failure
3403780\t86\t104\tmetabolic acidosis\tDisease\t-1
3403780\tCID\tD000082\tD000138

26094|t|Behçet's disease and naïve α-blocker use
26094|a|
26094\t0\t16\tBehçet's disease\tDisease\tD001528\t
26094\t21\t26\tnaïve\tModifier\t-1\t
26094\t27\t36\tα-blocker\tChemical\tD000317\t
26094\tAssociation\tD001528\tD000317\tNovel
"""


def write(tmp_path, text: str, name: str = "docs.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_pubtator_documents_offsets_and_mentions(tmp_path):
    path = write(tmp_path, PUBTATOR)
    documents = read_annotations(path)
    assert detect_format(path) == "pubtator"
    assert [d.id for d in documents] == ["3403780", "26094"]
    first, second = documents
    assert first.text == ("Paracetamol-associated coma, metabolic acidosis, renal and hepatic failure. A case of "
                          "metabolic acidosis following paracetamol ingestion.")
    # overlapping (metabolic acidosis / acidosis) and adjacent mentions kept; the relation lines skipped
    assert first.mentions == [Mention(0, 11, "Chemical"), Mention(23, 27, "Disease"), Mention(29, 47, "Disease"),
                              Mention(39, 47, "Disease"), Mention(49, 74, "Disease"), Mention(86, 104, "Disease")]
    assert [first.text[m.start:m.end] for m in first.mentions][-1] == "metabolic acidosis"
    # non-ASCII text: character offsets; an empty abstract leaves the title and its space
    assert second.text == "Behçet's disease and naïve α-blocker use "
    assert [(second.text[m.start:m.end], m.type) for m in second.mentions] == [
        ("Behçet's disease", "Disease"), ("naïve", "Modifier"), ("α-blocker", "Chemical")]


def test_pubtator_mentions_are_sorted_and_adjacent_ones_stay_apart(tmp_path):
    text = "1|t|heartfailure\n1|a|x\n1\t5\t12\tfailure\tDisease\t-1\n1\t0\t5\theart\tAnatomy\t-1\n"
    (document,) = read_annotations(write(tmp_path, text))
    assert document == AnnotatedDocument("1", "heartfailure x", [Mention(0, 5, "Anatomy"), Mention(5, 12, "Disease")])


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("1|t|ab\n1|a|cd\n1\t0\t2\tax\tDisease\t-1\n", 3,
         "mention 'ax' at 0-2 differs from the text there, 'ab'; fix the offsets"),
        ("1|t|ab\n1|a|cd\n1\t3\t9\tcd\tDisease\t-1\n", 3, "offsets 3-9 of 'cd' are not a span of the document's 5"),
        ("1|t|ab\n1|a|cd\n1\t2\t2\tx\tDisease\t-1\n", 3, "offsets 2-2 of 'x' are not a span"),
        ("1|t|é x\n1|a|\n1\t3\t4\tx\tDisease\t-1\n", 3, "they look like UTF-8 byte offsets; give character offsets"),
        ("1|t|ab\n1|a|cd\n2\t0\t2\tab\tDisease\t-1\n", 3,
         "line of document '2' in the block of document '1'; separate documents with a blank line"),
        ("1|t|ab\n1|a|cd\n1\t0\tx\tab\tDisease\n", 3, "malformed mention line"),
        ("1|t|ab\n1|a|cd\n1\t0\t2\tab\n", 3, "malformed mention line"),
        ("1|t|ab\n1|a|cd\n1\t0\t2\tab\t \t-1\n", 3, "malformed mention line"),
        ("1|t|ab\n1|a|cd\n1\tx\n", 3, "malformed annotation line"),
        ("1|t|ab\n2|a|cd\n", 2, "expected '1|a|abstract'"),
        ("1|t|ab\n1|t|cd\n", 2, "expected '1|a|abstract'"),
        ("1|t|ab\n1|a|cd\n1|a|ef\n", 3, r"expected 'PMID\|t\|title' \(a new document\)"),
        ("1|t|ab\n1|a|cd\n\n1\t0\t2\tab\tDisease\t-1\n", 4, "outside a document"),
        ("1|t|ab\n\n", 2, "document 1 has a title line but no 'PMID|a|abstract' line"),
    ],
)
def test_pubtator_errors_name_file_line_and_fix(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=f"^{re.escape(f'{path}:{line}: ')}.*{message}"):
        read_annotations(path)


def test_invalid_utf8_is_named_with_its_line(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_bytes(b"1|t|ab\n1|a|c\xff\n")
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}:2: not valid UTF-8.*save the file as UTF-8"):
        read_annotations(path)


def test_title_without_abstract_at_the_end_and_unknown_or_empty_files(tmp_path):
    with pytest.raises(ValueError, match="document 7 has a title line but no 'PMID|a|abstract' line"):
        read_annotations(write(tmp_path, "7|t|ab\n"))
    with pytest.raises(ValueError, match=r"docs.txt:2: neither PubTator .* nor IOB"):
        read_annotations(write(tmp_path, "\nsome prose\n"))
    with pytest.raises(ValueError, match="holds no documents"):
        read_annotations(write(tmp_path, "\n\n"))
    with pytest.raises(FileNotFoundError, match="Annotation file not found"):
        read_annotations(tmp_path / "missing.txt")


def test_iob_sentences_become_documents_with_their_spans(tmp_path):
    path = write(tmp_path, "Naïve\tO\nheart\tB-Disease\nfailure\tI-Disease\naspirin\tB-Chemical\nuse\tO\n\n"
                           "cisplatin\tB-Chemical\nnephrotoxicity\tB-Disease\n.\tO\n", "test.tsv")
    assert detect_format(path) == "iob"
    first, second = read_annotations(path)
    assert first.text == "Naïve heart failure aspirin use"
    assert [(first.text[m.start:m.end], m.type) for m in first.mentions] == [
        ("heart failure", "Disease"), ("aspirin", "Chemical")]
    assert second == AnnotatedDocument("2", "cisplatin nephrotoxicity .",
                                       [Mention(0, 9, "Chemical"), Mention(10, 24, "Disease")])


def test_iob_errors_come_from_the_iob_reader(tmp_path):
    with pytest.raises(ValueError, match=r"test.tsv:2: malformed IOB line"):
        read_annotations(write(tmp_path, "a\tO\nb\tX-Disease\n", "test.tsv"))


def test_bc5cdr_test_split_mentions_equal_its_b_tags():
    path = shared_path("data/eval/bc5cdr_iob/test.tsv")
    lines = path.read_text(encoding="utf-8").split("\n")
    b_tags = Counter(line.split("\t")[1][2:] for line in lines if "\tB-" in line)
    sentences = sum(1 for i, line in enumerate(lines) if line.strip() and (i == 0 or not lines[i - 1].strip()))
    documents = read_annotations(path)
    assert len(documents) == sentences
    assert Counter(m.type for d in documents for m in d.mentions) == b_tags
    assert b_tags["Chemical"] > 5000 and b_tags["Disease"] > 4000
    for document in documents[:200]:  # spans are whole tokens: a space (or the text's edge) on both sides
        for m in document.mentions:
            assert document.text[m.start - 1 : m.start].strip() == "" and document.text[m.end : m.end + 1].strip() == ""
