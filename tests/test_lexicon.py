"""The medical lexicon: word-boundary matching, codes in coding context, per-token flags, files and bad input."""

import gzip
import json
import random

import pytest
from conftest import shared_path

from clinical_modernbert.assets import EMBEDDED_CORPUS, LEXICON_DIR
from clinical_modernbert.lexicon import (
    CODE_WINDOW,
    DEFAULT_CATEGORIES,
    Lexicon,
    _leftmost_longest,
    normalize,
)
from clinical_modernbert.tokenization import DocumentEncoder


def matched(lexicon, text):
    return [text[start:end] for start, end in lexicon.spans(text)]


def test_terms_match_whole_words_case_insensitively_punctuation_as_space():
    lexicon = Lexicon(["aspirin", "Crohn's disease", "non-small cell lung cancer"], match_codes=False)
    text = "ASPIRIN, aspirinate, baby-aspirin; crohn s disease and NON-SMALL CELL LUNG CANCER (aspirin)"
    assert matched(lexicon, text) == ["ASPIRIN", "aspirin", "crohn s disease", "NON-SMALL CELL LUNG CANCER", "aspirin"]


def test_longest_match_wins_and_matches_never_overlap():
    lexicon = Lexicon(["coronary artery", "artery disease", "coronary artery disease", "disease", "heart"],
                      match_codes=False)
    assert matched(lexicon, "coronary artery disease of the heart") == ["coronary artery disease", "heart"]
    # chained overlaps: the leftmost of the longest matches is kept, then matching resumes after it
    assert matched(lexicon, "coronary artery disease disease") == ["coronary artery disease", "disease"]
    assert matched(lexicon, "coronary artery fever, artery disease") == ["coronary artery", "artery disease"]


def test_function_words_and_numbers_are_not_terms():
    lexicon = Lexicon(["and", "THE", "with", "10", "5-FU", "aspirin"], match_codes=False)
    assert len(lexicon) == 2
    assert matched(lexicon, "The 10 patients with 5-FU and aspirin") == ["5-FU", "aspirin"]
    with pytest.raises(ValueError, match="empty"):
        Lexicon(["and", "the", "42", "  "])


def test_codes_count_only_after_a_coding_keyword():
    lexicon = Lexicon(["diabetes"], codes=["250.00", "430", "A41.9"])
    assert matched(lexicon, "430 patients took 250.00 mg") == []
    assert matched(lexicon, "ICD-9 code 250.00: diabetes mellitus") == ["250.00", "diabetes"]
    # table codes and built-in patterns (ICD-9, ICD-10-CM, CPT) alike
    text = "Diagnoses: 430, A41.9, E11.9 (I10), V58.61 and E849.7; CPT 99213."
    assert matched(lexicon, text) == ["430", "A41.9", "E11.9", "I10", "V58.61", "E849.7", "99213"]
    far = "Diagnosis: " + "x" * CODE_WINDOW + " E11.9"
    assert matched(lexicon, far) == []
    assert matched(Lexicon(["diabetes"], match_codes=False), "ICD-10 code E11.9") == []
    with pytest.raises(ValueError, match="match_codes"):
        Lexicon(["diabetes"], codes=["250.00"], match_codes=False)


def test_normalize_keeps_offsets_for_any_text():
    for text in ["Plain ASCII, text.", "İstanbul İİ café—naïve ß µg", "tab\there\nnewline"]:
        normalized = normalize(text)
        assert len(normalized) == len(text)
        assert all((n == " ") == (not (c.isalnum() or c == "_")) for n, c in zip(normalized, text))
    lexicon = Lexicon(["sjögren syndrome"], match_codes=False)
    assert matched(lexicon, "İİ Sjögren–syndrome") == ["Sjögren–syndrome"]


def test_token_flags_mark_every_token_of_a_term(embedded_tokenizer):
    lexicon = Lexicon(["aspirin", "atrial fibrillation", "non-small cell"], match_codes=False)
    text = "Started aspirin for atrial fibrillation and non-small cell cancer."
    [ids], [flags] = lexicon.tokenize(DocumentEncoder(embedded_tokenizer), [text])
    assert ids == embedded_tokenizer(text, add_special_tokens=False)["input_ids"]
    terms, current = [], None
    for token, flag in zip(embedded_tokenizer.convert_ids_to_tokens(ids), flags):
        if flag == 1:
            current = [token]
            terms.append(current)
        elif flag == 2:
            current.append(token)
    assert ["".join(t).replace("Ġ", " ").strip() for t in terms] == ["aspirin", "atrial fibrillation", "non-small cell"]


def test_token_flags_agree_with_an_offset_based_reference(embedded_tokenizer):
    """On the embedded corpus with the default lexicon: a token is flagged iff it overlaps a term's characters."""
    with gzip.open(EMBEDDED_CORPUS, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(200), f)]
    lexicon = Lexicon.from_files()
    _, flags = lexicon.tokenize(DocumentEncoder(embedded_tokenizer), texts)
    offsets = embedded_tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    n_flagged = 0
    for text, doc_flags, doc_offsets in zip(texts, flags, offsets):
        spans = lexicon.spans(text)
        for flag, (start, end) in zip(doc_flags, doc_offsets):
            overlaps = any(start < e and s < end for s, e in spans)
            assert bool(flag) == overlaps, (text[start:end], spans)
        n_flagged += sum(f > 0 for f in doc_flags)
    assert n_flagged > 1000  # the default lexicon does find medical terms in medical text


def test_default_lexicon_has_thousands_of_terms_across_categories():
    lexicon = Lexicon.from_files()
    assert len(lexicon) > 5000
    sizes = {c: len(Lexicon.from_files([str(LEXICON_DIR / f"{c}.txt")], use_default=False))
             for c in DEFAULT_CATEGORIES}
    assert all(n > 300 for n in sizes.values()), sizes


def test_user_files_add_terms_and_codes(tmp_path):
    terms = tmp_path / "terms.txt"
    terms.write_text("# my terms\nfoobarin\n\nquuxitis\n")
    codes = tmp_path / "codes.csv"
    codes.write_text("code,description\nZ99.1,Dependence on respirator\n")
    lexicon = Lexicon.from_files([str(terms)], [str(codes)], use_default=False)
    assert (lexicon.n_terms, lexicon.n_codes) == (2, 1)
    assert matched(lexicon, "Foobarin for quuxitis, dx Z99.1") == ["Foobarin", "quuxitis", "Z99.1"]


@pytest.mark.parametrize(
    ("content", "kind", "error"),
    [
        (None, "terms", "Lexicon file not found"),
        ("# only a comment\n\n", "terms", "Lexicon file is empty"),
        (None, "codes", "Code table not found"),
        ("icd\tdescription\n250.00\tdiabetes\n", "codes", "needs a `code` column"),
        ("code\tdescription\n", "codes", "Code table is empty"),
    ],
)
def test_bad_lexicon_files_fail_with_a_clear_error(tmp_path, content, kind, error):
    path = tmp_path / "file.tsv"
    if content is not None:
        path.write_text(content)
    args = ([str(path)], []) if kind == "terms" else ([], [str(path)])
    with pytest.raises((FileNotFoundError, ValueError), match=error):
        Lexicon.from_files(*args)


def test_shared_word_lists_and_code_tables_load():
    lexicon_dir, codes_dir = shared_path("data/lexicon"), shared_path("data/codes")
    lexicon = Lexicon.from_files(sorted(map(str, lexicon_dir.glob("*.txt"))), sorted(map(str, codes_dir.glob("*.tsv"))))
    assert lexicon.n_terms > 100_000 and lexicon.n_codes > 100_000
    # the spell-check word list holds "and", "with", "THE": function words never count
    text = "The patient with hypertension and diabetes; ICD-10 code E11.9."
    found = matched(lexicon, text)
    assert {"patient", "hypertension", "diabetes", "E11.9"} <= set(found)
    assert not {"The", "with", "and"} & set(found)


def test_one_pass_overlap_resolution_equals_sort_then_greedy():
    """`_leftmost_longest` (spans in order of end) against the obvious reference, on random overlapping spans."""
    rng = random.Random(0)
    for _ in range(5000):
        spans = sorted({(s, s + rng.randint(1, 8)) for s in (rng.randint(0, 20) for _ in range(rng.randint(1, 8)))},
                       key=lambda span: (span[1], rng.random()))
        reference, last_end = [], -1
        for start, end in sorted(spans, key=lambda span: (span[0], -span[1])):
            if start >= last_end:
                reference.append((start, end))
                last_end = end
        assert _leftmost_longest(spans) == reference, spans
