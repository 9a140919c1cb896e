"""The code a logged pyfunc ships (MLflow `code_paths`), so it loads where litops is not installed.

MLflow copies each code path into the model's `code/` folder and puts that folder first on
sys.path when it loads the model. The staged layout is therefore importable as is:

    litops/core/...      the model package, whole (no litops/__init__.py: `litops` stays a
                         namespace package, so an installed litops still resolves its other parts)
    litops_pyfunc.py     the pyfunc class (litops/register/pyfunc_model.py)

The wrapper gets a top-level name of its own rather than `litops/register/`: under a regular
(non-editable) install, a partial `litops.register` first on sys.path would hide the installed
one (its registry, CLI) in any process that loads a model before importing it. Orchestration
(flows, Prefect, DVC) never ships.
"""

from __future__ import annotations

import shutil
from pathlib import Path

WRAPPER_MODULE = "litops_pyfunc"  # the name pyfunc_entry.py imports
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "Dockerfile")


def core_package_dir() -> Path:
    """Where this process imports litops.core from (the source folder under an editable install)."""
    import litops.core

    return Path(litops.core.__file__).resolve().parent


def stage_code(dest: Path) -> list[str]:
    """Lay out the shipped code under `dest`; returns the paths to pass as `code_paths`."""
    dest = Path(dest)
    package_root = dest / "litops"
    shutil.copytree(core_package_dir(), package_root / "core", ignore=_SKIP)
    wrapper = dest / f"{WRAPPER_MODULE}.py"
    shutil.copyfile(Path(__file__).with_name("pyfunc_model.py"), wrapper)
    return [str(package_root), str(wrapper)]
