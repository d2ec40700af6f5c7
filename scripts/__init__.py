"""Developer tooling: starting the web and worker processes together, and the demo."""
