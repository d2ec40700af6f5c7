"""The hybrid demo model: a small torch MLP whose two linear layers run on MOAI under FHE.

``build`` trains it on scikit-learn's bundled breast-cancer data (nothing is downloaded),
hybrid-compiles ``seq.0`` and ``seq.2`` with Concrete-ML and writes, under the folder:
``server/`` (``save_and_clear_private_info``: what ``register_hybrid_model`` takes),
``weights.pt`` (the trained model, which the client side keeps) and ``samples.npz``
(held-out standardized rows, the clear model's outputs and the local FHE simulation's).
``remote_model`` is the data owner's side: an unmodified ``HybridFHEModel`` in remote mode.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODULES = ("seq.0", "seq.2")
SAMPLES = 4
# Small weights and activations: compiling takes well under a second.
N_BITS = 8


def _mlp() -> Any:
    from torch import nn

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.seq = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 2))

        def forward(self, x: Any) -> Any:
            return self.seq(x)

    return MLP()


@dataclass(frozen=True)
class HybridBuild:
    folder: Path

    @property
    def server_folder(self) -> Path:
        return self.folder / "server"

    def samples(self) -> dict[str, np.ndarray]:
        return dict(np.load(self.folder / "samples.npz"))


def build(folder: Path) -> HybridBuild:
    import torch
    from concrete.ml.torch.hybrid_model import HybridFHEModel
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    torch.manual_seed(0)
    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, _ = train_test_split(X, y, test_size=0.2, random_state=0)
    scaler = StandardScaler().fit(X_train)
    train_x = torch.tensor(scaler.transform(X_train), dtype=torch.float32)
    test_x = torch.tensor(scaler.transform(X_test[:SAMPLES]), dtype=torch.float32)
    model = _mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(100):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(train_x), torch.tensor(y_train))
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it untyped
        optimizer.step()
    shutil.rmtree(folder, ignore_errors=True)  # FHEModelDev refuses to write into a folder that has files
    folder.mkdir(parents=True)
    torch.save(model.state_dict(), folder / "weights.pt")
    with torch.no_grad():
        clear = model(test_x).numpy()
    hybrid = HybridFHEModel(model, list(MODULES))
    hybrid.compile_model(train_x, n_bits=N_BITS)
    with torch.no_grad():
        simulated = hybrid(test_x, fhe="simulate").numpy()
    direct = _direct_forward_seconds(hybrid, test_x)
    hybrid.save_and_clear_private_info(folder / "server")
    np.savez(folder / "samples.npz", X=test_x.numpy(), clear=clear, simulated=simulated, direct_seconds=direct)
    return HybridBuild(folder)


def _direct_forward_seconds(hybrid: Any, rows: Any) -> np.ndarray:
    """Seconds per one-row forward with the layers run under FHE in this process (keys made
    beforehand): the cost without any server, for comparison with a forward through MOAI."""
    import torch

    with torch.no_grad():
        hybrid(rows[:1], fhe="execute")  # keygen and circuit loading, once
        seconds = []
        for row in range(len(rows)):
            started = time.perf_counter()
            hybrid(rows[row : row + 1], fhe="execute")
            seconds.append(time.perf_counter() - started)
    return np.array(seconds)


def remote_model(built: HybridBuild, url: str, model_name: str, work: Path) -> Any:
    """The client side, as Concrete-ML documents it: its own copy of the model, wrapped, keys made
    locally and uploaded, the chosen layers then run remotely at ``url`` on every forward."""
    import torch
    from concrete.ml.torch.hybrid_model import HybridFHEModel

    model = _mlp()
    model.load_state_dict(torch.load(built.folder / "weights.pt"))
    hybrid = HybridFHEModel(model, list(MODULES), server_remote_address=url, model_name=model_name)
    (work / "clients").mkdir(parents=True, exist_ok=True)
    hybrid.init_client(path_to_clients=work / "clients", path_to_keys=work / "keys")
    hybrid.set_fhe_mode("remote")
    return hybrid
