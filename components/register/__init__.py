"""litops.register: the MLflow pyfunc wrapper, registration, the promotion gate, promote/rollback.

`gate` is pure (no MLflow); `registry` and `pyfunc` import MLflow. Import submodules explicitly.
"""
