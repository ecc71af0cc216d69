"""Where a run stands on disk: which checkpoints are complete, the one to resume from, whether the run has finished.

A checkpoint counts as complete only once its manifest (`checkpoint_complete.json`: every file's size and xxh3
digest) is written, which `MLMTrainer` does after every process has written all its files, the stream states
included, and before any older checkpoint is rotated away. A run killed at any moment, during a save too, therefore
leaves at least one complete checkpoint (once one was saved); a resumed run takes the newest one whose files all
match their manifest and sets newer ones aside in `output_dir/incomplete/`, naming the file at fault.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import xxhash
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .artifacts import RUN_FACTS_FILE  # written last by the final save: its presence means the run finished

logger = logging.getLogger(__name__)

MANIFEST_FILE = "checkpoint_complete.json"
INCOMPLETE_DIR = "incomplete"
_CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The `checkpoint-N` folders of `run_dir` (if it exists), newest (highest N) first."""
    if not Path(run_dir).is_dir():
        return []
    found = [(int(m.group(1)), path) for path in Path(run_dir).iterdir()
             if path.is_dir() and (m := _CHECKPOINT_NAME.match(path.name))]
    return [path for _, path in sorted(found, reverse=True)]


def _digest(path: Path) -> str:
    hasher = xxhash.xxh3_64()
    with path.open("rb") as file:
        while chunk := file.read(1 << 24):
            hasher.update(chunk)
    return hasher.hexdigest()


def _files(checkpoint: Path) -> list[str]:
    return sorted(str(p.relative_to(checkpoint)) for p in checkpoint.rglob("*")
                  if p.is_file() and not p.name.startswith(MANIFEST_FILE))


def mark_complete(checkpoint: str | os.PathLike) -> None:
    """Write the manifest of `checkpoint`; call it once every file of every process is written."""
    checkpoint = Path(checkpoint)
    manifest = {name: {"size": (checkpoint / name).stat().st_size, "xxh3_64": _digest(checkpoint / name)}
                for name in _files(checkpoint)}
    staging = checkpoint / f"{MANIFEST_FILE}.tmp"
    staging.write_text(json.dumps({"files": manifest}, indent=1))
    os.replace(staging, checkpoint / MANIFEST_FILE)  # atomic: a manifest is whole or absent


def unmark(checkpoint: str | os.PathLike) -> None:
    """Drop the manifest of a checkpoint folder that is about to be written again."""
    Path(checkpoint, MANIFEST_FILE).unlink(missing_ok=True)


def checkpoint_problem(checkpoint: str | os.PathLike) -> str | None:
    """Why `checkpoint` cannot be resumed from, naming the file at fault; None when it is complete."""
    checkpoint = Path(checkpoint)
    try:
        manifest = json.loads((checkpoint / MANIFEST_FILE).read_text())["files"]
    except FileNotFoundError:
        return f"{MANIFEST_FILE} is missing: its save did not finish"
    except (OSError, ValueError, KeyError) as error:
        return f"{MANIFEST_FILE} cannot be read ({error})"
    for name, expected in manifest.items():
        path = checkpoint / name
        try:
            if not path.is_file():
                return f"{name} is missing"
            size = path.stat().st_size
            if size != expected["size"]:
                return f"{name} is truncated or altered ({size} bytes, saved with {expected['size']})"
            if _digest(path) != expected["xxh3_64"]:
                return f"{name} is corrupted (its content differs from what was saved)"
        except OSError as error:
            return f"{name} cannot be read ({error})"
    return None


def require_complete(checkpoint: str | os.PathLike) -> None:
    """Raise a `ValueError` naming the file at fault unless `checkpoint` is complete."""
    problem = checkpoint_problem(checkpoint)
    if problem is None:
        return
    fix = "resume from another checkpoint or pass --overwrite_output_dir true to start over"
    if problem.startswith(f"{MANIFEST_FILE} is missing"):
        mark = f"from clinical_modernbert.checkpoints import mark_complete; mark_complete('{checkpoint}')"
        fix += (". A checkpoint saved before checkpoints were marked complete can be marked once you trust it: "
                f'python -c "{mark}"')
    raise ValueError(f"Checkpoint {checkpoint} cannot be resumed from: {problem}; {fix}")


def set_aside(checkpoint: Path, problem: str) -> Path:
    """Move an incomplete checkpoint to `incomplete/` next to it (out of reach of resumption and rotation)."""
    target = checkpoint.parent / INCOMPLETE_DIR / checkpoint.name
    suffix = 1
    while target.exists():
        suffix += 1
        target = target.with_name(f"{checkpoint.name}.{suffix}")
    target.parent.mkdir(exist_ok=True)
    checkpoint.rename(target)
    logger.warning("Checkpoint: %s is incomplete (%s); set aside in %s", checkpoint, problem, target)
    return target


def rotate_checkpoints(run_dir: str | os.PathLike, save_total_limit: int | None, keep=()) -> None:
    """Delete the oldest complete checkpoints beyond `save_total_limit` complete ones; never those in `keep`.

    Incomplete checkpoints are neither counted nor deleted (resolution sets them aside, with a message).
    """
    if not save_total_limit or save_total_limit <= 0:
        return
    keep = {Path(path).resolve() for path in keep if path}
    complete = [path for path in checkpoints(run_dir) if (path / MANIFEST_FILE).is_file()]
    for path in complete[save_total_limit:]:
        if path.resolve() not in keep:
            logger.info("Checkpoint: deleting %s (save_total_limit %d)", path, save_total_limit)
            shutil.rmtree(path)


def resolve_checkpoint(args) -> str | None:
    """The checkpoint to resume from: the explicit one (which must be complete), else the newest complete one.

    Newer incomplete checkpoints are set aside by the process that saves (the others wait for it). With
    `overwrite_output_dir` the previous run's checkpoints and run facts are deleted: the run starts over.
    """
    if args.resume_from_checkpoint:
        if not Path(args.resume_from_checkpoint).is_dir():
            raise FileNotFoundError(f"resume_from_checkpoint not found: {args.resume_from_checkpoint}")
        require_complete(args.resume_from_checkpoint)
        return str(args.resume_from_checkpoint)
    output_dir = Path(args.output_dir)
    chosen = None
    # every process enters (a barrier): checking first whether output_dir exists would race with its creation
    with args.main_process_first(local=args.save_on_each_node, desc="choosing the checkpoint to resume from"):
        if args.overwrite_output_dir:
            if args.should_save:
                _start_over(output_dir)
            return None
        for checkpoint in checkpoints(output_dir):
            if not args.should_save:  # the saving process has set aside every newer incomplete checkpoint
                if (checkpoint / MANIFEST_FILE).is_file():
                    chosen = checkpoint
                    break
                continue
            problem = checkpoint_problem(checkpoint)
            if problem is None:
                chosen = checkpoint
                break
            set_aside(checkpoint, problem)
    if chosen is not None:
        logger.info("Train: resuming from %s (pass --overwrite_output_dir true to start over)", chosen)
    elif (output_dir / INCOMPLETE_DIR).is_dir():
        logger.info("Train: no complete checkpoint in %s; starting from step 0", output_dir)
    return None if chosen is None else str(chosen)


def _start_over(output_dir: Path) -> None:
    previous = checkpoints(output_dir)
    for path in previous:
        shutil.rmtree(path)
    (output_dir / RUN_FACTS_FILE).unlink(missing_ok=True)
    if previous:
        logger.info("Train: starting over in %s (overwrite_output_dir): deleted %s", output_dir,
                    ", ".join(path.name for path in previous))


def run_is_finished(output_dir: str | os.PathLike, max_steps: int) -> bool:
    """Whether `output_dir` holds a finished run of `max_steps` steps (or more): its final save, which writes
    `run_facts.json` last, is done. A finished run (or training phase) run again is skipped."""
    path = Path(output_dir, RUN_FACTS_FILE)
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text())["steps"] >= max_steps
    except (ValueError, KeyError, TypeError) as error:
        logger.warning("Train: %s is unreadable (%s); the run counts as unfinished", path, error)
        return False
