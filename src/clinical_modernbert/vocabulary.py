"""Domain vocabulary refinement: mine frequent, badly split words, add them to a byte-level BPE tokenizer as whole
tokens (every existing id unchanged), grow ModernBERT's embeddings for them, and measure fertility before and after.

How a word becomes one token. ModernBERT's byte-level pre-tokenizer cuts text into words that carry their leading
space ("Ġaspirin" mid-sentence, "aspirin" at a line start or after a bracket); BPE then splits each word on its own.
`tokenizer.add_tokens` cannot express "this whole word", as measured on the real tokenizer:

- `AddedToken("omeprazole")` is cut out before pre-tokenization, so the space before it becomes a token of its own:
  " the omeprazole dose" -> [Ġthe, Ġ, omeprazole, Ġdose] (two tokens for the word, and a new encoding of the space);
  with `lstrip=True` the space is swallowed and decoding loses it (" theomeprazole dose").
- `AddedToken(" omeprazole", single_word=True)` never matches after a word (the check looks at the character before
  the space); with `single_word=False` it matches inside " omeprazoles" -> [" omeprazole", "s"], changing the
  encoding of text that does not contain the term.

So each new form goes into the BPE model's own vocabulary, as the pre-token the model receives ("Ġomeprazole" for
" omeprazole", "omeprazole" for the form without a space), with `ignore_merges=True`: a pre-token found whole in the
vocabulary is one token; every other pre-token goes through the unchanged merges. That changes nothing for existing
pre-tokens as long as each existing vocabulary entry is what the merges produce for it (checked, true for ModernBERT's
and the embedded tokenizers). Decoding is the ordinary byte-level decoding, so decode(encode(text)) == text. The
`tokenizers` library numbers added tokens ([CLS], [MASK], [unused0..82]) right after the model vocabulary, so they are
pinned into it at their current ids first; new ids then start at len(tokenizer).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .configs import DEFAULT_MIN_DOCUMENT_FREQUENCY, SourceConfig
from .data.sources import format_text, load_source
from .data.stream import is_held_out
from .modeling import EMBEDDING_PAD_MULTIPLE

logger = logging.getLogger(__name__)

# A word in its running-text form: letters, optionally after one space (what ` ?\p{L}+` of the pre-tokenizer keeps).
WORD_FORM = re.compile(r" ?[^\W\d_]+")
SINGLE_WORD_TERM = re.compile(r"[^\W\d_]+")
RUN_OF_WORD_CHARACTERS = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Candidate:
    """A word form (" aspirin" mid-text, "aspirin" without the space) and how the base tokenizer splits it."""

    form: str
    frequency: int
    pieces: int

    @property
    def score(self) -> int:
        """Tokens saved on the mining text if the form were one token."""
        return self.frequency * (self.pieces - 1)


@dataclass
class WordCounts:
    """Occurrences of each word form, and the number of distinct documents it occurs in."""

    occurrences: Counter[str]
    documents: Counter[str]


@dataclass
class MiningResult:
    candidates: list[Candidate]
    distinct_words: int
    already_single: int
    too_rare: int  # forms seen in fewer than min_document_frequency distinct documents (never candidates)


@dataclass
class VocabularyExtension:
    """The extended tokenizer, the forms added (form -> new id) and the terms skipped, by reason."""

    tokenizer: PreTrainedTokenizerBase
    added: dict[str, int]
    already_single: list[str]
    not_one_word: list[str]
    duplicates: int


def read_corpus(sources: Sequence[SourceConfig], heldout_fraction: float, max_documents: int):
    """Documents of `sources` (at most `max_documents` each), split by text hash into (mining, held-out) texts."""
    mining, heldout = [], []
    for source in sources:
        for n, row in enumerate(load_source(source)):
            if n == max_documents:
                break
            text = format_text(source, row)
            if isinstance(text, str) and text.strip():
                (heldout if is_held_out(text, heldout_fraction) else mining).append(text)
    if not mining:
        raise ValueError("The corpus is empty: no document left to mine (check the sources and their text field).")
    return mining, heldout


def count_word_forms(tokenizer: PreTrainedTokenizerBase, texts: Iterable[str]) -> WordCounts:
    """Word forms cut as the tokenizer's own normalizer and pre-tokenizer cut `texts`: their occurrences and the
    number of distinct documents holding each (identical texts count once)."""
    backend = tokenizer.backend_tokenizer
    occurrences: Counter[str] = Counter()
    documents: Counter[str] = Counter()
    seen: set[int] = set()
    for text in texts:
        if backend.normalizer is not None:
            text = backend.normalizer.normalize_str(text)
        forms = [f for _, (a, b) in backend.pre_tokenizer.pre_tokenize_str(text) if WORD_FORM.fullmatch(f := text[a:b])]
        occurrences.update(forms)
        if hash(text) not in seen:
            seen.add(hash(text))
            documents.update(set(forms))
    return WordCounts(occurrences, documents)


def mine_candidates(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    top_n: int,
    terms: Sequence[str] = (),
    min_document_frequency: int = DEFAULT_MIN_DOCUMENT_FREQUENCY,
) -> MiningResult:
    """The `top_n` word forms by frequency x pieces saved, among the forms of `texts` found in at least
    `min_document_frequency` distinct documents (a rarer word may be a patient's name) and the lexicon `terms` (public
    lists chosen by the user: each counts as one running-text occurrence, whatever its document count)."""
    if top_n <= 0:
        raise ValueError(f"The number of new tokens must be > 0, got {top_n}")
    corpus = count_word_forms(tokenizer, texts)
    lexicon = count_word_forms(tokenizer, [" " + t.strip() for t in terms]).occurrences
    counts = corpus.occurrences + lexicon
    if not counts:
        raise ValueError("The corpus is empty: it holds no words to mine (check the sources and lexicon files).")
    too_rare = {f for f, n in corpus.documents.items() if n < min_document_frequency and f not in lexicon}
    forms = sorted(set(counts) - too_rare)
    pieces = [len(ids) for ids in tokenizer(forms, add_special_tokens=False)["input_ids"]] if forms else []
    candidates = [Candidate(f, counts[f], p) for f, p in zip(forms, pieces) if p > 1]
    if not candidates:
        raise ValueError(
            f"No word to add: of {len(counts)} word forms, {len(too_rare)} occur in fewer than min_document_frequency="
            f"{min_document_frequency} distinct documents and the other {len(forms)} are already single tokens. "
            "Mine more documents (max_documents, sources) or give lexicon_files."
        )
    candidates.sort(key=lambda c: (-c.score, -c.frequency, c.form))
    return MiningResult(candidates[:top_n], distinct_words=len(counts), already_single=len(forms) - len(candidates),
                        too_rare=len(too_rare))


def drop_rare_words(texts: Sequence[str], min_document_frequency: int) -> list[str]:
    """`texts` without the words (runs of letters or digits) found in fewer than `min_document_frequency` distinct
    documents, so a tokenizer trained on them cannot learn a patient's name or number as a token."""
    documents = Counter(w for text in set(texts) for w in set(RUN_OF_WORD_CHARACTERS.findall(text)))
    return [RUN_OF_WORD_CHARACTERS.sub(lambda m: m[0] if documents[m[0]] >= min_document_frequency else "", text)
            for text in texts]


def extend_tokenizer(tokenizer: PreTrainedTokenizerBase, terms: Iterable[str]) -> VocabularyExtension:
    """A copy of `tokenizer` in which each term (a word form, " aspirin" or "aspirin") is one token.

    New ids start at len(tokenizer); every existing id and every encoding of text without the new forms stay as they
    were (see the module docstring for why the forms go into the BPE vocabulary rather than `add_tokens`). Terms that
    are already one token, that the pre-tokenizer cuts into several words, or that repeat are skipped and counted.
    """
    if tokenizer.mask_token is None:
        raise ValueError("The base tokenizer has no mask token; masked language modelling needs one.")
    terms = list(terms)
    if not terms:
        raise ValueError("No terms to add.")
    backend = tokenizer.backend_tokenizer
    state = json.loads(backend.to_str())
    if state["model"]["type"] != "BPE" or backend.pre_tokenizer is None:
        raise ValueError(
            f"Vocabulary extension needs a pre-tokenized BPE tokenizer (like ModernBERT's); got a "
            f"{state['model']['type']} model{'' if backend.pre_tokenizer else ' without pre-tokenizer'}."
        )
    vocab = state["model"]["vocab"]
    if not state["model"]["ignore_merges"]:
        _check_merges_reproduce_vocab(backend, vocab, {a["content"] for a in state["added_tokens"]})
    _pin_added_tokens(state, len(tokenizer))

    added, already_single, not_one_word, duplicates = {}, [], [], 0
    for term in terms:
        pieces = _pre_tokens(backend, term)
        if len(pieces) != 1:
            not_one_word.append(term)
        elif pieces[0] in vocab:
            if vocab[pieces[0]] >= len(tokenizer):
                duplicates += 1
            else:
                already_single.append(term)
        else:
            vocab[pieces[0]] = len(tokenizer) + len(added)
            added[term] = vocab[pieces[0]]
    if already_single or not_one_word or duplicates:
        logger.info(
            "Vocabulary: skipped %d term(s) already one token (e.g. %s), %d spanning several words (e.g. %s), "
            "%d duplicate(s)", len(already_single), already_single[:3], len(not_one_word), not_one_word[:3], duplicates
        )
    if not added:
        raise ValueError(
            f"None of the {len(terms)} terms needs a new token: {len(already_single)} already one token, "
            f"{len(not_one_word)} spanning several words, {duplicates} duplicates."
        )
    state["model"]["ignore_merges"] = True
    extended = type(tokenizer)(**{**tokenizer.init_kwargs, "tokenizer_object": Tokenizer.from_str(json.dumps(state))})
    if len(extended) != len(tokenizer) + len(added):
        raise RuntimeError(f"Extended tokenizer has {len(extended)} ids, expected {len(tokenizer) + len(added)}.")
    logger.info("Vocabulary: %d tokens added, ids %d..%d", len(added), len(tokenizer), len(extended) - 1)
    return VocabularyExtension(extended, added, already_single, not_one_word, duplicates)


def _pre_tokens(backend: Tokenizer, text: str) -> list[str]:
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    return [piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(text)]


def _check_merges_reproduce_vocab(backend: Tokenizer, vocab: dict[str, int], added: set[str]) -> None:
    """With ignore_merges, a pre-token equal to a vocabulary entry becomes that entry: refuse if merges disagree."""
    differ = [t for t, i in vocab.items() if t not in added and [x.id for x in backend.model.tokenize(t)] != [i]]
    if differ:
        raise ValueError(
            f"{len(differ)} vocabulary entries of the base tokenizer are not what its merges produce "
            f"(e.g. {differ[:5]}); whole-word tokens would change their encoding, so it cannot be extended safely."
        )


def _pin_added_tokens(state: dict, size: int) -> None:
    vocab = state["model"]["vocab"]
    for token in state["added_tokens"]:
        if vocab.setdefault(token["content"], token["id"]) != token["id"]:
            raise ValueError(f"Added token {token['content']!r} has id {token['id']} but {vocab[token['content']]} in "
                             "the BPE vocabulary; cannot extend this tokenizer safely.")
    if sorted(vocab.values()) != list(range(size)):
        raise ValueError(f"The base tokenizer's ids are not exactly 0..{size - 1}; cannot append new ids safely.")


def resize_and_init_embeddings(
    model: PreTrainedModel, old_tokenizer: PreTrainedTokenizerBase, new_tokens: Mapping[str, int]
) -> None:
    """Grow the embedding matrix for `new_tokens` (form -> id), padded to a multiple of 64, and set each new row to the
    mean of the rows of the form's sub-tokens under `old_tokenizer`; the tied decoder follows, and its bias rows get
    the mean of the sub-tokens' biases."""
    if not new_tokens:
        raise ValueError("No new tokens to initialise.")
    rows = model.get_input_embeddings().num_embeddings
    if len(old_tokenizer) > rows or min(new_tokens.values()) < len(old_tokenizer):
        raise ValueError(
            f"Model ({rows} rows), old tokenizer ({len(old_tokenizer)} ids) and new ids "
            f"({min(new_tokens.values())}..{max(new_tokens.values())}) do not fit: new ids must follow the old ones."
        )
    if max(new_tokens.values()) >= rows:
        model.resize_token_embeddings(
            max(new_tokens.values()) + 1, pad_to_multiple_of=EMBEDDING_PAD_MULTIPLE, mean_resizing=True
        )
    embeddings, decoder = model.get_input_embeddings().weight, model.get_output_embeddings()
    tied = decoder is not None and decoder.weight is embeddings
    if model.config.tie_word_embeddings and decoder is not None and not tied:
        raise RuntimeError("The decoder is no longer tied to the input embeddings after resizing.")
    sub_tokens = old_tokenizer(list(new_tokens), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        for new_id, pieces in zip(new_tokens.values(), sub_tokens):
            embeddings[new_id] = embeddings[pieces].mean(0)
            if decoder is not None and not tied:
                decoder.weight[new_id] = decoder.weight[pieces].mean(0)
            if decoder is not None and decoder.bias is not None:
                decoder.bias[new_id] = decoder.bias[pieces].mean(0)
    logger.info("Model: embedding rows %d -> %d, %d new rows set to their sub-token means", rows,
                model.get_input_embeddings().num_embeddings, len(new_tokens))


def text_fertility(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> float:
    """Tokens per whitespace-separated word over `texts` (special tokens not counted)."""
    words = sum(len(t.split()) for t in texts)
    if not words:
        raise ValueError("No words to measure fertility on.")
    return sum(map(len, tokenizer(list(texts), add_special_tokens=False)["input_ids"])) / words


def single_word_terms(terms: Iterable[str]) -> list[str]:
    """The lexicon terms that are one word of letters (the ones a whole-word token can cover)."""
    return [t.strip() for t in terms if SINGLE_WORD_TERM.fullmatch(t.strip())]


def term_pieces(tokenizer: PreTrainedTokenizerBase, terms: Sequence[str]) -> list[int]:
    """Number of tokens of each term in its running-text form (" term")."""
    return [len(ids) for ids in tokenizer([" " + t for t in terms], add_special_tokens=False)["input_ids"]]


def fertility_report(
    after: PreTrainedTokenizerBase,
    texts: Mapping[str, Sequence[str]],
    lexicons: Mapping[str, Sequence[str]],
    before: PreTrainedTokenizerBase | None = None,
) -> dict:
    """Fertility (tokens per word) on each named text set and on the single-word terms of each lexicon, and the share
    of those terms that are one token, for `before` (when given) and `after`."""
    tokenizers = {"before": before, "after": after} if before is not None else {"after": after}
    fertility, single_share, counts = {}, {}, {}
    for name, docs in texts.items():
        if docs:
            fertility[name] = {k: text_fertility(t, docs) for k, t in tokenizers.items()}
            counts[name] = {"documents": len(docs), "words": sum(len(d.split()) for d in docs)}
    for name, terms in lexicons.items():
        words = single_word_terms(terms)
        if not words:
            continue
        pieces = {k: term_pieces(t, words) for k, t in tokenizers.items()}
        fertility[name] = {k: sum(p) / len(p) for k, p in pieces.items()}
        single_share[name] = {k: sum(n == 1 for n in p) / len(p) for k, p in pieces.items()}
        counts[name] = {"terms": len(terms), "single_word_terms": len(words),
                        "three_or_more_pieces": {k: sum(n >= 3 for n in p) / len(p) for k, p in pieces.items()}}
    if not fertility:
        raise ValueError("Nothing to measure: no held-out documents and no single-word lexicon terms.")
    return {"fertility": fertility, "single_token_share": single_share, "counts": counts}
