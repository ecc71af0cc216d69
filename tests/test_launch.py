"""Launching on several machines: the multi-machine accelerate config and the SLURM script, run with stand-ins for
`srun`, `scontrol` and `accelerate` that record the command each machine would run."""

import json
import os
import subprocess
import sys

from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import launch_command_parser
from conftest import REPO_ROOT

from clinical_modernbert.configs import DataArguments, MaskingArguments, ModelArguments, PretrainTrainingArguments
from clinical_modernbert.parsing import parse_recipe_args

SLURM_SCRIPT = REPO_ROOT / "recipes" / "slurm" / "pretrain.slurm"
MULTI_NODE = REPO_ROOT / "recipes" / "accelerate_configs" / "multi_node.yaml"
BASE_CONFIG = "recipes/configs/clinical_modernbert_base.yaml"

STUBS = {
    # srun: drop its own options, run the task as the machine of rank 1
    "srun": '#!/bin/bash\nwhile [[ "$1" == -* ]]; do shift; done\nSLURM_PROCID=1 exec "$@"\n',
    "scontrol": '#!/bin/bash\n[[ "$*" == "show hostnames node-[01-03]" ]] && printf "node-01\\nnode-02\\nnode-03\\n"\n',
    "accelerate": f'#!/bin/bash\nexec {sys.executable} -c "import json, sys; print(json.dumps(sys.argv[1:]))" "$@" '
                  '>> "$RECORD"\n',
}


def test_multi_node_config_loads_as_accelerate_reads_it():
    config = load_config_from_file(str(MULTI_NODE))  # accelerate's own loader: unknown keys are an error
    assert config.distributed_type == "MULTI_GPU" and config.num_machines > 1
    assert config.num_processes % config.num_machines == 0 and config.mixed_precision == "bf16"
    assert config.main_process_port and config.rdzv_backend == "static"


def test_slurm_script_passes_bash_syntax_check():
    subprocess.run(["bash", "-n", str(SLURM_SCRIPT)], check=True)
    header = [line for line in SLURM_SCRIPT.read_text().splitlines() if line.startswith("#SBATCH")]
    assert {"#SBATCH --requeue", "#SBATCH --ntasks-per-node=1"} <= set(header)
    assert all(" #" not in line for line in header)  # sbatch reads a trailing comment as part of the value


def run_slurm_script(tmp_path, *args) -> list[str]:
    """The `accelerate launch` arguments the script gives each machine, as a 3-node job on 4 GPUs each."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in STUBS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    record = tmp_path / "launches.jsonl"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RECORD": str(record), "SLURM_NNODES": "3",
           "SLURM_JOB_NODELIST": "node-[01-03]", "SLURM_JOB_ID": "4242", "SLURM_SUBMIT_DIR": str(REPO_ROOT),
           "GPUS_PER_NODE": "4"}
    subprocess.run(["bash", str(SLURM_SCRIPT), *args], env=env, check=True, cwd=tmp_path, timeout=60,
                   capture_output=True, text=True)
    [launch] = [json.loads(line) for line in record.read_text().splitlines()]
    return launch


def test_slurm_script_launches_the_recipe_on_every_machine(tmp_path):
    launch = run_slurm_script(tmp_path, BASE_CONFIG, "--output_dir", "/scratch/a b")
    assert launch[0] == "launch"
    args = launch_command_parser().parse_args(launch[1:])  # valid `accelerate launch` arguments
    assert (args.num_machines, args.num_processes, args.machine_rank) == (3, 12, 1)
    assert args.main_process_ip == "node-01" and args.main_process_port == 20000 + 4242
    assert load_config_from_file(str(REPO_ROOT / args.config_file)).distributed_type == "MULTI_GPU"
    assert args.training_script == "recipes/pretrain.py" and (REPO_ROOT / args.training_script).is_file()
    assert args.training_script_args == ["--config", BASE_CONFIG, "--output_dir", "/scratch/a b"]
    # the recipe accepts what the script passes it
    _, _, _, training = parse_recipe_args([ModelArguments, DataArguments, MaskingArguments, PretrainTrainingArguments],
                                          args=[*args.training_script_args, "--bf16", "false", "--use_cpu", "true"])
    assert training.output_dir == "/scratch/a b" and len(training.phases) == 2


def test_slurm_script_defaults_to_the_base_config(tmp_path):
    launch = run_slurm_script(tmp_path)
    assert launch[-2:] == ["--config", BASE_CONFIG]
