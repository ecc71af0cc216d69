"""The recipes' logging: INFO on the main process only, warnings everywhere; one line per phase under two processes."""

import logging
import os
import re
import shutil
import socket
import subprocess
from collections import Counter

import pytest
from conftest import REPO_ROOT
from datasets.utils import logging as datasets_logging
from transformers.utils import logging as transformers_logging

from clinical_modernbert.logging_setup import RANK_VARIABLES, REPLICA_LOG_LEVEL, setup_logging

RECIPES = sorted((REPO_ROOT / "recipes").glob("*.py"))


@pytest.fixture
def restored_logging():
    """Undo `setup_logging` after the test: root handlers and level, library verbosities."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    verbosities = transformers_logging.get_verbosity(), datasets_logging.get_verbosity()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    transformers_logging.set_verbosity(verbosities[0])
    datasets_logging.set_verbosity(verbosities[1])


@pytest.mark.parametrize(("rank", "shows_info"), [(None, True), ("0", True), ("1", False)])
def test_info_on_the_main_process_warnings_everywhere(monkeypatch, capsys, restored_logging, rank, shows_info):
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if rank is not None:
        monkeypatch.setenv("RANK", rank)
    setup_logging()
    logger = logging.getLogger("clinical_modernbert.some_module")
    logger.info("Train: a phase line")
    logger.warning("something to look at")
    out = capsys.readouterr().out
    assert ("INFO clinical_modernbert.some_module: Train: a phase line" in out) == shows_info
    assert "WARNING clinical_modernbert.some_module: something to look at" in out
    assert transformers_logging.get_verbosity() == datasets_logging.get_verbosity() == logging.WARNING


def test_mpi_rank_is_read_when_torchrun_sets_none(monkeypatch, capsys, restored_logging):
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    setup_logging()
    logging.getLogger("clinical_modernbert.some_module").info("Train: a phase line")
    assert capsys.readouterr().out == ""


def test_replica_level_from_the_environment(monkeypatch, capsys, restored_logging):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv(REPLICA_LOG_LEVEL, "info")
    setup_logging()
    logging.getLogger("clinical_modernbert.some_module").info("Train: a phase line")
    assert "INFO clinical_modernbert.some_module: Train: a phase line" in capsys.readouterr().out
    monkeypatch.setenv(REPLICA_LOG_LEVEL, "loud")
    with pytest.raises(ValueError, match=REPLICA_LOG_LEVEL):
        setup_logging()


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.name)
def test_every_recipe_runs_through_the_one_entry_point(recipe):
    """`cli.run_recipe` sets up logging (tested in test_cli.py), parses and reports user errors in one line."""
    source = recipe.read_text()
    main_block = source[source.index('if __name__ == "__main__":'):]
    assert main_block.splitlines()[1].strip().startswith("run_recipe(main, [")
    assert "basicConfig" not in source and "set_verbosity" not in source and "setup_logging" not in source


@pytest.mark.slow
def test_two_processes_log_each_phase_line_once(tmp_path):
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not on PATH")
    with socket.socket() as probe:  # a free rendezvous port: the default 29500 may be held by another run
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = ["accelerate", "launch", "--config_file", str(REPO_ROOT / "recipes/accelerate_configs/cpu_ddp.yaml"),
               "--main_process_port", str(port), str(REPO_ROOT / "recipes/pretrain.py"), "--use_cpu", "true",
               "--output_dir", str(tmp_path / "ddp"), "--max_steps", "2", "--per_device_train_batch_size", "2",
               "--max_seq_length", "64", "--logging_steps", "1", "--max_eval_documents", "4",
               "--save_strategy", "no"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    info = Counter(m.group(1) for m in re.finditer(r"^\S+ \S+ INFO (.*)$", result.stdout, re.M))
    # each process used to log these: every phase line of the run shows once
    for phase in ("Data: streaming", "2 steps, global batch 4 rows", "CPU threads per process"):
        assert sum(n for line, n in info.items() if phase in line) == 1, (phase, info)
    assert max(info.values()) == 1, info
    assert "INFO" not in result.stderr
