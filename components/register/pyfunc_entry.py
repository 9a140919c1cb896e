"""Models-from-code entry point: MLflow runs this file to build the pyfunc (no cloudpickle)."""

from mlflow.models import set_model

from litops.register.pyfunc import LiTPyfunc

set_model(LiTPyfunc())
