"""Models-from-code entry point: MLflow runs this file to build the pyfunc (no cloudpickle).

A loaded model has its own `code/` folder first on sys.path, holding `litops_pyfunc.py` (a copy
of litops/register/pyfunc_model.py) and litops.core: it runs that code whether or not litops is
installed. Only while the model is being logged does the wrapper come from the package.
"""

from mlflow.models import set_model

try:
    from litops_pyfunc import LiTPyfunc
except ModuleNotFoundError as e:
    if e.name != "litops_pyfunc":  # the shipped wrapper is there but broken: say so
        raise
    from litops.register.pyfunc_model import LiTPyfunc

set_model(LiTPyfunc())
