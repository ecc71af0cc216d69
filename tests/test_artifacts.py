"""The files a run leaves: each typed artifact reads what its writer wrote and writes it back unchanged; bad content
is refused naming the file; publishing reads them without loading the training stack."""

import dataclasses
import json
import subprocess
import sys

import pytest
from test_model_card import sample_finetune_result, sample_mlm_eval, sample_run_facts, sample_vocabulary_report

from clinical_modernbert.artifacts import FinetuneResult, MlmEvalReport, RunFacts, VocabularyReport

SAMPLES = [
    (RunFacts, sample_run_facts),
    (MlmEvalReport, sample_mlm_eval),
    (VocabularyReport, sample_vocabulary_report),
    (FinetuneResult, sample_finetune_result),
]


@pytest.mark.parametrize(("artifact", "sample"), SAMPLES)
def test_saved_and_read_back_unchanged(tmp_path, artifact, sample):
    data = sample()
    path = tmp_path / "artifact.json"
    artifact.from_json(data, path).save(path)
    absent = {field.name: None for field in dataclasses.fields(artifact) if field.name not in data}
    assert json.loads(path.read_text()) == {**data, **absent}
    assert artifact.read(path) == artifact.from_json(data, path)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(("artifact", "sample"), SAMPLES)
def test_keys_of_a_newer_writer_are_ignored_and_bad_content_refused(tmp_path, artifact, sample):
    path = tmp_path / "artifact.json"
    assert artifact.from_json({**sample(), "added_later": 1}, path) == artifact.from_json(sample(), path)
    with pytest.raises(ValueError, match=f"Malformed {path}: expected a JSON object, got list"):
        artifact.from_json([sample()], path)
    path.write_text("{cut short")
    with pytest.raises(ValueError, match=f"Malformed {path}: not valid JSON"):
        artifact.read(path)


def test_run_facts_measurements_may_be_null_settings_not():
    facts = RunFacts.from_json(sample_run_facts(steps=None, phases=None, held_out=None), "run_facts.json")
    assert facts.steps is None and facts.phases is None
    with pytest.raises(ValueError, match=r"'global_batch_size' must be a non-negative integer, got None"):
        RunFacts.from_json(sample_run_facts(global_batch_size=None), "run_facts.json")


def test_held_out_evaluation_reads_as_an_mlm_report():
    facts = RunFacts.from_json(sample_run_facts(held_out={"documents": 8, "rows": 3, "tokens": 300}), "f")
    held_out = {"eval_loss": 6.1, "eval_top_1": 0.1, "eval_top_5": 0.3, "eval_num_positions": 40,
                "eval_perplexity": 90.0, "epoch": 1.0}
    report = MlmEvalReport.from_held_out_eval(facts, held_out, "eval_results.json")
    assert report.top_k == [1, 5] and report.metrics["top_5"] == 0.3 and "epoch" not in report.metrics
    assert report.data["rows"] == 3 and report.masking["mlm_probability"] == 0.15
    assert report.dataset_name == "pubmed, notes (held-out documents)"
    assert MlmEvalReport.from_held_out_eval(facts, {"eval_loss": 6.1}, "eval_results.json") is None
    with pytest.raises(ValueError, match=r"Malformed eval_results.json: .*top_5 must be a number in \[0, 1\]"):
        MlmEvalReport.from_held_out_eval(facts, {**held_out, "eval_top_5": 3.0}, "eval_results.json")


def test_publishing_does_not_import_the_training_stack():
    code = ("import sys, clinical_modernbert.hub; "
            "print(sorted(m for m in ('clinical_modernbert.trainer', 'clinical_modernbert.data.stream', "
            "'clinical_modernbert.masking', 'clinical_modernbert.evaluation', 'evaluate') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
