"""Operations: the audit log, error format, health checks, metrics, logging and ops commands."""
