"""Imported last by the warm-start server (flows/warm_start.py): creating the file its parent named
says every import before it is done, so a light step can fork from the server without waiting."""

import os

_path = os.environ.get("LITOPS_WARM_READY_FILE")
if _path:
    try:
        open(_path, "w").close()
    except OSError:
        pass
