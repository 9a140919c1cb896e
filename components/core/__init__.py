"""litops.core: the shared model and fused-loss package.

Depends on torch only (plus webdataset for reading shards). Never imports Prefect, MLflow or
DVC, so it runs on a bare GPU machine. Import submodules explicitly; this file stays light.
"""
