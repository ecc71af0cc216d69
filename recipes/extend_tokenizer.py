"""Domain vocabulary for ModernBERT: add frequent, badly split domain words to its tokenizer as whole tokens and grow
the embeddings for them (extend), or train an in-domain byte-level BPE tokenizer (scratch).

    python recipes/extend_tokenizer.py --config recipes/configs/extend_tokenizer.yaml
    accelerate launch recipes/pretrain.py --model_name_or_path outputs/modernbert-domain-vocab   # warm start from it

    python recipes/extend_tokenizer.py --config recipes/configs/extend_tokenizer.yaml --mode scratch --vocab_size 32768
    accelerate launch recipes/pretrain.py --tokenizer_name_or_path outputs/modernbert-domain-vocab   # from scratch

The output folder holds the tokenizer (and, in extend mode, the model), `vocabulary_report.json` (fertility before and
after, read by the model card; with the privacy rules applied: words in at least `min_document_frequency` distinct
documents, sources mined and excluded) and, in extend mode, `added_tokens.tsv` (form, id, frequency, pieces before).
"""

import json
import logging
from pathlib import Path

from clinical_modernbert.artifacts import ADDED_TOKENS_FILE, VOCABULARY_REPORT_FILE, VocabularyReport
from clinical_modernbert.cli import run_recipe
from clinical_modernbert.configs import ModelArguments, VocabularyArguments
from clinical_modernbert.lexicon import read_terms
from clinical_modernbert.modeling import load_model, load_tokenizer
from clinical_modernbert.tokenizer_training import train_bpe_tokenizer
from clinical_modernbert.vocabulary import (
    drop_rare_words,
    extend_tokenizer,
    fertility_report,
    mine_candidates,
    read_corpus,
    resize_and_init_embeddings,
)

logger = logging.getLogger(__name__)


def main(args: VocabularyArguments) -> VocabularyReport:
    sources = args.mined_sources
    excluded = [s.name for s in args.sources if s not in sources]
    if excluded:
        logger.info("Data: source(s) %s not mined: marked redistributable: false (their words would be published "
                    "with the tokenizer; include_non_redistributable_sources: true mines them)", excluded)
    mining, heldout = read_corpus(sources, args.heldout_fraction, args.max_documents) if sources else ([], [])
    lexicons = {Path(f).stem: read_terms(Path(f)) for f in args.lexicon_files}
    privacy = {"min_document_frequency": args.min_document_frequency, "sources_mined": [s.name for s in sources],
               "sources_excluded": excluded}
    logger.info("Data: %d documents to mine, %d held out, %d lexicon terms", len(mining), len(heldout),
                sum(map(len, lexicons.values())))
    base_args = ModelArguments(model_name_or_path=args.model_name_or_path,
                               tokenizer_name_or_path=args.tokenizer_name_or_path)
    base = load_tokenizer(base_args) if args.model_name_or_path or args.tokenizer_name_or_path else None
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    if args.mode == "extend":
        mined = mine_candidates(base, mining, args.num_new_tokens, [t for ts in lexicons.values() for t in ts],
                                args.min_document_frequency)
        logger.info("Vocabulary: %d distinct words, %d in fewer than %d documents (not mined), %d already one token; "
                    "top %d by frequency x pieces saved (last score %d)", mined.distinct_words, mined.too_rare,
                    args.min_document_frequency, mined.already_single, len(mined.candidates),
                    mined.candidates[-1].score)
        extension = extend_tokenizer(base, [c.form for c in mined.candidates])
        tokenizer = extension.tokenizer
        model = load_model(base_args, base)
        resize_and_init_embeddings(model, base, extension.added)
        model.save_pretrained(output_dir)
        rows = [f"{json.dumps(c.form)}\t{extension.added[c.form]}\t{c.frequency}\t{c.pieces}"
                for c in mined.candidates if c.form in extension.added]
        (output_dir / ADDED_TOKENS_FILE).write_text("form\tid\tfrequency\tpieces_before\n" + "\n".join(rows) + "\n")
        summary = {
            "mode": "extend",
            "base_tokenizer": args.tokenizer_name_or_path or args.model_name_or_path,
            "tokens_added": len(extension.added),
            "vocab_size": {"before": len(base), "after": len(tokenizer)},
            "embedding_rows": model.config.vocab_size,
            "skipped": {"already_single_token": len(extension.already_single),
                        "not_one_word": len(extension.not_one_word), "duplicate": extension.duplicates},
            "mining": {"documents": len(mining), "distinct_words": mined.distinct_words,
                       "below_min_document_frequency": mined.too_rare,
                       "already_single_token": mined.already_single, "last_score": mined.candidates[-1].score,
                       **privacy},
        }
    else:
        tokenizer = train_bpe_tokenizer(drop_rare_words(mining, args.min_document_frequency)
                                        + [t for ts in lexicons.values() for t in ts], args.vocab_size,
                                        args.min_frequency)
        summary = {"mode": "scratch", "base_tokenizer": args.tokenizer_name_or_path, "tokens_added": 0,
                   "vocab_size": {**({"before": len(base)} if base else {}), "after": len(tokenizer)},
                   "mining": {"documents": len(mining), **privacy}}
        logger.info("Vocabulary: trained a byte-level BPE tokenizer of %d tokens", len(tokenizer))
    tokenizer.save_pretrained(output_dir)

    logger.info("Eval: fertility on %d held-out documents and %d lexicon(s)", len(heldout), len(lexicons))
    fertility = fertility_report(tokenizer, {"heldout_text": heldout}, lexicons, before=base)
    report = VocabularyReport(**summary, **fertility)
    for name, pair in report.fertility.items():
        logger.info("Eval: %s fertility %s", name, ", ".join(f"{k} {v:.3f}" for k, v in pair.items()))
    report.save(output_dir / VOCABULARY_REPORT_FILE)
    logger.info("Save: tokenizer%s and %s in %s", " + model" if args.mode == "extend" else "", VOCABULARY_REPORT_FILE,
                output_dir)
    return report


if __name__ == "__main__":
    run_recipe(main, [VocabularyArguments])
