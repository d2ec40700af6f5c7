"""The performance benchmark: the service against raw Concrete-ML, measured side by side in one run."""

from base import exit_status

# bench.raw and bench.raw_fhe run circuits in processes that import no Django.
exit_status.install()
