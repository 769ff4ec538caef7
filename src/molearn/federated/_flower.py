"""Flower (``flwr``) client and strategy classes on molearn's client update rules and aggregation rules.

Flower (Beutel et al., "Flower: A Friendly Federated Learning Research Framework", arXiv:2007.14390, 2020)
runs the same federated loop on real deployments and in its Ray-based simulation. This module gives it:

* :class:`MolearnStrategy` -- a ``flwr.server.strategy.FedAvg`` whose ``aggregate_fit`` calls one of
  molearn's aggregation rules (:mod:`molearn.federated._aggregate`) on *named* tensors: ``"fedavg"``
  (:func:`fedavg`), ``"lora_b"`` (:func:`fedavg_lora_b`, Fed-ALoRA: only the LoRA ``B`` entries are
  averaged, ``A`` stays on its client), ``"heterogeneous"`` (:func:`aggregate_heterogeneous`: the clients'
  ``B2 B1`` are folded into the server's ``B_base``), or any callable ``rule(states, weights, state)``.
  The server keeps the global state dict (``strategy.state``); each rule's result updates it, and the
  whole state is broadcast with its key names (``config["keys"]``).
* :class:`StateDictClient` -- a ``flwr.client.NumPyClient`` around three callables (read the state to
  send, load the received state, train and return the number of local examples); clients send their key
  names in ``metrics["keys"]``, so tensors of client-specific shapes (heterogeneous ranks) travel too.
* :class:`OpenFLClient` -- one client of :mod:`molearn.federated._open_fl`: ``E`` local SGD/Adam steps with
  :func:`~molearn.federated._open_fl.local_update`, the rule of the in-process simulator, weighted by
  the client's aggregation weight. With deterministic gradients (no noise, full batches) a Flower run
  equals :func:`~molearn.federated._open_fl.simulate_open_fl` on a static population round by round;
  with stochastic gradients both are samples of the same process (different random streams).

Needs ``flwr`` (``pip install 'molearn[federated]'``; Flower's simulation also needs ``ray``). Tested with
flwr 1.42 (its legacy ``Strategy``/``NumPyClient`` API, which ``flwr.simulation.start_simulation`` and
``ServerApp(server_fn=...)`` both accept).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

try:
    import numpy as np
    from flwr.client import NumPyClient
    from flwr.common import FitIns, FitRes, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"molearn's Flower classes need flwr (and numpy): pip install 'molearn[federated]' ({exc})"
    ) from exc

from molearn.federated._aggregate import aggregate_heterogeneous, fedavg, fedavg_lora_b, is_lora_b
from molearn.federated._open_fl import ClientObjectives, local_update

__all__ = ["MolearnStrategy", "OpenFLClient", "StateDictClient", "aggregation_rule"]

State = dict[str, Tensor]
Rule = Callable[[Sequence[Mapping[str, Tensor]], Sequence[float], Mapping[str, Tensor]], Mapping[str, Tensor]]
KEY_SEP = "\n"


def aggregation_rule(rule: str | Rule, *, is_b: Callable[[str], bool] = is_lora_b) -> Rule:
    """``rule(states, weights, current_state) -> updated entries`` for a name or a callable (kept as is).

    ``"fedavg"``: every key; ``"lora_b"``: the keys selected by ``is_b``; ``"heterogeneous"``: the
    ``lora_B_base`` entries, folded from ``current_state`` (the server's ``B_base``)."""
    if callable(rule):
        return rule
    if rule == "fedavg":
        return lambda states, weights, state: fedavg(states, weights)
    if rule == "lora_b":
        return lambda states, weights, state: fedavg_lora_b(states, weights, is_b=is_b)
    if rule == "heterogeneous":
        return lambda states, weights, state: aggregate_heterogeneous(states, weights, state)
    raise ValueError(f"aggregate must be 'fedavg', 'lora_b', 'heterogeneous' or a callable, got {rule!r}")


def _to_arrays(state: Mapping[str, Tensor], keys: Sequence[str]) -> list[np.ndarray]:
    return [state[k].detach().cpu().numpy() for k in keys]


def _to_state(arrays: Sequence[np.ndarray], keys: Sequence[str], where: str) -> State:
    if len(arrays) != len(keys):
        raise ValueError(f"{where}: {len(arrays)} tensors but {len(keys)} key names")
    return {k: torch.from_numpy(np.array(a, copy=True)) for k, a in zip(keys, arrays, strict=True)}


def _keys(config: Mapping[str, Any], where: str) -> list[str]:
    raw = config.get("keys")
    if not isinstance(raw, str):
        raise ValueError(f"{where}: missing the 'keys' entry naming the tensors (a {KEY_SEP!r}-joined str)")
    return raw.split(KEY_SEP) if raw else []


class MolearnStrategy(FedAvg):
    """FedAvg's client sampling and configuration with a molearn aggregation rule on named state dicts.

    ``initial_state``: the global state broadcast in round 1 (e.g. the model, the LoRA ``B`` entries, or
    the ``B_base`` entries); ``aggregate``: see :func:`aggregation_rule`; clients are weighted by the
    ``num_examples`` they report. Other keywords go to ``FedAvg`` (defaults here: every available client
    trains, ``fraction_evaluate=0`` -- no federated evaluation unless asked for).
    """

    def __init__(
        self,
        initial_state: Mapping[str, Tensor],
        aggregate: str | Rule = "fedavg",
        *,
        is_b: Callable[[str], bool] = is_lora_b,
        **fedavg_kwargs: Any,
    ):
        if not initial_state:
            raise ValueError("initial_state must hold at least one tensor")
        for k in initial_state:
            if KEY_SEP in k:
                raise ValueError(f"state key {k!r} contains a newline")
        self.rule = aggregation_rule(aggregate, is_b=is_b)
        self.state: State = {k: v.detach().clone() for k, v in initial_state.items()}
        fedavg_kwargs.setdefault("fraction_evaluate", 0.0)
        fedavg_kwargs.setdefault("min_evaluate_clients", 0)
        super().__init__(**fedavg_kwargs)

    def __repr__(self) -> str:
        return f"MolearnStrategy(keys={len(self.state)}, accept_failures={self.accept_failures})"

    def _parameters(self) -> Parameters:
        return ndarrays_to_parameters(_to_arrays(self.state, list(self.state)))

    def initialize_parameters(self, client_manager: Any) -> Parameters | None:
        return self._parameters()

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: Any) -> list:
        pairs = super().configure_fit(server_round, parameters, client_manager)
        keys = KEY_SEP.join(self.state)
        return [(c, FitIns(ins.parameters, {**ins.config, "keys": keys})) for c, ins in pairs]

    def aggregate_fit(
        self, server_round: int, results: list[tuple[Any, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Any]]:
        """Decode every client's named tensors, apply the rule, update and return the global state."""
        if not results:
            return None, {}
        if failures and not self.accept_failures:
            return None, {}
        states, weights = [], []
        for i, (_, res) in enumerate(results):
            where = f"round {server_round}, result {i}"
            states.append(_to_state(parameters_to_ndarrays(res.parameters), _keys(res.metrics, where), where))
            weights.append(float(res.num_examples))
        updates = self.rule(states, weights, self.state)
        self.state.update({k: v.detach().clone() for k, v in updates.items()})
        return self._parameters(), {"clients": len(results)}


class StateDictClient(NumPyClient):
    """A Flower client around three callables: ``get_state() -> dict`` (the tensors to send),
    ``set_state(dict)`` (load the received global entries; e.g. ``module.load_state_dict(d, strict=False)``)
    and ``train(config) -> num_examples`` (local training; the count weights the client on the server)."""

    def __init__(
        self,
        get_state: Callable[[], Mapping[str, Tensor]],
        set_state: Callable[[State], None],
        train: Callable[[Mapping[str, Any]], int],
    ):
        self._get, self._set, self._train = get_state, set_state, train

    def get_parameters(self, config: Mapping[str, Any]) -> list[np.ndarray]:
        state = self._get()
        return _to_arrays(state, list(state))

    def fit(self, parameters: list[np.ndarray], config: Mapping[str, Any]) -> tuple[list, int, dict]:
        self._set(_to_state(parameters, _keys(config, "fit config"), "fit"))
        n = int(self._train(config))
        if n <= 0:
            raise ValueError(f"train() must return the number of local examples (> 0), got {n}")
        state = self._get()
        return _to_arrays(state, list(state)), n, {"keys": KEY_SEP.join(state)}


class OpenFLClient(StateDictClient):
    """Client ``index`` of an open-FL universe (:class:`QuadraticClients`, :class:`LogisticClients`): the
    state ``{"x": model}``; ``fit`` runs :func:`local_update` (``local_steps`` SGD or Adam steps) and
    reports the client's aggregation weight as its example count (exact for integer data sizes)."""

    def __init__(
        self,
        objectives: ClientObjectives,
        index: int,
        *,
        local_steps: int = 1,
        lr: float = 0.1,
        optimizer: str = "sgd",
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        seed: int = 0,
    ):
        if not 0 <= index < objectives.num_clients:
            raise ValueError(f"client index {index} out of range 0..{objectives.num_clients - 1}")
        self.objectives, self.index = objectives, index
        self.kw = {"local_steps": local_steps, "lr": lr, "optimizer": optimizer, "betas": betas, "eps": eps}
        self.gen = torch.Generator().manual_seed(seed)
        self.x = torch.zeros(objectives.dim, dtype=objectives.weights.dtype)
        super().__init__(lambda: {"x": self.x}, self._load, self._fit)

    def _load(self, state: State) -> None:
        if "x" not in state or state["x"].shape != self.x.shape:
            raise ValueError(f"expected the entry 'x' of shape {tuple(self.x.shape)}, got {list(state)}")
        self.x = state["x"].to(self.x.dtype)

    def _fit(self, config: Mapping[str, Any]) -> int:
        idx = torch.tensor([self.index])
        self.x = local_update(self.objectives, idx, self.x, gen=self.gen, **self.kw)[0]  # type: ignore[arg-type]
        return max(1, round(float(self.objectives.weights[self.index])))
