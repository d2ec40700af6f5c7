"""The model registry, above keys: registered model versions (``ModelVersion``, app label
``inference``), registration and its checks of an export, preprocessing files, the demo
models, the per-model metric series and the deploy check of blob storage."""
