"""Keep a stage command's lifetime tied to whoever started it.

Ray Jobs runs an entrypoint in a session of its own, so when the job's supervisor dies (the
pipeline that started an embedded cluster was killed) the stage command would live on as an
orphan, still writing its folder. ``exit_with_parent`` watches the parent and, when it is gone,
ends the command's process group (the stage and its trainer) so a rerun finds the folder free.
"""

from __future__ import annotations

import os
import signal
import threading
import time

ENV = "MEDSAGE_EXIT_WITH_PARENT"


def exit_with_parent(poll_s: float = 1.0) -> None:
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        try:
            if os.getpgrp() == os.getpid():  # we lead our group: take our children with us
                os.killpg(os.getpgrp(), signal.SIGTERM)
        finally:
            os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
