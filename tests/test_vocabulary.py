"""Vocabulary refinement: whole-word tokens keeping every old id, new rows from sub-token means, the recipe."""

import copy
import gzip
import json
import os

import pytest
import torch
import yaml
from conftest import REPO_ROOT, load_script, shared_path, tiny_config
from transformers import AutoTokenizer, ModernBertForMaskedLM, PreTrainedTokenizerFast

from clinical_modernbert.artifacts import VOCABULARY_REPORT_FILE, VocabularyReport
from clinical_modernbert.assets import EMBEDDED_CORPUS
from clinical_modernbert.configs import (
    DEFAULT_MIN_DOCUMENT_FREQUENCY,
    ModelArguments,
    SourceConfig,
    VocabularyArguments,
)
from clinical_modernbert.modeling import load_model
from clinical_modernbert.parsing import parse_recipe_args
from clinical_modernbert.vocabulary import (
    count_word_forms,
    drop_rare_words,
    extend_tokenizer,
    fertility_report,
    mine_candidates,
    resize_and_init_embeddings,
    term_pieces,
    text_fertility,
)

recipe = load_script("recipes/extend_tokenizer.py")


def read_jsonl(path, limit):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line, _ in zip(f, range(limit))]


@pytest.fixture(scope="module")
def sample_texts():
    texts = read_jsonl(EMBEDDED_CORPUS, 600)
    return texts[:300], texts[300:]  # mined, checked


@pytest.fixture(scope="module")
def modernbert_tokenizer():
    return AutoTokenizer.from_pretrained(shared_path("modernbert-tokenizer"))


@pytest.fixture(scope="module", params=["embedded", "modernbert"])
def extended(request, embedded_tokenizer, sample_texts):
    """(old tokenizer, extension) for the embedded tokenizer and the real ModernBERT one, 200 forms mined."""
    base = embedded_tokenizer if request.param == "embedded" else request.getfixturevalue("modernbert_tokenizer")
    # the mechanics of extension (the embedded tokenizer already holds every word common in its own sample corpus)
    mined = mine_candidates(base, sample_texts[0], 200, min_document_frequency=1)
    return base, extend_tokenizer(base, [c.form for c in mined.candidates])


def expander(old, added):
    """Maps new ids to old ones: each added token replaced by its sub-tokens under the old tokenizer."""
    sub = dict(zip(added.values(), old(list(added), add_special_tokens=False)["input_ids"]))
    return lambda ids: [x for i in ids for x in sub.get(i, [i])]


def check_invariants(old, extension, texts):
    new, added = extension.tokenizer, extension.added
    texts = texts + [s for t in texts for s in t.split(". ")]  # sentences: many hold no new form
    old_ids = old(texts, add_special_tokens=False)["input_ids"]
    new_ids = new(texts, add_special_tokens=False)["input_ids"]
    untouched = [(o, n) for o, n in zip(old_ids, new_ids) if not set(n) & set(added.values())]
    assert len(untouched) > 50 and all(o == n for o, n in untouched)  # texts without new forms: identical ids
    expand = expander(old, added)
    assert all(expand(n) == o for o, n in zip(old_ids, new_ids))  # the others: only the new forms merge
    assert sum(map(len, new_ids)) < sum(map(len, old_ids))
    assert all(new.decode(n) == t for n, t in zip(new_ids, texts))


def test_added_forms_are_single_tokens_and_old_ids_stay(extended, sample_texts):
    old, extension = extended
    new, added = extension.tokenizer, extension.added
    assert sorted(added.values()) == list(range(len(old), len(old) + len(added))) and len(new) == len(old) + len(added)
    new_vocab, expand = new.get_vocab(), expander(old, added)
    assert all(new_vocab[token] == i for token, i in old.get_vocab().items())
    for form, i in added.items():
        assert new(form, add_special_tokens=False)["input_ids"] == [i]
        text = ("the" if form.startswith(" ") else "the (") + form + " dose"
        ids = new(text, add_special_tokens=False)["input_ids"]
        assert i in ids and expand(ids) == old(text, add_special_tokens=False)["input_ids"]
    check_invariants(old, extension, sample_texts[1])
    assert new("the [MASK] dose")["input_ids"] == old("the [MASK] dose")["input_ids"]


def test_real_tokenizer_on_held_out_pubmed(modernbert_tokenizer):
    texts = read_jsonl(shared_path("data/corpus/pubmed_ohsumed.jsonl"), 5200)
    mined = mine_candidates(modernbert_tokenizer, texts[:5000], 300)  # 205 forms are in >= 20 of 5,000 abstracts
    assert 100 < len(mined.candidates) < 300
    check_invariants(modernbert_tokenizer, extend_tokenizer(modernbert_tokenizer, [c.form for c in mined.candidates]),
                     texts[5000:])


def test_whole_word_semantics_on_real_tokenizer(modernbert_tokenizer):
    extension = extend_tokenizer(modernbert_tokenizer, [" omeprazole", "omeprazole"])
    text = " the omeprazole dose (omeprazole) omeprazoles\nomeprazole"
    tokens = extension.tokenizer.tokenize(text)
    assert tokens == ["Ġthe", "Ġomeprazole", "Ġdose", "Ġ(", "omeprazole", ")", "Ġom", "ep", "raz", "oles", "Ċ",
                      "omeprazole"]
    assert extension.tokenizer.decode(extension.tokenizer(text)["input_ids"], skip_special_tokens=True) == text
    again = extend_tokenizer(extension.tokenizer, [" omeprazole", " esomeprazole"])  # extending twice keeps ids
    assert again.added == {" esomeprazole": 50370} and again.already_single == [" omeprazole"]
    assert again.tokenizer(text)["input_ids"] == extension.tokenizer(text)["input_ids"]
    assert again.tokenizer.add_tokens(["<note>"]) == 1 and again.tokenizer.convert_tokens_to_ids("<note>") == 50371


def test_skipped_terms_are_counted_and_all_skipped_is_an_error(modernbert_tokenizer):
    extension = extend_tokenizer(
        modernbert_tokenizer, [" the", " omeprazole", " omeprazole", "5-fluorouracil", " atrial fibrillation"]
    )
    assert list(extension.added) == [" omeprazole"]
    assert extension.already_single == [" the"] and extension.duplicates == 1
    assert extension.not_one_word == ["5-fluorouracil", " atrial fibrillation"]
    with pytest.raises(ValueError, match=r"None of the 2 terms needs a new token: 1 already one token, 1 spanning"):
        extend_tokenizer(modernbert_tokenizer, [" the", "atrial fibrillation"])


def test_mining_ranks_by_frequency_times_pieces_saved(modernbert_tokenizer):
    texts = ["The omeprazole dose.", "Omeprazole and omeprazole; the dose of the esomeprazole."]
    counts = count_word_forms(modernbert_tokenizer, texts)
    assert counts.occurrences == {
        "The": 1, " omeprazole": 2, " dose": 2, "Omeprazole": 1, " and": 1, " the": 2, " of": 1, " esomeprazole": 1}
    assert counts.documents == {
        "The": 1, " omeprazole": 2, " dose": 2, "Omeprazole": 1, " and": 1, " the": 1, " of": 1, " esomeprazole": 1}
    mined = mine_candidates(modernbert_tokenizer, texts, 10, terms=["esomeprazole", "tiotropium bromide"],
                            min_document_frequency=1)
    # Ġes|ome|p|raz|ole (2 x 4 saved), Ġom|ep|raz|ole (2 x 3), Ġt|iot|rop|ium (1 x 3, lexicon), Om|ep|raz|ole
    assert [(c.form, c.frequency, c.pieces, c.score) for c in mined.candidates] == [
        (" esomeprazole", 2, 5, 8), (" omeprazole", 2, 4, 6), (" tiotropium", 1, 4, 3), ("Omeprazole", 1, 4, 3)]
    assert mined.distinct_words == 10 and mined.already_single == 6  # The, dose, and, the, of, bromide
    top_2 = mine_candidates(modernbert_tokenizer, texts, 2, terms=["esomeprazole"], min_document_frequency=1)
    assert top_2.candidates == mined.candidates[:2]


def test_fertility_known_answers(modernbert_tokenizer):
    assert text_fertility(modernbert_tokenizer, ["the omeprazole dose"]) == 6 / 3  # the, Ġom ep raz ole, Ġdose
    assert term_pieces(modernbert_tokenizer, ["omeprazole", "aspirin"]) == [4, 1]
    extension = extend_tokenizer(modernbert_tokenizer, [" omeprazole"])
    report = fertility_report(extension.tokenizer, {"heldout_text": ["the omeprazole dose"]},
                              {"drugs": ["omeprazole", "aspirin", "5-fluorouracil", "atrial fibrillation"]},
                              before=modernbert_tokenizer)
    assert report["fertility"] == {"heldout_text": {"before": 2.0, "after": 1.0},
                                   "drugs": {"before": 2.5, "after": 1.0}}
    assert report["single_token_share"] == {"drugs": {"before": 0.5, "after": 1.0}}
    assert report["counts"]["drugs"]["single_word_terms"] == 2


def test_bad_input_is_refused(embedded_tokenizer):
    no_mask = PreTrainedTokenizerFast(tokenizer_object=embedded_tokenizer.backend_tokenizer)
    with pytest.raises(ValueError, match="no mask token"):
        extend_tokenizer(no_mask, [" zygomaticus"])
    with pytest.raises(ValueError, match="must be > 0, got 0"):
        mine_candidates(embedded_tokenizer, ["some text"], 0)
    with pytest.raises(ValueError, match="corpus is empty"):
        mine_candidates(embedded_tokenizer, ["", "  ", "123 456"], 10)
    with pytest.raises(ValueError, match="No terms"):
        extend_tokenizer(embedded_tokenizer, [])
    with pytest.raises(ValueError, match="num_new_tokens must be > 0, got -5"):
        VocabularyArguments(model_name_or_path="m", lexicon_files=["x"], num_new_tokens=-5)
    with pytest.raises(ValueError, match="mode=extend needs model_name_or_path"):
        VocabularyArguments(lexicon_files=["x"])
    with pytest.raises(ValueError, match="mode must be one of"):
        VocabularyArguments(mode="merge", model_name_or_path="m")
    with pytest.raises(ValueError, match="No corpus"):
        VocabularyArguments(mode="scratch")


@pytest.fixture(scope="module")
def resized(extended):
    """A tiny ModernBERT sized for the old tokenizer, before and after growing it for the added forms."""
    old, extension = extended
    torch.manual_seed(0)
    model = ModernBertForMaskedLM(tiny_config(old, vocab_size=-(-len(old) // 64) * 64))
    with torch.no_grad():
        model.decoder.bias.normal_()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    resize_and_init_embeddings(model, old, extension.added)
    return old, extension, model, before


def test_new_rows_are_sub_token_means_and_decoder_stays_tied(resized):
    old, extension, model, before = resized
    weight, bias = model.model.embeddings.tok_embeddings.weight, model.decoder.bias
    assert model.decoder.weight is weight
    assert weight.shape[0] == model.config.vocab_size and weight.shape[0] % 64 == 0
    assert len(extension.tokenizer) <= weight.shape[0] < len(extension.tokenizer) + 64
    rows = len(old)
    assert torch.equal(weight[:rows], before["model.embeddings.tok_embeddings.weight"][:rows])
    assert torch.equal(bias[:rows], before["decoder.bias"][:rows])
    for form, i in extension.added.items():
        pieces = old(form, add_special_tokens=False)["input_ids"]
        assert len(pieces) > 1
        torch.testing.assert_close(weight[i], before["model.embeddings.tok_embeddings.weight"][pieces].mean(0))
        torch.testing.assert_close(bias[i], before["decoder.bias"][pieces].mean(0))


def test_mlm_forward_and_training_step_after_resize(resized):
    _, extension, model, _ = resized
    model = copy.deepcopy(model)  # the module's other tests read the untrained rows
    tokenizer, new_ids = extension.tokenizer, list(extension.added.values())[:8]
    texts = ["the" + (f if f.startswith(" ") else " (" + f) + " was noted" for f in list(extension.added)[:8]]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    targets = torch.isin(batch["input_ids"], torch.tensor(new_ids))
    labels = torch.where(targets, batch["input_ids"], -100)
    batch["input_ids"] = torch.where(targets, tokenizer.mask_token_id, batch["input_ids"])
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    start = model.decoder.weight[new_ids].detach().clone()
    loss = model(**batch, labels=labels).loss
    assert targets.sum() == len(texts) and torch.isfinite(loss)
    loss.backward()
    assert model.decoder.weight.grad[new_ids].abs().sum(dim=1).gt(0).all()
    optimizer.step()
    assert not torch.equal(model.decoder.weight[new_ids], start)
    assert model.decoder.weight is model.get_input_embeddings().weight


@pytest.fixture(scope="module")
def hub_like_checkpoint(tmp_path_factory, modernbert_tokenizer):
    """A local folder laid out like answerdotai/ModernBERT-base: the real tokenizer, tiny random weights."""
    folder = tmp_path_factory.mktemp("ModernBERT-base")
    modernbert_tokenizer.save_pretrained(folder)
    ModernBertForMaskedLM(tiny_config(modernbert_tokenizer, vocab_size=50368)).save_pretrained(folder)
    return folder


def test_recipe_extend_round_trip_and_warm_start(hub_like_checkpoint, modernbert_tokenizer, tmp_path):
    config = tmp_path / "vocab.yaml"
    config.write_text(yaml.safe_dump({
        "model_name_or_path": str(hub_like_checkpoint), "num_new_tokens": 150, "heldout_fraction": 0.2,
        "max_documents": 400, "output_dir": str(tmp_path / "out"),
        "sources": [{"name": "sample", "path": "json", "data_files": "embedded:sample_corpus.jsonl.gz"}],
        "lexicon_files": ["embedded:lexicon/drugs.txt"],
    }))
    report = recipe.main(*parse_recipe_args([VocabularyArguments], ["--config", str(config)]))
    out = tmp_path / "out"
    assert VocabularyReport.read(out / VOCABULARY_REPORT_FILE) == report
    assert report.tokens_added == 150 and report.vocab_size == {"before": 50368, "after": 50368 + 150}
    assert report.fertility["heldout_text"]["after"] < report.fertility["heldout_text"]["before"]
    assert report.fertility["drugs"]["after"] <= report.fertility["drugs"]["before"]
    assert len((out / "added_tokens.tsv").read_text().splitlines()) == 151

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == 50368 + 150 and tokenizer.mask_token == "[MASK]"
    texts = read_jsonl(EMBEDDED_CORPUS, 40)
    ids = tokenizer(texts)["input_ids"]
    assert all(tokenizer.decode(i, skip_special_tokens=True) == t for i, t in zip(ids, texts))
    assert any(i >= 50368 for row in ids for i in row)

    saved = ModernBertForMaskedLM.from_pretrained(out)
    model = load_model(ModelArguments(model_name_or_path=str(out)), tokenizer)  # refuses any newly initialised weight
    assert model.config.vocab_size == saved.config.vocab_size == 50368 + 192  # 50,518 padded to a multiple of 64
    for (name, loaded), (_, reference) in zip(model.state_dict().items(), saved.state_dict().items()):
        assert torch.equal(loaded, reference), name
    base = ModernBertForMaskedLM.from_pretrained(hub_like_checkpoint)
    assert torch.equal(model.decoder.bias[:50368], base.decoder.bias)
    assert model.decoder.weight is model.model.embeddings.tok_embeddings.weight


def test_recipe_scratch_mode(tmp_path, embedded_tokenizer):
    from clinical_modernbert.assets import EMBEDDED_TOKENIZER_DIR

    args = VocabularyArguments(
        mode="scratch", tokenizer_name_or_path=str(EMBEDDED_TOKENIZER_DIR), vocab_size=800, max_documents=300,
        heldout_fraction=0.2, output_dir=str(tmp_path),
        sources=[{"name": "sample", "path": "json", "data_files": "embedded:sample_corpus.jsonl.gz"}],
    )
    report = recipe.main(args)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert report.mode == "scratch" and report.vocab_size == {"before": len(embedded_tokenizer), "after": 800}
    assert len(tokenizer) == 800 and tokenizer.mask_token == "[MASK]" and not (tmp_path / "model.safetensors").exists()
    fertility = report.fertility["heldout_text"]
    assert fertility["after"] > fertility["before"]  # 800 tokens split more than the 4,096 of the embedded one


def test_example_config_parses():
    config = REPO_ROOT / "recipes" / "configs" / "extend_tokenizer.yaml"
    (args,) = parse_recipe_args([VocabularyArguments], ["--config", str(config)])
    assert args.mode == "extend" and args.num_new_tokens == 5000 and args.sources[0].path == "parquet"
    assert args.min_document_frequency == DEFAULT_MIN_DOCUMENT_FREQUENCY >= 20
    assert [s.name for s in args.mined_sources] == ["pubmed"]  # MIMIC notes listed, not mined
    assert args.lexicon_files and all(os.path.isfile(f) for f in args.lexicon_files)


# Privacy: a word of few documents (a patient's name) never becomes a token; non-redistributable sources are not mined.
SURNAME, COMMON, REPEATED = "Wojciechowski", "tiotropium", "Przybylski"


def privacy_corpus() -> list[str]:
    """60 distinct notes: a surname in 5 of them, a drug in 25, another surname 50 times in one."""
    texts = [f"Visit {i}: the patient was seen today and the plan was reviewed." for i in range(60)]
    for i in range(5):
        texts[i] += f" Seen by Dr {SURNAME} today."
    for i in range(10, 35):
        texts[i] += f" Continue {COMMON} inhaler."
    texts[40] += f" {REPEATED}" * 50
    return texts


def test_only_words_of_enough_distinct_documents_are_mined(modernbert_tokenizer):
    texts = privacy_corpus()
    mined = mine_candidates(modernbert_tokenizer, texts, 100)
    forms = {c.form.strip() for c in mined.candidates}
    assert COMMON in forms and SURNAME not in forms and REPEATED not in forms
    assert mined.too_rare >= 2
    # the floor is what keeps them out: at 5 documents the surname is mined, the single-note one still is not
    mined = mine_candidates(modernbert_tokenizer, texts, 100, min_document_frequency=5)
    forms = {c.form.strip() for c in mined.candidates}
    assert SURNAME in forms and REPEATED not in forms
    # identical documents count once: the same note copied 25 times is one document
    copied = texts + [texts[0]] * 25
    assert SURNAME not in {c.form.strip() for c in mine_candidates(modernbert_tokenizer, copied, 100).candidates}
    # a lexicon term is a public word chosen by the user: mined whatever its document count
    with_term = mine_candidates(modernbert_tokenizer, texts, 100, terms=[SURNAME])
    assert SURNAME in {c.form.strip() for c in with_term.candidates}


def test_scratch_training_text_loses_rare_words():
    kept = drop_rare_words(privacy_corpus(), DEFAULT_MIN_DOCUMENT_FREQUENCY)
    assert not any(SURNAME in t or REPEATED in t for t in kept)
    assert sum(COMMON in t for t in kept) == 25 and all("the patient was seen" in t for t in kept)
    assert "Visit 3:" not in kept[3]  # a number in one document (an MRN, a date) goes too


def test_privacy_arguments_are_checked_when_parsed():
    notes = {"name": "notes", "path": "json", "data_files": "x.jsonl", "redistributable": False}
    with pytest.raises(ValueError, match=r"every source \(notes\) is marked redistributable: false.*"
                                         "include_non_redistributable_sources: true"):
        VocabularyArguments(mode="scratch", sources=[notes])
    with pytest.raises(ValueError, match="min_document_frequency must be >= 1, got 0"):
        VocabularyArguments(mode="scratch", sources=[{**notes, "redistributable": True}], min_document_frequency=0)
    opted_in = VocabularyArguments(mode="scratch", sources=[notes], include_non_redistributable_sources=True)
    assert [s.name for s in opted_in.mined_sources] == ["notes"]
    assert SourceConfig(name="pubmed", path="json").redistributable


def test_recipe_mines_no_non_redistributable_source_unless_opted_in(hub_like_checkpoint, tmp_path):
    public, notes = tmp_path / "public.jsonl", tmp_path / "notes.jsonl"
    public.write_text("".join(json.dumps({"text": t}) + "\n" for t in privacy_corpus()))
    lexicon = tmp_path / "drugs.txt"  # fertility is measured on it (nothing is held out)
    lexicon.write_text("omeprazole\n")
    notes.write_text("".join(json.dumps({"text": f"Note {i}: {SURNAME} discharged home."}) + "\n" for i in range(40)))
    sources = [{"name": "public", "path": "json", "data_files": str(public)},
               {"name": "notes", "path": "json", "data_files": str(notes), "redistributable": False}]

    def run(name, **extra):
        args = VocabularyArguments(model_name_or_path=str(hub_like_checkpoint), sources=sources, num_new_tokens=50,
                                   heldout_fraction=0.0, lexicon_files=[str(lexicon)], output_dir=str(tmp_path / name),
                                   **extra)
        report = recipe.main(args)
        added = (tmp_path / name / "added_tokens.tsv").read_text()
        saved = json.loads((tmp_path / name / VOCABULARY_REPORT_FILE).read_text())
        VocabularyReport.from_json(saved, name)
        return report, added, saved

    report, added, saved = run("default")
    assert SURNAME not in added and COMMON in added
    assert saved["mining"] == {**saved["mining"], "min_document_frequency": 20, "sources_mined": ["public"],
                               "sources_excluded": ["notes"]}
    report, added, saved = run("opted-in", include_non_redistributable_sources=True)
    assert SURNAME in added and saved["mining"]["sources_excluded"] == []
