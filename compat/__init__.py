"""Concrete-ML's example-server protocols, above jobs: the deployment and hybrid-model
protocols under ``/compat/<token>/``, compatibility tokens (and their admin action on API
clients), hybrid models in the registry and the hybrid demo model. Requests become sessions
and jobs through the same services as the REST API."""
