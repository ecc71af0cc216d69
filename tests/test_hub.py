"""Publishing: the allow-list, bad input refused before any request, one commit or none, and an end-to-end push to a
local Hub stand-in (`hub_server.py`) loaded back with `AutoModel`, `AutoTokenizer` and `ModelCard.load`."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from hub_server import HubServer
from huggingface_hub import constants
from test_model_card import sample_mlm_eval, write_model_dir
from transformers import AutoTokenizer

from clinical_modernbert.artifacts import MLM_EVAL_FILE, TRAINING_CURVES_FILE
from clinical_modernbert.configs import (
    FinetuneTrainingArguments,
    PretrainTrainingArguments,
    PushArguments,
    check_repo_id,
)
from clinical_modernbert.hub import (
    plan_model_upload,
    push,
    push_model_dir,
    push_space,
    select_model_files,
)

TOKEN = "hf_stand_in_secret_0123456789"
REPO_ID = "test-org/clinical-modernbert-test"
PUBLISHED = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md",
             TRAINING_CURVES_FILE}
# What a training output directory also holds, none of which may leave the machine.
PRIVATE = {
    "optimizer.pt": b"optimizer state",
    "scheduler.pt": b"scheduler state",
    "rng_state.pth": b"rng",
    "training_args.bin": b"pickle",
    "trainer_state.json": b'{"log_history": []}',
    "train.jsonl": b'{"text": "Patient John Doe, MRN 12345"}',
    "run.log": b"step 1: Patient John Doe",
    ".env": f"HF_TOKEN={TOKEN}".encode(),
    "token": TOKEN.encode(),
    "pytorch_model.bin": b"pickled weights",
    "README.md": b"stale hand-written card",
}


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    path = write_model_dir(tmp_path_factory.mktemp("saved"))
    (path / MLM_EVAL_FILE).write_text(json.dumps(sample_mlm_eval()))
    for name, content in PRIVATE.items():
        (path / name).write_bytes(content)
    (path / "checkpoint-2").mkdir()
    (path / "checkpoint-2" / "optimizer.pt").write_bytes(b"optimizer state")
    return path


@pytest.fixture
def model_dir(saved_model, tmp_path) -> Path:
    return Path(shutil.copytree(saved_model, tmp_path / "model"))


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The stand-in Hub, with this process's huggingface_hub pointed at it (its endpoint is read at import)."""
    with HubServer(token=TOKEN) as server:
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login-cache"))
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield server


def test_only_allow_listed_files_are_selected(model_dir):
    files, kept_local = select_model_files(model_dir)
    assert set(files) == PUBLISHED - {"README.md", TRAINING_CURVES_FILE}
    assert set(PRIVATE) | {"checkpoint-2/", "run_facts.json", MLM_EVAL_FILE} <= set(kept_local)


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        (["model.safetensors"], r"no weights \(model.safetensors\) \(pytorch_model.bin present: only safetensors"),
        (["tokenizer.json"], r"no tokenizer \(tokenizer.json missing\)"),
        (["config.json"], "no config.json"),
    ],
)
def test_a_directory_missing_weights_tokenizer_or_config_is_refused(model_dir, remove, message):
    for name in remove:
        (model_dir / name).unlink()
    with pytest.raises(ValueError, match=message):
        select_model_files(model_dir)


def test_a_sharded_checkpoint_needs_every_shard(model_dir):
    (model_dir / "model.safetensors").rename(model_dir / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"shard\(s\) absent .*model-00002-of-00002.safetensors"):
        select_model_files(model_dir)
    (model_dir / "model-00002-of-00002.safetensors").write_bytes(b"")
    assert "model-00002-of-00002.safetensors" in select_model_files(model_dir)[0]


@pytest.mark.parametrize("repo_id", ["clinical-modernbert", "a/b/c", "/name", "org/", "org/bad name", "org/x..y", None])
def test_repo_id_must_be_namespace_slash_name(repo_id):
    with pytest.raises(ValueError, match="repo_id"):
        check_repo_id(repo_id)


def test_push_arguments_are_checked_when_parsed():
    with pytest.raises(ValueError, match="Nothing to publish"):
        PushArguments(repo_id=REPO_ID)
    with pytest.raises(ValueError, match="space_id must be 'namespace/name'"):
        PushArguments(repo_id=REPO_ID, space_id="demo")
    assert PushArguments(model_dir="x", repo_id=REPO_ID).private is False


def test_bad_input_uploads_nothing(model_dir, hub, monkeypatch):
    (model_dir / MLM_EVAL_FILE).write_text(json.dumps({**sample_mlm_eval(), "top_k": "1,5"}))
    with pytest.raises(ValueError, match=f"Malformed .*{MLM_EVAL_FILE}"):
        push_model_dir(model_dir, REPO_ID)
    with pytest.raises(ValueError, match="repo_id must be 'namespace/name'"):
        push_model_dir(model_dir, "no-namespace")
    (model_dir / MLM_EVAL_FILE).unlink()
    (model_dir / "tokenizer.json").rename(model_dir / "tokenizer.json.bak")
    with pytest.raises(ValueError, match="no tokenizer"):
        push_model_dir(model_dir, REPO_ID)
    (model_dir / "tokenizer.json.bak").rename(model_dir / "tokenizer.json")
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(ValueError, match="No Hugging Face token"):
        push_model_dir(model_dir, REPO_ID)
    assert hub.requests == [] and hub.repos == {}


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "model.safetensors"])
def test_an_allow_listed_symlink_is_refused_and_nothing_uploaded(model_dir, hub, tmp_path, name):
    secret = tmp_path / "outside" / "hf_token"
    secret.parent.mkdir()
    secret.write_text(TOKEN)
    (model_dir / name).unlink()
    (model_dir / name).symlink_to(secret)
    with pytest.raises(ValueError, match=f"{name} is a symbolic link .*only regular files inside"):
        push_model_dir(model_dir, REPO_ID)
    assert hub.requests == [] and hub.repos == {}


def test_hub_token_is_refused_when_parsed():
    """`--hub_token` would be pickled into training_args.bin and every checkpoint: the token comes from HF_TOKEN."""
    for arguments in (PretrainTrainingArguments, FinetuneTrainingArguments):
        message = "hub_token is refused: .*training_args.bin.*HF_TOKEN or run `hf auth"
        with pytest.raises(ValueError, match=message) as err:
            arguments(output_dir="out", max_steps=1, hub_token=TOKEN)
        assert TOKEN not in str(err.value)
    assert PretrainTrainingArguments(output_dir="out", max_steps=1).hub_token is None


def test_dry_run_prints_the_plan_and_the_card_and_uploads_nothing(model_dir, hub, capsys):
    assert push_model_dir(model_dir, REPO_ID, dry_run=True) is None
    out = capsys.readouterr().out
    for name in PUBLISHED:
        assert f"  + {name} (" in out
    for name in PRIVATE:
        assert f"  - {name}\n" in out
    assert "pipeline_tag: fill-mask" in out and "## Pre-training setup" in out
    assert TOKEN not in out
    assert hub.requests == []


def test_a_failed_commit_leaves_the_repo_unchanged(model_dir, hub):
    hub.fail_commits = True
    failed = f"Push of {REPO_ID} to the Hub at {hub.url} failed: Server error '500.*nothing was committed"
    with pytest.raises(OSError, match=failed):
        push_model_dir(model_dir, REPO_ID)
    assert [c.message for c in hub.commits(REPO_ID)] == ["initial commit"]
    assert hub.files(REPO_ID) == {}


def test_push_to_a_branch_is_one_commit_there(model_dir, hub):
    push_model_dir(model_dir, REPO_ID, revision="v0.1", private=True)
    assert hub.repo(REPO_ID).private
    assert set(hub.files(REPO_ID, branch="v0.1")) == PUBLISHED
    assert len(hub.commits(REPO_ID, branch="v0.1")) == 2 and hub.files(REPO_ID) == {}
    plan = plan_model_upload(model_dir, REPO_ID)
    plan.files["README.md"] = b"---\nlicense: mit\n---\nsecond version"
    push(plan, revision="v0.1")
    assert hub.files(REPO_ID, branch="v0.1")["README.md"].endswith(b"second version")


def test_space_push_uploads_the_app_and_what_it_imports(hub, tmp_path):
    push_space("test-org/demo", REPO_ID)
    repo = hub.repo("test-org/demo", "space")
    assert repo.sdk == "gradio" and repo.variables == {"MODEL_ID": REPO_ID}
    files = hub.files("test-org/demo", "space")
    assert {"app.py", "requirements.txt", "README.md", "clinical_modernbert/lexicon.py"} <= set(files)
    assert b"sdk: gradio" in files["README.md"] and b"app_file: app.py" in files["README.md"]
    # The uploaded package is enough for the app's lexicon import, without this checkout on the path.
    for name, content in files.items():
        (tmp_path / "space" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "space" / name).write_bytes(content)
    code = "import clinical_modernbert.lexicon as m; print(m.__file__); print(len(m.Lexicon.from_files()))"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path / "space", capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    module_file, terms = result.stdout.split()
    assert Path(module_file).is_relative_to(tmp_path / "space") and int(terms) > 0


@pytest.mark.slow
def test_push_with_the_recipe_then_load_back(model_dir, tmp_path):
    """`recipes/push_to_hub.py` with HF_ENDPOINT set, then the model, tokenizer and card loaded back from the Hub."""
    with HubServer(token=TOKEN) as hub:
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        env.update(HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HOME=str(tmp_path / "hf_home"))
        command = [sys.executable, "recipes/push_to_hub.py", "--model_dir", str(model_dir), "--repo_id", REPO_ID]
        pushed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert pushed.returncode == 0, pushed.stdout[-3000:] + pushed.stderr[-3000:]
        files = hub.files(REPO_ID)
        assert set(files) == PUBLISHED
        for name in PUBLISHED - {"README.md", TRAINING_CURVES_FILE}:
            assert files[name] == (model_dir / name).read_bytes()
        assert files[TRAINING_CURVES_FILE].startswith(b"\x89PNG")
        assert TOKEN not in pushed.stdout + pushed.stderr
        assert not any(TOKEN.encode() in content for content in files.values())
        assert len(hub.commits(REPO_ID)) == 2  # the repo's creation, then one commit with every file

        load = f"""
import json, torch
from huggingface_hub import ModelCard
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer
model = AutoModel.from_pretrained({REPO_ID!r})
mlm = AutoModelForMaskedLM.from_pretrained({REPO_ID!r})
tokenizer = AutoTokenizer.from_pretrained({REPO_ID!r})
card = ModelCard.load({REPO_ID!r})
local = AutoModelForMaskedLM.from_pretrained({str(model_dir)!r})
batch = tokenizer("Aspirin for chest pain.", return_tensors="pt")
print(json.dumps({{
    "model": type(model).__name__,
    "same_logits": torch.equal(mlm(**batch).logits, local(**batch).logits),
    "vocab": len(tokenizer),
    "pipeline_tag": card.data.pipeline_tag,
    "top_1": [r.metric_value for r in card.data.eval_results if r.metric_type == "top_1_accuracy"],
}}))
"""
        loaded = subprocess.run([sys.executable, "-c", load], env=env, capture_output=True, text=True, timeout=300)
        assert loaded.returncode == 0, loaded.stderr[-3000:]
        result = json.loads(loaded.stdout.strip().splitlines()[-1])
        assert result == {"model": "ModernBertModel", "same_logits": True,
                          "vocab": len(AutoTokenizer.from_pretrained(model_dir)), "pipeline_tag": "fill-mask",
                          "top_1": [sample_mlm_eval()["metrics"]["top_1"]]}


@pytest.mark.slow
def test_pretraining_push_to_hub_uses_the_allow_list(tmp_path):
    """`recipes/pretrain.py --push_to_hub`: one commit of allow-listed files; checkpoints and logs stay local."""
    out = tmp_path / "run"
    with HubServer(token=TOKEN) as hub:
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        env.update(HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HOME=str(tmp_path / "hf_home"), HF_DATASETS_OFFLINE="1")
        command = [sys.executable, "recipes/pretrain.py", "--output_dir", str(out), "--max_steps", "2",
                   "--per_device_train_batch_size", "2", "--max_seq_length", "64", "--max_eval_documents", "4",
                   "--save_steps", "2", "--logging_steps", "1", "--push_to_hub", "true", "--hub_model_id", REPO_ID]
        run = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert (out / "checkpoint-2").is_dir()
        assert set(hub.files(REPO_ID)) == PUBLISHED
        assert len(hub.commits(REPO_ID)) == 2
        assert TOKEN not in run.stdout + run.stderr
        # HF_TOKEN was set for the whole run: no file it wrote (arguments, checkpoints, card, logs) holds it.
        written = [path for path in out.rglob("*") if path.is_file()]
        assert any(path.name == "training_args.bin" for path in written)
        assert [path for path in written if TOKEN.encode() in path.read_bytes()] == []
