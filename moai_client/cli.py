"""``python -m moai_client``: the data owner's command line.

Configuration comes from flags or the environment: ``MOAI_URL``, ``MOAI_API_KEY``
(or ``MOAI_API_KEY_FILE``) and ``MOAI_KEY_DIR`` (default ``~/.moai/keys``), where
the private keys stay.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from moai_client.client import MoaiClient
from moai_client.errors import MoaiApiError, MoaiError
from moai_client.inputs import read_rows


def _api_key(value: str | None) -> str:
    if value:
        return value
    if os.environ.get("MOAI_API_KEY"):
        return os.environ["MOAI_API_KEY"]
    if os.environ.get("MOAI_API_KEY_FILE"):
        return Path(os.environ["MOAI_API_KEY_FILE"]).read_text().strip()
    raise MoaiError("no API key: pass --api-key or set MOAI_API_KEY")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m moai_client", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("MOAI_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=None)
    parser.add_argument(
        "--key-dir", type=Path, default=Path(os.environ.get("MOAI_KEY_DIR", "~/.moai/keys")).expanduser()
    )
    parser.add_argument("--ca-cert", default=None, help="CA bundle that signed the server's certificate")
    parser.add_argument("--client-cert", default=None, help="client certificate, for mTLS deployments")
    parser.add_argument("--client-key", default=None, help="client certificate's private key, for mTLS")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("models", help="list the models the service offers")
    predict = commands.add_parser("predict", help="encrypt rows, run them as one job, decrypt the predictions")
    predict.add_argument("model")
    predict.add_argument(
        "input",
        type=Path,
        help=".npy or .csv file, one sample of raw features per row, in the order `models` lists them;"
        " a CSV may start with a header row of those names",
    )
    predict.add_argument("--context", help="reuse this open session instead of opening a new one")
    predict.add_argument("--keep-session", action="store_true", help="leave a newly opened session open")
    predict.add_argument("--timeout", type=float, default=600.0)
    session = commands.add_parser("session", help="open, show or close a key session")
    session.add_argument("action", choices=["open", "show", "close"])
    session.add_argument("target", help="model name (open) or context id (show, close)")
    job = commands.add_parser("job", help="show a job")
    job.add_argument("job_id")
    return parser


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _run(args: argparse.Namespace) -> None:
    cert = (args.client_cert, args.client_key) if args.client_cert else None
    client = MoaiClient(
        args.url, _api_key(args.api_key), args.key_dir, progress=not args.quiet, verify=args.ca_cert or True, cert=cert
    )
    if args.command == "models":
        _print(client.models())
    elif args.command == "job":
        _print(client.job(args.job_id))
    elif args.command == "session":
        if args.action == "open":
            opened = client.open_session(args.target)
            _print({"context_id": opened.context_id, "model": opened.model, "expires_at": opened.expires_at})
        elif args.action == "show":
            _print(client.session_info(args.target))
        else:
            client.close_session(args.target)
    else:
        _predict(client, args)


def _predict(client: MoaiClient, args: argparse.Namespace) -> None:
    if args.context:
        session = client.resume_session(args.context)
        rows = read_rows(args.input, session.inputs)
    else:
        # Rows are read and checked against the model's features before the keygen, and
        # before any request carrying them: a wrong file costs nothing and sends nothing.
        rows = read_rows(args.input, client.input_spec(args.model))
        session = client.open_session(args.model)
    try:
        prediction = client.predict(session, rows, timeout=args.timeout)
    finally:
        if not args.context and not args.keep_session:
            client.close_session(session.context_id)
    _print(
        {
            "context_id": session.context_id,
            "job_id": prediction.job["job_id"],
            "labels": prediction.labels.tolist(),
            "scores": prediction.scores.round(6).tolist(),
            "seconds": round(prediction.seconds, 3),
        }
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except MoaiApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MoaiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
