"""The performance benchmark: the service against raw Concrete-ML, measured side by side in one run."""
