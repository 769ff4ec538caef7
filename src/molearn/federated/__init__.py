"""Federated learning: aggregation rules (FedAvg, B-only LoRA averaging, heterogeneous-rank folding), the
open federated learning simulator (clients join and leave), and Flower client/strategy classes
(``[federated]`` extra).
"""

from molearn.federated._aggregate import aggregate_heterogeneous, fedavg, fedavg_lora_b, is_lora_b
from molearn.federated._hetero_lora import (
    HeteroLoRALinear,
    hetero_lora_upload,
    inject_hetero_lora,
    load_hetero_base,
)
from molearn.federated._open_fl import (
    BernoulliPoissonProcess,
    FixedSizeReplacement,
    LogisticClients,
    OpenFLTrace,
    PopulationProcess,
    QuadraticClients,
    StaticPopulation,
    local_update,
    random_quadratic_clients,
    sgd_stationary_msd,
    simulate_open_fl,
)

_FLOWER = ("MolearnStrategy", "OpenFLClient", "StateDictClient", "aggregation_rule")


def __getattr__(name: str):  # Flower classes: flwr is imported only when one of them is asked for
    if name in _FLOWER:
        from molearn.federated import _flower

        return getattr(_flower, name)
    raise AttributeError(f"module 'molearn.federated' has no attribute {name!r}")


__all__ = [
    "BernoulliPoissonProcess",
    "FixedSizeReplacement",
    "HeteroLoRALinear",
    "LogisticClients",
    "MolearnStrategy",
    "OpenFLClient",
    "OpenFLTrace",
    "PopulationProcess",
    "QuadraticClients",
    "StateDictClient",
    "StaticPopulation",
    "aggregate_heterogeneous",
    "aggregation_rule",
    "fedavg",
    "fedavg_lora_b",
    "hetero_lora_upload",
    "inject_hetero_lora",
    "is_lora_b",
    "load_hetero_base",
    "local_update",
    "random_quadratic_clients",
    "sgd_stationary_msd",
    "simulate_open_fl",
]
