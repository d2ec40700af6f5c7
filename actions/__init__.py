"""Cross-layer actions, above jobs: see actions/services.py, the one module that ends
sessions together with their jobs and rotates or disables clients."""
