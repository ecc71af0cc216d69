"""Bad input as a careless user gives it: one line on stderr naming the file, source or setting and the fix, exit
code 2, no traceback (unless CLINICAL_MODERNBERT_DEBUG is set), and never a model saved from no data."""

import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import REPO_ROOT
from test_model_card import write_model_dir
from transformers import AutoTokenizer

from clinical_modernbert import cli
from clinical_modernbert.assets import EMBEDDED_TOKENIZER_DIR
from clinical_modernbert.cli import DEBUG_VARIABLE, USER_ERROR_EXIT_CODE, run_recipe
from clinical_modernbert.configs import check_probability

TINY = ["--max_steps", "2", "--per_device_train_batch_size", "2", "--max_seq_length", "64",
        "--max_eval_documents", "4", "--save_strategy", "no"]


def run(recipe, *args, env=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, str(REPO_ROOT / "recipes" / recipe), *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=600)


def assert_one_line_error(result, *parts):
    """Exit code 2 and a last stderr line `error: ...` holding every part, without a traceback."""
    assert result.returncode == USER_ERROR_EXIT_CODE, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), result.stderr[-3000:]
    for part in parts:
        assert part in line, (part, line)


def write_source_config(tmp_path, name, lines, **source):
    data = tmp_path / f"{name}.jsonl"
    data.write_text("".join(f"{line}\n" for line in lines))
    keys = "".join(f"\n    {key}: {value!r}" for key, value in source.items())
    config = tmp_path / f"{name}.yaml"
    config.write_text(f"sources:\n  - name: {name}\n    path: json\n    data_files: {data}{keys}\n")
    return config, data


# run_recipe itself

def test_a_project_error_is_one_line_and_exit_code_2(monkeypatch, capsys):
    monkeypatch.setattr(cli, "setup_logging", lambda: print("logging set up"))
    monkeypatch.setattr(cli, "parse_recipe_args", lambda types, default_config=None: ("a_rate", 2))
    monkeypatch.delenv(DEBUG_VARIABLE, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        run_recipe(check_probability, [])
    assert exit_info.value.code == USER_ERROR_EXIT_CODE
    captured = capsys.readouterr()
    assert captured.out == "logging set up\n" and captured.err == "error: a_rate must be in (0, 1), got 2\n"


def test_debug_variable_keeps_the_traceback(monkeypatch):
    monkeypatch.setattr(cli, "setup_logging", lambda: None)
    monkeypatch.setattr(cli, "parse_recipe_args", lambda types, default_config=None: ())
    monkeypatch.setenv(DEBUG_VARIABLE, "1")
    with pytest.raises(ValueError, match="a_rate must be in"):
        run_recipe(lambda: check_probability("a_rate", 2), [])


def test_an_error_raised_inside_a_library_keeps_its_traceback(monkeypatch):
    monkeypatch.setattr(cli, "setup_logging", lambda: None)
    monkeypatch.setattr(cli, "parse_recipe_args", lambda types, default_config=None: ())
    monkeypatch.delenv(DEBUG_VARIABLE, raising=False)
    with pytest.raises(json.JSONDecodeError):
        run_recipe(lambda: json.loads("{"), [])
    with pytest.raises(KeyError):
        run_recipe(lambda: {}["bug"], [])


# the cases of the hardening issue, through the recipes

@pytest.mark.parametrize("recipe", ["pretrain.py", "extend_tokenizer.py"])
def test_config_without_a_value(recipe):
    assert_one_line_error(run(recipe, "--config"), "--config needs a value")


@pytest.mark.parametrize(("source", "message"), [
    ("  - json", "Each source must be a mapping"),
    ("  - name: notes", "lacks the required key(s) ['path']"),
    ("  - {name: notes, path: text, data_files: x.txt, weight: .inf}", "Source 'notes': mixture weight must be a "
     "finite number > 0, got inf"),
    ("  - {name: notes, path: text, data_files: x.txt, weight: .nan}", "got nan"),
    ("  - {name: codes, path: csv, data_files: x.csv, template: 'ICD {code'}", "Source 'codes': template 'ICD {code' "
     "is not a valid format string"),
    ("  - {name: codes, path: csv, data_files: x.csv, template: 'ICD {}'}", "Source 'codes': template field {}"),
])
def test_bad_sources_are_refused_when_parsed(tmp_path, source, message):
    config = tmp_path / "run.yaml"
    config.write_text(f"sources:\n{source}\nmax_steps: 2\n")
    assert_one_line_error(run("pretrain.py", "--config", config, "--output_dir", tmp_path / "out"), message)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_an_invalid_json_line_is_named(tmp_path):
    config, data = write_source_config(tmp_path, "notes", ['{"text": "Aspirin for chest pain."}', '{"text": "cut'])
    result = run("pretrain.py", "--config", config, "--output_dir", tmp_path / "out", *TINY)
    assert_one_line_error(result, f"Source 'notes': {data} line 2 is not valid JSON", "fix or remove that line")


@pytest.mark.parametrize("max_eval_documents", ["4", "0"])
def test_a_source_of_only_empty_texts_saves_no_model(tmp_path, max_eval_documents):
    config, _ = write_source_config(tmp_path, "notes", ['{"text": ""}', '{"text": null}', '{"text": "  "}'] * 20)
    out = tmp_path / "out"
    result = run("pretrain.py", "--config", config, "--output_dir", out, *TINY, "--max_eval_documents",
                 max_eval_documents)
    assert_one_line_error(result, "['notes']", "text_field or template")
    assert not list(out.rglob("*.safetensors"))


def test_a_template_that_formats_the_first_row_to_nothing_names_the_source(tmp_path):
    config, _ = write_source_config(tmp_path, "codes", ['{"code": " ", "description": "Angina"}'], template="{code}")
    result = run("pretrain.py", "--config", config, "--output_dir", tmp_path / "out", *TINY)
    assert_one_line_error(result, "Source 'codes': template '{code}' formats the first row to empty text")


def test_a_template_that_cannot_format_the_first_row_names_the_source(tmp_path):
    config, _ = write_source_config(tmp_path, "codes", ['{"code": "I20", "description": "Angina"}'],
                                    template="{code[system]}: {description}")
    result = run("pretrain.py", "--config", config, "--output_dir", tmp_path / "out", *TINY)
    assert_one_line_error(result, "Source 'codes': template '{code[system]}: {description}' cannot format the first "
                          "row")


def test_a_model_folder_that_does_not_exist(tmp_path):
    missing = tmp_path / "no-such-model"
    result = run("pretrain.py", "--model_name_or_path", missing, "--output_dir", tmp_path / "out", *TINY)
    assert_one_line_error(result, f"model_name_or_path: the folder {missing} does not exist")


def test_a_model_folder_without_a_tokenizer(tmp_path):
    (tmp_path / "model").mkdir()
    annotations = tmp_path / "test.tsv"
    annotations.write_text("aspirin\tB-Chemical\n")
    args = ("--model_name_or_path", tmp_path / "model", "--annotations", annotations)
    result = run("evaluate_mlm.py", *args)
    assert_one_line_error(result, f"the folder {tmp_path / 'model'} holds no config.json")
    (tmp_path / "model" / "config.json").write_text(
        (REPO_ROOT / "src/clinical_modernbert/assets/tiny_modernbert_config.json").read_text())
    result = run("evaluate_mlm.py", *args)
    assert_one_line_error(result, f"the folder {tmp_path / 'model'} holds no tokenizer", "--tokenizer_name_or_path")


def test_max_seq_length_beyond_the_models_positions_fails_before_reading_data(tmp_path):
    out = tmp_path / "out"
    result = run("pretrain.py", "--output_dir", out, *TINY, "--max_seq_length", "8192", "--model_config",
                 tmp_path / "config.json")
    assert_one_line_error(result, "model_config: file not found")
    config = (REPO_ROOT / "src/clinical_modernbert/assets/tiny_modernbert_config.json").read_text()
    (tmp_path / "config.json").write_text(config.replace('"max_position_embeddings": 8192', '"max_position_embeddings"'
                                                         ': 512'))
    result = run("pretrain.py", "--output_dir", out, *TINY, "--max_seq_length", "1024", "--model_config",
                 tmp_path / "config.json")
    assert_one_line_error(result, "max_seq_length=1024 exceeds the model config's max_position_embeddings=512",
                          "set max_seq_length to at most 512")
    assert not out.exists()


def test_a_tokenizer_without_cls_and_sep_fails_at_start(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED_TOKENIZER_DIR)
    tokenizer.cls_token = tokenizer.sep_token = None
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    out = tmp_path / "out"
    result = run("pretrain.py", "--tokenizer_name_or_path", tmp_path / "tokenizer", "--output_dir", out, *TINY)
    assert_one_line_error(result, f"Tokenizer '{tmp_path / 'tokenizer'}' has no cls, sep token;")
    assert not list(out.rglob("*.safetensors"))


def test_a_push_to_a_closed_port_names_the_endpoint(tmp_path):
    model_dir = write_model_dir(tmp_path / "model")
    with socket.socket() as probe:  # a port nothing listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    env = {"HF_ENDPOINT": endpoint, "HF_TOKEN": "hf_stand_in_secret", "HF_HUB_OFFLINE": "0",
           "HF_HOME": str(tmp_path / "hf_home")}
    result = run("push_to_hub.py", "--model_dir", model_dir, "--repo_id", "test-org/cmb", env=env)
    assert_one_line_error(result, f"Push of test-org/cmb to the Hub at {endpoint} failed", "HF_ENDPOINT")
    assert "hf_stand_in_secret" not in result.stdout + result.stderr
