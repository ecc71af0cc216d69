"""The Gradio Space demo: its functions called directly (bad input answered with a message, input capped), and the
page in a real headless browser (Debian's chromium driven by Playwright): what it shows must be what
`pipeline("fill-mask")`, the lexicon and mean-pooled `AutoModel` embeddings give for the same model."""

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, load_script
from test_model_card import write_model_dir
from transformers import AutoModel, AutoTokenizer, pipeline

from clinical_modernbert.lexicon import Lexicon

CHROMIUM = Path("/usr/bin/chromium")
SENTENCE = "The patient with atrial fibrillation was given [MASK] and metoprolol."

gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install gradio)")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("space_model"))


@pytest.fixture(scope="module")
def app():
    return load_script("space/app.py")


@pytest.fixture(scope="module")
def demo(app, model_dir):
    return app.Demo(str(model_dir))


@pytest.mark.parametrize(
    ("text", "top_k", "message"),
    [
        (None, 5, r"exactly one \[MASK\]"),
        ("", 5, r"exactly one \[MASK\]"),
        ("Given [MASK] and [MASK].", 5, r"exactly one \[MASK\]"),
        (SENTENCE, 0, "Top-k must be a whole number from 1 to 25, got 0"),
        (SENTENCE, 26, "from 1 to 25, got 26"),
        (SENTENCE, None, "from 1 to 25, got None"),
        (SENTENCE, 2.5, "from 1 to 25, got 2.5"),
        (SENTENCE, float("nan"), "from 1 to 25, got nan"),
        (SENTENCE + " x" * 1_000, 5, "The sentence is 2,069 characters; this demo reads at most 2,000"),
        ("[MASK] " + "Metoprolol. " * 160, 5, r"The sentence is [\d,]+ tokens; this demo reads at most 512"),
    ],
    ids=["none", "empty", "two-masks", "k0", "k26", "k-none", "k-fraction", "k-nan", "characters", "tokens"],
)
def test_fill_mask_answers_bad_input_with_a_message(demo, text, top_k, message):
    with pytest.raises(gr.Error, match=message):
        demo.predict(text, top_k)


@pytest.mark.parametrize(
    ("text_a", "text_b", "message"),
    [
        (None, "Insulin.", "Enter two texts to compare"),
        ("Insulin.", "   ", "Enter two texts to compare"),
        ("Insulin.", "x" * 2_001, "Text B is 2,001 characters; this demo reads at most 2,000"),
        ("Metoprolol. " * 160, "Insulin.", r"Text A is [\d,]+ tokens; this demo reads at most 512"),
    ],
    ids=["none", "blank", "characters", "tokens"],
)
def test_similarity_answers_bad_input_with_a_message(demo, text_a, text_b, message):
    with pytest.raises(gr.Error, match=message):
        demo.similarity(text_a, text_b)


def test_good_input_at_the_caps_is_answered_and_the_page_states_them(app, demo):
    table, terms = demo.predict(SENTENCE, 25.0)  # the slider sends floats
    assert table.count("<tr><td>") == 25 and [t for t, label in terms if label] == ["atrial fibrillation", "metoprolol"]
    longest = ("Metoprolol was given for atrial fibrillation. " * 50)[:2_000]  # 483 tokens
    assert -1 <= demo.similarity(longest, SENTENCE) <= 1
    page = " ".join(block.value for block in app.build_app(demo).blocks.values() if isinstance(block, gr.Markdown))
    assert "at most 2,000 characters and 512 tokens" in page and "top-k from 1 to 25" in page


@pytest.fixture(scope="module")
def sync_api():
    if not CHROMIUM.is_file():
        pytest.skip(f"no browser at {CHROMIUM} (apt-get install -y chromium)")
    return pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")


@pytest.fixture(scope="module")
def app_url(model_dir):
    """`python space/app.py` serving `model_dir` on 127.0.0.1; its URL as the app prints it."""
    env = {**os.environ, "MODEL_ID": str(model_dir), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "space/app.py"], cwd=REPO_ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines, ready = [], threading.Event()

    def read():
        for line in process.stdout:
            lines.append(line)
            if "Running on local URL" in line:
                ready.set()
        ready.set()  # the app exited

    threading.Thread(target=read, daemon=True).start()
    try:
        ready.wait(timeout=180)
        url = next((m.group(0) for line in lines if (m := re.search(r"http://127\.0\.0\.1:\d+", line))), None)
        assert url and process.poll() is None, "the app did not start:\n" + "".join(lines)[-3000:]
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def page(sync_api, app_url):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.goto(app_url, wait_until="networkidle")
        yield page
        browser.close()


@pytest.mark.slow
def test_fill_mask_shows_the_pipelines_predictions_and_the_medical_terms(page, model_dir):
    page.locator("#sentence textarea").fill(SENTENCE)
    page.click("#predict")
    page.locator("#predictions tbody tr").first.wait_for()
    shown = [[cell.inner_text().strip() for cell in row.locator("td").all()]
             for row in page.locator("#predictions tbody tr").all()]

    expected = pipeline("fill-mask", model=str(model_dir))(SENTENCE, top_k=5)
    assert shown == [[str(rank), p["token_str"].strip(), f"{p['score']:.4f}"] for rank, p in enumerate(expected, 1)]
    spans = Lexicon.from_files().spans(SENTENCE)
    assert page.locator("#medical_terms .highlighted .text").all_inner_texts() == [SENTENCE[a:b] for a, b in spans]
    assert len(spans) == 2  # "atrial fibrillation" and "metoprolol"


@pytest.mark.slow
def test_a_sentence_without_the_mask_token_is_refused(page):
    page.locator("#sentence textarea").fill("No mask in this sentence.")
    page.click("#predict")
    page.get_by_text("Write a sentence with exactly one [MASK].").first.wait_for()


@pytest.mark.slow
def test_similarity_is_the_cosine_of_mean_pooled_embeddings(page, model_dir):
    texts = ["Metoprolol for atrial fibrillation.", "Warfarin was started for atrial fibrillation."]
    page.locator("#text_a textarea").fill(texts[0])
    page.locator("#text_b textarea").fill(texts[1])
    before = page.locator("#similarity input").input_value()
    page.click("#compare")
    page.wait_for_function(
        "before => document.querySelector('#similarity input').value !== before", arg=before
    )
    shown = float(page.locator("#similarity input").input_value())

    tokenizer, model = AutoTokenizer.from_pretrained(model_dir), AutoModel.from_pretrained(model_dir)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    a, b = (hidden * mask).sum(1) / mask.sum(1)
    assert shown == pytest.approx(float(torch.nn.functional.cosine_similarity(a, b, dim=0)), abs=1e-4)


@pytest.mark.slow
def test_a_model_id_that_does_not_load_stops_the_app_with_its_name(tmp_path):
    missing = tmp_path / "no-model-here"
    env = {**os.environ, "MODEL_ID": str(missing), "GRADIO_ANALYTICS_ENABLED": "False"}
    result = subprocess.run([sys.executable, "space/app.py"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0
    assert f"Cannot load MODEL_ID={str(missing)!r}" in result.stderr
