"""Rebuilding the posterior of a run directory from its command.json.

`weightspace sample` writes RUN_DIR/command.json before sampling: the dataset,
network, prior, temperature, seed and sampler of the run (`REBUILD_KEYS`), so
that later commands (`weightspace llc --run`, `weightspace mixing --run`) and
notebooks rebuild the same posterior:

    command = read_command("runs/hmc")
    data, network, post = from_command(command)
    trace = ws.samplers.load("runs/hmc", template=post.init(key))

data_dir says where the data are, not which: it may change between a run and
its resume.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from weightspace import data as data_lib
from weightspace import models
from weightspace.jsonio import read_json

COMMAND_FORMAT = 1
REBUILD_KEYS = ("dataset", "data_dir", "n_train", "model", "hidden", "prior_variance",
                "temperature", "seed", "sampler")


class RebuildError(ValueError):
    """A run directory whose posterior cannot be rebuilt (names the directory and why)."""


def _cnnlstm(hidden, data, outputs):
    return models.CNNLSTM(vocab_size=data.info.get("vocab_size", 20000), num_outputs=outputs)


# The networks `weightspace sample --model NAME` builds, one entry each:
# name -> build(hidden widths, data, outputs) -> a ws.models network. The command
# line's --model choices are this registry's names.
NETWORKS: dict[str, Callable[[tuple, Any, int], Any]] = {
    "mlp": lambda hidden, data, outputs: models.MLP(tuple(hidden), outputs),
    "linear": lambda hidden, data, outputs: models.MLP((), outputs),
    "lenet5": lambda hidden, data, outputs: models.LeNet5(outputs),
    "resnet20frn": lambda hidden, data, outputs: models.ResNet20FRN(outputs),
    "cnnlstm": _cnnlstm,
}
MODELS = tuple(NETWORKS)  # the built-in names (NETWORKS is the registry)


def register_network(name: str, build: Callable[[tuple, Any, int], Any]) -> None:
    """Offer a network to `weightspace sample --model NAME` (and to runs rebuilt
    from command.json): build(hidden widths, data, outputs) -> network."""
    if not isinstance(name, str) or not name or name in NETWORKS:
        raise ValueError(f"name={name!r} is not allowed: it must be a new, non-empty name "
                         f"(taken: {', '.join(NETWORKS)})")
    if not callable(build):
        raise TypeError(f"build must be callable; got {build!r}")
    NETWORKS[name] = build


def network(model: str, hidden, data):
    """The network `model` (a name of NETWORKS; `hidden`: the MLP's hidden widths)
    with the outputs of `data` (its classes, or its target dimensions)."""
    outputs = data.num_classes if data.num_classes is not None else data.y_train.shape[1]
    if model not in NETWORKS:
        raise ValueError(f"model={model!r} is not allowed: choose one of "
                         f"{', '.join(map(repr, NETWORKS))}")
    return NETWORKS[model](tuple(hidden or ()), data, outputs)


def from_command(command: dict, mesh=None):
    """(data, network, posterior) of a command.json; with a mesh, the training
    rows are sharded over it (in a multi-process job each process loads only
    its own)."""
    data = data_lib.load(command["dataset"], seed=command["seed"],
                         data_dir=command["data_dir"], n_train=command["n_train"], mesh=mesh)
    net = network(command["model"], command["hidden"] or (), data)
    post = models.posterior(net, data, prior_variance=command["prior_variance"],
                            temperature=command["temperature"], mesh=mesh)
    return data, net, post


def _where(run_dir, name: str) -> str:
    """How errors name the run directory: `--run DIR` for a flag, else run_dir='DIR'."""
    return f"{name} {run_dir}" if name.startswith("--") else f"{name}={str(run_dir)!r}"


def check_run_dir(run_dir, name: str = "run_dir") -> Path:
    """`run_dir` as a Path if it is a run directory (it holds config.json), else
    a RebuildError naming it as `name` (e.g. "--run" for the command line)."""
    run_dir = Path(run_dir)
    where = _where(run_dir, name)
    if not run_dir.is_dir():
        raise RebuildError(f"{where}: no such directory")
    if not (run_dir / "config.json").is_file():
        raise RebuildError(f"{where} is not a run directory (no config.json)")
    return run_dir


def read_command(run_dir, name: str = "run_dir") -> dict:
    """The command.json of a run directory, checked to hold every key of
    REBUILD_KEYS in this format; errors name the directory as `name`."""
    run_dir = check_run_dir(run_dir, name)
    where = _where(run_dir, name)
    path = run_dir / "command.json"
    if not path.is_file():
        raise RebuildError(f"{where} has no command.json: it was not made by `weightspace "
                           f"sample`, so its posterior cannot be rebuilt from it")
    command = read_json(path)
    missing = [k for k in REBUILD_KEYS if k not in command]
    if command.get("format") != COMMAND_FORMAT or missing:
        raise RebuildError(f"{path} is not a command.json of this version (format "
                           f"{command.get('format')!r}, missing {missing})")
    return command
