"""gunicorn reads ./gunicorn.conf.py by default; the settings live in moai_site/gunicorn.conf.py.

This lets ``gunicorn moai_site.wsgi`` run with them as written in API.md and the runbook.
"""

from pathlib import Path

exec(
    compile(
        (Path(__file__).parent / "moai_site" / "gunicorn.conf.py").read_text(), "moai_site/gunicorn.conf.py", "exec"
    )
)
