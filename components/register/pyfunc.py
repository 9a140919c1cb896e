"""Log an exported LiT model file as a self-contained MLflow pyfunc.

The logged model carries its code (litops.register.pyfunc_code) and pins its PyPI
requirements (litops.register.pyfunc_requirements), so `mlflow.pyfunc.load_model` and
`mlflow models serve` work in an environment built from its requirements.txt alone. The class
it runs is litops.register.pyfunc_model.LiTPyfunc.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import mlflow.pyfunc

from litops.register.pyfunc_code import stage_code
from litops.register.pyfunc_model import IMAGE_COL, IMAGE_OUT, MODEL_ARTIFACT, TEXT_COL, TEXT_OUT
from litops.register.pyfunc_model import LiTPyfunc  # noqa: F401  models logged without code/ import it from here
from litops.register.pyfunc_requirements import model_config, pip_requirements

ENTRY_FILE = Path(__file__).with_name("pyfunc_entry.py")  # models-from-code: no cloudpickle


def signature():
    """Inputs: image (binary), text (string), both optional. Outputs: float arrays, optional."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, Schema

    inputs = Schema([ColSpec(DataType.binary, IMAGE_COL, required=False),
                     ColSpec(DataType.string, TEXT_COL, required=False)])
    outputs = Schema([ColSpec(Array(DataType.float), IMAGE_OUT, required=False),
                      ColSpec(Array(DataType.float), TEXT_OUT, required=False)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_pyfunc(model_file: str, name: str = "model"):
    """Log the pyfunc into the active run; returns MLflow's ModelInfo. Fast: no env inference."""
    requirements = pip_requirements(model_config(str(model_file)))
    with tempfile.TemporaryDirectory(prefix="litops-pyfunc-code-") as staging, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(ENTRY_FILE),
            code_paths=stage_code(Path(staging)),
            artifacts={MODEL_ARTIFACT: str(model_file)},
            signature=signature(),
            pip_requirements=requirements,
            metadata={"litops": "LiT image-text embedder; ships litops.core in code/, needs only requirements.txt"},
        )
