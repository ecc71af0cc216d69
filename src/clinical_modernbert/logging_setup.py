"""One logging setup for every recipe: INFO on the main process, warnings only on the others."""

from __future__ import annotations

import logging
import sys

from accelerate.utils import get_int_from_env
from datasets.utils import logging as datasets_logging
from transformers.utils import logging as transformers_logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Where launchers put the global rank: torchrun / `accelerate launch`, then the MPI implementations.
RANK_VARIABLES = ["RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "PMI_RANK"]


def setup_logging() -> None:
    """Log to stdout at INFO on the main process (global rank 0) and at WARNING on every other process.

    Called first thing in a recipe, before any Trainer or process group exists, so the rank is read from the
    launcher's environment. `transformers` and `datasets` log warnings only, on every process.
    """
    level = logging.INFO if get_int_from_env(RANK_VARIABLES, 0) == 0 else logging.WARNING
    logging.basicConfig(format=FORMAT, level=level, handlers=[logging.StreamHandler(sys.stdout)], force=True)
    transformers_logging.set_verbosity_warning()
    datasets_logging.set_verbosity_warning()
