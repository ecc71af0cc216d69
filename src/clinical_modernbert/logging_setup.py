"""One logging setup for every recipe: INFO on the main process, warnings only on the others."""

from __future__ import annotations

import logging
import os
import sys

from accelerate.utils import get_int_from_env
from datasets.utils import logging as datasets_logging
from transformers.utils import logging as transformers_logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Where launchers put the global rank: torchrun / `accelerate launch`, then the MPI implementations.
RANK_VARIABLES = ["RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "PMI_RANK"]
# Set to INFO (or DEBUG) to see what every process does, e.g. when one of them misbehaves.
REPLICA_LOG_LEVEL = "CLINICAL_MODERNBERT_REPLICA_LOG_LEVEL"


def setup_logging() -> None:
    """Log to stdout at INFO on the main process (global rank 0) and at WARNING on every other process (or at the
    level named by the environment variable CLINICAL_MODERNBERT_REPLICA_LOG_LEVEL).

    Called first thing in a recipe, before any Trainer or process group exists, so the rank is read from the
    launcher's environment. `transformers` and `datasets` log warnings only, on every process.
    """
    replica_level = os.environ.get(REPLICA_LOG_LEVEL, "WARNING").upper()
    if replica_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"{REPLICA_LOG_LEVEL}={replica_level!r}: use DEBUG, INFO, WARNING or ERROR")
    level = logging.INFO if get_int_from_env(RANK_VARIABLES, 0) == 0 else getattr(logging, replica_level)
    logging.basicConfig(format=FORMAT, level=level, handlers=[logging.StreamHandler(sys.stdout)], force=True)
    transformers_logging.set_verbosity_warning()
    datasets_logging.set_verbosity_warning()
