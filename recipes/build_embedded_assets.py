"""Regenerate the embedded default's sample corpus and tokenizer (both shipped in the package's assets).

    python recipes/build_embedded_assets.py

The corpus is written by `clinical_modernbert.sample_corpus` from the embedded lexicon and code tables; the
tokenizer is a byte-level BPE with ModernBERT's special tokens trained on that corpus and the code descriptions.
"""

import gzip
import json
import logging

from clinical_modernbert.assets import EMBEDDED_CORPUS, EMBEDDED_TOKENIZER_DIR, read_code_table
from clinical_modernbert.cli import run_recipe
from clinical_modernbert.configs import EmbeddedAssetArguments
from clinical_modernbert.sample_corpus import SampleCorpusGenerator
from clinical_modernbert.tokenizer_training import train_bpe_tokenizer

logger = logging.getLogger(__name__)


def main(args: EmbeddedAssetArguments):
    docs = SampleCorpusGenerator(args.seed).generate(args.n_abstracts, args.n_notes)
    # mtime=0 keeps the gzip bytes identical across rebuilds
    with gzip.GzipFile(EMBEDDED_CORPUS, "wb", mtime=0) as f:
        f.write("".join(json.dumps(d) + "\n" for d in docs).encode("utf-8"))
    logger.info("Data: %d documents written to %s", len(docs), EMBEDDED_CORPUS)
    tables = ("icd9cm_sample.tsv", "icd10cm_sample.tsv")
    codes = [f"ICD code {c}: {d}" for name in tables for c, d in read_code_table(name)]
    tokenizer = train_bpe_tokenizer([d["text"] for d in docs] + codes, vocab_size=args.vocab_size)
    tokenizer.save_pretrained(EMBEDDED_TOKENIZER_DIR)
    logger.info("Save: tokenizer of %d tokens in %s", len(tokenizer), EMBEDDED_TOKENIZER_DIR)


if __name__ == "__main__":
    run_recipe(main, [EmbeddedAssetArguments])
