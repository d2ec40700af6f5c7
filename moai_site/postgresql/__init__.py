"""The PostgreSQL backend the service runs on (``DATABASES["default"]["ENGINE"]``); see ``base``."""
