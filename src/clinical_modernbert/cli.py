"""The recipes' one entry point: logging, parsing, the run, and a user's mistake reported as one line.

A `ValueError` or `OSError` raised by this project's own code (a check that names the file, source or setting and
the fix) ends the run with that message on stderr and exit code 2, without a traceback; set
CLINICAL_MODERNBERT_DEBUG=1 to see the traceback. Any other exception, or one raised inside a library, keeps its
traceback: it is a bug to report, not a setting to fix.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from .logging_setup import setup_logging
from .parsing import parse_recipe_args

DEBUG_VARIABLE = "CLINICAL_MODERNBERT_DEBUG"
USER_ERROR_EXIT_CODE = 2
PACKAGE_DIR = Path(__file__).resolve().parent


def run_recipe(main: Callable, dataclass_types: Sequence[type], default_config=None) -> None:
    """Set up logging, parse the arguments into `dataclass_types` and call `main(*parsed)`."""
    setup_logging()
    try:
        main(*parse_recipe_args(dataclass_types, default_config=default_config))
    except (ValueError, OSError) as err:
        recipes_dir = Path(main.__code__.co_filename).resolve().parent
        if os.environ.get(DEBUG_VARIABLE) or not raised_by_project(err, (PACKAGE_DIR, recipes_dir)):
            raise
        for bar in list(tqdm._instances):  # an open progress bar would leave the message on its line
            bar.close()
        print(f"error: {err}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)


def raised_by_project(err: BaseException, folders: Sequence[Path]) -> bool:
    """Whether the innermost frame of `err`'s traceback is in `folders` (the package's and the recipe's)."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    path = Path(tb.tb_frame.f_code.co_filename).resolve()
    return any(path.is_relative_to(folder) for folder in folders)
