"""The data owner's side of MOAI: keys, encryption, jobs and decryption."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from moai_client import preprocessing
from moai_client.errors import MoaiApiError, MoaiError, MoaiJobFailed, MoaiTimeout
from moai_client.http import Http
from moai_client.inputs import InputSpec
from moai_client.quiet import fhe_model_client, library_notices

PREPROCESSING_FILE = "preprocessing.skops"
MODEL_INFO_FILE = "model.json"

FINISHED = {"succeeded", "failed", "cancelled"}


@dataclass
class Session:
    """An open key session: the context id plus the local FHE client that made its keys."""

    context_id: str
    model: str
    model_version: int
    expires_at: str
    key_fingerprint: str
    fhe: Any = field(repr=False)
    inputs: InputSpec = field(repr=False)

    def encrypt(self, X: Any) -> list[bytes]:
        """One ciphertext per row of raw features: checked and preprocessed first (MoaiError if
        they are not the model's features), then quantized and encrypted, one sample each."""
        rows = self.inputs.prepare(X)
        return [self.fhe.quantize_encrypt_serialize(rows[i : i + 1]) for i in range(rows.shape[0])]

    def decrypt(self, outputs: list[bytes]) -> np.ndarray:
        """Decrypted, dequantized model outputs (class probabilities for classifiers), one row per input."""
        return np.vstack([self.fhe.deserialize_decrypt_dequantize(out) for out in outputs])


@dataclass
class Prediction:
    scores: np.ndarray
    job: dict[str, Any]
    seconds: float

    @property
    def labels(self) -> np.ndarray:
        return np.argmax(self.scores, axis=1) if self.scores.ndim == 2 and self.scores.shape[1] > 1 else self.scores


class MoaiClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        key_dir: str | Path,
        *,
        timeout: float = 60.0,
        progress: bool = True,
        verify: bool | str = True,
        cert: tuple[str, str] | None = None,
    ) -> None:
        self.http = Http(base_url, api_key, timeout=timeout, verify=verify, cert=cert, progress=progress)
        self.key_dir = Path(key_dir)
        self.progress = progress

    # Models
    def models(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.http.json("GET", "models")
        return result

    def model(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.http.json("GET", f"models/{name}")
        return result

    def input_spec(self, name: str) -> InputSpec:
        """What the newest version of ``name`` takes (features, preprocessing), with no keygen and no rows sent."""
        folder, info = self._download(name)
        return _input_spec(folder, info)

    def _download(self, name: str) -> tuple[Path, dict[str, Any]]:
        """The model's client.zip and preprocessing, downloaded once per version into the key directory."""
        info = self.model(name)
        folder = self.key_dir / f"{name}-v{info['version']}"
        folder.mkdir(parents=True, exist_ok=True)
        # Each file is kept under the name of the endpoint that serves it.
        for part in ["client.zip", *([PREPROCESSING_FILE] if info.get("preprocessing") else [])]:
            if (folder / part).exists():
                continue
            response = self.http.request("GET", f"models/{name}/{part}")
            if response.headers.get("X-Moai-Model-Version", str(info["version"])) != str(info["version"]):
                raise MoaiError(f"a new version of {name} was registered during the download; try again")
            partial = folder / f"{part}.part"
            partial.write_bytes(response.content)
            partial.replace(folder / part)
        # A resumed session needs the version's features and preprocessing digest, not the newest version's.
        (folder / MODEL_INFO_FILE).write_text(json.dumps(info))
        return folder, info

    # Sessions
    def open_session(self, name: str) -> Session:
        """Generate keys locally (once per model version) and upload only the evaluation keys."""
        folder, info = self._download(name)
        inputs = _input_spec(folder, info)
        fhe = fhe_model_client()(str(folder), key_dir=str(folder / "keys"))
        with tqdm(total=1, desc=f"keygen {name}", disable=not self.progress, leave=False) as bar:
            with library_notices():
                fhe.generate_private_and_evaluation_keys()
            evaluation_keys = fhe.get_serialized_evaluation_keys()
            bar.update(1)
        body = self.http.upload(f"models/{name}/sessions", evaluation_keys, f"upload keys {name}")
        return Session(
            context_id=body["context_id"],
            model=body["model"],
            model_version=body["model_version"],
            expires_at=body["expires_at"],
            key_fingerprint=body["key_fingerprint"],
            fhe=fhe,
            inputs=inputs,
        )

    def resume_session(self, context_id: str) -> Session:
        """Reattach to a session opened earlier from this key directory (for example by another CLI call)."""
        info = self.session_info(context_id)
        folder = self.key_dir / f"{info['model']}-v{info['model_version']}"
        if not (folder / "client.zip").exists():
            raise MoaiError(f"no keys for {info['model']} v{info['model_version']} in {self.key_dir}")
        if not (folder / MODEL_INFO_FILE).exists():
            raise MoaiError(f"{folder} was set up by an older client, without the model's features: open a new session")
        inputs = _input_spec(folder, json.loads((folder / MODEL_INFO_FILE).read_text()))
        fhe = fhe_model_client()(str(folder), key_dir=str(folder / "keys"))
        with library_notices():
            fhe.generate_private_and_evaluation_keys(force=False)  # loads the cached key set
        if hashlib.sha256(fhe.get_serialized_evaluation_keys()).hexdigest() != info["key_fingerprint"]:
            raise MoaiError(f"the keys in {folder} are not the ones session {context_id} was opened with")
        return Session(
            context_id=context_id,
            model=info["model"],
            model_version=info["model_version"],
            expires_at=info["expires_at"],
            key_fingerprint=info["key_fingerprint"],
            fhe=fhe,
            inputs=inputs,
        )

    def session_info(self, context_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.http.json("GET", f"sessions/{context_id}")
        return result

    def close_session(self, context_id: str) -> None:
        self.http.request("DELETE", f"sessions/{context_id}")

    # Jobs
    def submit(self, session: Session, ciphertexts: list[bytes], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        path = f"sessions/{session.context_id}/jobs"
        if len(ciphertexts) == 1:
            job: dict[str, Any] = self.http.json(
                "POST", path, data=ciphertexts[0], headers={"Content-Type": "application/octet-stream", **headers}
            )
            return job
        files = [("inputs", (f"{i}.bin", ct, "application/octet-stream")) for i, ct in enumerate(ciphertexts)]
        job = self.http.json("POST", path, files=files, headers=headers)
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.http.json("GET", f"jobs/{job_id}")
        return result

    def cancel(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.http.json("DELETE", f"jobs/{job_id}")
        return result

    def wait(self, job_id: str, timeout: float = 600.0) -> dict[str, Any]:
        """Wait until the job ends, the server holding each request up to 20 s; MoaiJobFailed unless it succeeded."""
        deadline = time.monotonic() + timeout
        with tqdm(
            desc=f"job {job_id[:8]}", disable=not self.progress, leave=False, bar_format="{desc}: {elapsed} {postfix}"
        ) as bar:
            while True:
                hold = max(0.0, min(20.0, deadline - time.monotonic()))
                job: dict[str, Any] = self.http.json(
                    "GET", f"jobs/{job_id}", params={"wait": f"{hold:.3f}"}, timeout=hold + self.http.timeout
                )
                bar.set_postfix_str(job["status"])
                if job["status"] in FINISHED:
                    break
                if time.monotonic() >= deadline:
                    raise MoaiTimeout(f"job {job_id} still {job['status']} after {timeout} s")
        if job["status"] != "succeeded":
            raise MoaiJobFailed(job)
        return job

    def results(self, job: dict[str, Any]) -> list[bytes]:
        """The outputs of a job that has ended (see ``outputs`` to wait for them)."""
        return [self._output(job["job_id"], i) for i in range(job["inputs"])]

    def outputs(self, job: dict[str, Any], timeout: float = 600.0) -> list[bytes]:
        """The outputs of a submitted job, as soon as it ends: the first download waits on the
        server (``?wait=``), so a job costs two requests, submit and result, and no polling.
        MoaiJobFailed if the job did not succeed."""
        first = self._first_output(job["job_id"], timeout)
        return [first, *(self._output(job["job_id"], i) for i in range(1, job["inputs"]))]

    def _output(self, job_id: str, index: int, wait: float | None = None) -> bytes:
        params: dict[str, Any] = {"index": index}
        timeout = self.http.timeout
        if wait is not None:
            params["wait"] = f"{wait:.3f}"
            timeout += wait
        return self.http.request("GET", f"jobs/{job_id}/result", params=params, timeout=timeout).content

    def _first_output(self, job_id: str, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        with tqdm(desc=f"job {job_id[:8]}", disable=not self.progress, leave=False, bar_format="{desc}: {elapsed}"):
            while True:
                try:
                    return self._output(job_id, 0, wait=max(0.0, min(20.0, deadline - time.monotonic())))
                except MoaiApiError as exc:
                    if exc.code == "job_failed":
                        raise MoaiJobFailed(self.job(job_id)) from None
                    if exc.code != "job_not_finished":
                        raise
                if time.monotonic() >= deadline:
                    raise MoaiTimeout(f"job {job_id} not finished after {timeout} s")

    def run_one(
        self, session: Session, ciphertext: bytes, timeout: float = 600.0, idempotency_key: str | None = None
    ) -> tuple[dict[str, Any], bytes]:
        """Submit one input and get its output, in one round trip when the job ends within 20 s.

        ``POST .../jobs?wait=`` answers with the output bytes (200) when the job ends in
        time, else with the job (202), whose output is then awaited as for any job. A retry
        with the same ``idempotency_key`` returns the same job's output, never a second job.
        MoaiJobFailed if the job did not succeed."""
        key = idempotency_key or str(uuid.uuid4())
        hold = max(0.0, min(20.0, timeout))
        try:
            response = self.http.request(
                "POST",
                f"sessions/{session.context_id}/jobs",
                params={"wait": f"{hold:.3f}"},
                data=ciphertext,
                headers={"Content-Type": "application/octet-stream", "Idempotency-Key": key},
                timeout=hold + self.http.timeout,
            )
        except MoaiApiError as exc:
            if exc.code == "job_failed" and "job_id" in exc.details:
                raise MoaiJobFailed(self.job(str(exc.details["job_id"]))) from None
            raise
        if response.status_code == 200:
            job_id = response.headers["X-Moai-Job-Id"]
            return {"job_id": job_id, "status": "succeeded", "inputs": 1}, response.content
        job: dict[str, Any] = response.json()
        return job, self.outputs(job, timeout=timeout)[0]

    def predict(self, session: Session, X: Any, timeout: float = 600.0) -> Prediction:
        """Encrypt each row of raw features, run them as one job, wait for its outputs, and decrypt them.

        One row takes one round trip (``run_one``); several run as one batch job.
        Rows that are not the model's features are refused (MoaiError) before any request."""
        started = time.perf_counter()
        ciphertexts = session.encrypt(X)
        if len(ciphertexts) == 1:
            job, output = self.run_one(session, ciphertexts[0], timeout=timeout)
            scores = session.decrypt([output])
            return Prediction(scores=scores, job=job, seconds=time.perf_counter() - started)
        job = self.submit(session, ciphertexts)
        scores = session.decrypt(self.outputs(job, timeout=timeout))
        # Only a job that succeeded has outputs: the job as submitted, with that status.
        job = {**job, "status": "succeeded"}
        return Prediction(scores=scores, job=job, seconds=time.perf_counter() - started)


def _input_spec(folder: Path, info: dict[str, Any]) -> InputSpec:
    """The version's features, with its preprocessing loaded safely and checked against the registered digest."""
    if not info.get("preprocessing"):
        return InputSpec.of(info, None)
    data = (folder / PREPROCESSING_FILE).read_bytes()
    if hashlib.sha256(data).hexdigest() != info.get("preprocessing_sha256"):
        raise MoaiError(f"{folder / PREPROCESSING_FILE} is not the preprocessing registered for this model version")
    return InputSpec.of(info, preprocessing.load(data))
