"""Clinical ModernBERT demo: fill-mask with the sentence's medical terms highlighted, and text similarity.

Serves the model named by the environment variable MODEL_ID (a local model directory or a Hub id), on CPU:

    MODEL_ID=outputs/clinical-modernbert-tiny python space/app.py
"""

from __future__ import annotations

import html
import math
import os

import gradio as gr
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

from clinical_modernbert.lexicon import Lexicon

DEFAULT_MODEL = "outputs/clinical-modernbert-tiny"  # where `python recipes/pretrain.py` saves the embedded default
# Caps on each text, so that one request stays bounded in CPU time (attention grows with the text); the page
# states them.
MAX_CHARS = 2_000
MAX_TOKENS = 512
MAX_TOP_K = 25
LIMITS = (f"Each text: at most {MAX_CHARS:,} characters and {MAX_TOKENS} tokens (longer ones are refused, not cut); "
          f"top-k from 1 to {MAX_TOP_K}.")


class Demo:
    """The model, its fill-mask pipeline and the medical lexicon, loaded once."""

    def __init__(self, model_id: str):
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_id)
            self.model = AutoModelForMaskedLM.from_pretrained(model_id).eval()
        except OSError as err:
            raise SystemExit(f"Cannot load MODEL_ID={model_id!r} (a model directory or Hub id): {err}") from err
        self.fill = pipeline("fill-mask", model=self.model, tokenizer=self.tokenizer, device="cpu")
        self.lexicon = Lexicon.from_files()

    def predict(self, text: str | None, top_k: int | None) -> tuple[str, list[tuple[str, str | None]]]:
        """An HTML table of the top-k fillers of the mask (rank, token, probability) and the text's medical terms."""
        mask = self.tokenizer.mask_token
        if not isinstance(text, str) or text.count(mask) != 1:
            raise gr.Error(f"Write a sentence with exactly one {mask}.")
        self.check_length(text, "The sentence")
        whole = isinstance(top_k, (int, float)) and not isinstance(top_k, bool) and math.isfinite(top_k)
        if not (whole and top_k == int(top_k) and 1 <= top_k <= MAX_TOP_K):
            raise gr.Error(f"Top-k must be a whole number from 1 to {MAX_TOP_K}, got {top_k!r}.")
        rows = "".join(
            f"<tr><td>{rank}</td><td><code>{html.escape(p['token_str'])}</code></td><td>{p['score']:.4f}</td></tr>"
            for rank, p in enumerate(self.fill(text, top_k=int(top_k)), 1)
        )
        header = "<thead><tr><th>rank</th><th>token</th><th>probability</th></tr></thead>"
        return f"<table>{header}<tbody>{rows}</tbody></table>", self.highlight(text)

    def check_length(self, text: str, what: str) -> None:
        """Refuse a text over `MAX_CHARS` characters or `MAX_TOKENS` tokens (special tokens included)."""
        if len(text) > MAX_CHARS:
            raise gr.Error(f"{what} is {len(text):,} characters; this demo reads at most {MAX_CHARS:,}. Shorten it.")
        tokens = len(self.tokenizer(text)["input_ids"])
        if tokens > MAX_TOKENS:
            raise gr.Error(f"{what} is {tokens:,} tokens; this demo reads at most {MAX_TOKENS}. Shorten it.")

    def highlight(self, text: str) -> list[tuple[str, str | None]]:
        """`text` cut into segments, the medical terms (lexicon matches) labelled "medical"."""
        segments, last = [], 0
        for start, end in self.lexicon.spans(text):
            segments += [(text[last:start], None), (text[start:end], "medical")]
            last = end
        segments.append((text[last:], None))
        return [s for s in segments if s[0]]

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """Mean-pooled last hidden states, one vector per text."""
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        hidden = self.model.base_model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1)

    def similarity(self, text_a: str | None, text_b: str | None) -> float:
        """Cosine similarity of the two texts' mean-pooled embeddings."""
        if not all(isinstance(t, str) and t.strip() for t in (text_a, text_b)):
            raise gr.Error("Enter two texts to compare.")
        self.check_length(text_a, "Text A")
        self.check_length(text_b, "Text B")
        a, b = self.embed([text_a, text_b])
        return round(float(torch.nn.functional.cosine_similarity(a, b, dim=0)), 4)


def build_app(demo: Demo) -> gr.Blocks:
    """One page, two parts: fill-mask (predictions and highlighted medical terms), then similarity."""
    mask = demo.tokenizer.mask_token
    with gr.Blocks(title="Clinical ModernBERT") as app:
        gr.Markdown(f"# Clinical ModernBERT\nModel: `{demo.model.name_or_path}`\n\n{LIMITS}\n## Fill mask")
        with gr.Group():
            sentence = gr.Textbox(label=f"Clinical sentence with one {mask}", elem_id="sentence", max_length=MAX_CHARS,
                                  value=f"The patient was started on {mask} for atrial fibrillation.")
            top_k = gr.Slider(1, MAX_TOP_K, value=5, step=1, label="Top-k", elem_id="top_k")
            run = gr.Button("Predict", elem_id="predict")
            predictions = gr.HTML(label="Predictions", elem_id="predictions")
            terms = gr.HighlightedText(label="Medical terms", elem_id="medical_terms", show_legend=True)
            run.click(demo.predict, [sentence, top_k], [predictions, terms])
        gr.Markdown("## Similarity")
        with gr.Group():
            text_a = gr.Textbox(label="Text A", elem_id="text_a", max_length=MAX_CHARS,
                                value="Metformin was started for type 2 diabetes.")
            text_b = gr.Textbox(label="Text B", elem_id="text_b", max_length=MAX_CHARS,
                                value="Insulin therapy for diabetes mellitus.")
            compare = gr.Button("Compare", elem_id="compare")
            score = gr.Number(label="Cosine similarity of mean-pooled embeddings", elem_id="similarity")
            compare.click(demo.similarity, [text_a, text_b], score)
    return app


if __name__ == "__main__":
    build_app(Demo(os.environ.get("MODEL_ID", DEFAULT_MODEL))).launch()
