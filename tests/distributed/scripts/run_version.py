"""Each torchrun rank asks NeMoLogger for its run directory, rank 1 a second later than rank 0
(so their clocks give different timestamps); each writes what it got to OUT/<rank>.txt."""

import os
import sys
import time
from pathlib import Path

from nemo_lite.lightning.nemo_logger import NeMoLogger

log_dir, out = sys.argv[1], Path(sys.argv[2])
rank = int(os.environ["RANK"])
time.sleep(1.5 * rank)
(out / f"{rank}.txt").write_text(str(NeMoLogger(name="v", log_dir=log_dir).run_dir()))
