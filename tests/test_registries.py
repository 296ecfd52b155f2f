"""The registries of compare's methods and of the command line's networks: the
built-in entries are there in their order, a new entry reaches every place that
reads the registry (stages, keys, preset fields, overrides, smoke, compare.json's
settings, --model choices), and bad entries are refused naming the field."""

from __future__ import annotations

import dataclasses

import pytest

import weightspace as ws
from weightspace.cli import build_parser
from weightspace.experiments import methods, presets, rebuild
from weightspace.experiments.comparison import settings

BUILT_IN = ("hmc", "sgd", "deep_ensemble", "sgld", "csghmc", "mfvi")
# Shipped methods registered after the built-in six (stage keys 10 and 11).
SHIPPED = (*BUILT_IN, "mams", "mile")


@dataclasses.dataclass(frozen=True)
class ToySettings:
    num_samples: int = 10
    step_size: float = 0.1


def _stage(run):
    return {}


@pytest.fixture
def toy():
    method = ws.experiments.register_method(ws.experiments.Method(
        "toy", "toy sampler", _stage, settings=ToySettings, needs=("sgd",),
        llc_positions=lambda run: [(0, 0)],
        smoke=lambda s: dataclasses.replace(s, num_samples=2)))
    try:
        yield method
    finally:
        methods.unregister("toy")


def test_the_built_in_methods_are_registered_in_order_with_their_keys():
    assert methods.names() == SHIPPED
    assert tuple(ws.experiments.comparison.METHODS) == SHIPPED
    assert ws.experiments.comparison.LABELS["csghmc"] == "cyclical SGHMC"
    assert ws.experiments.comparison.STAGES == (*SHIPPED, "rhat", "metrics", "llc", "report")
    # The built-in six and the analyses keep keys 0-9 (their draws did not change
    # when mams and mile came), the later methods follow.
    assert [settings.key_number(s) for s in settings.stages()] == [0, 1, 2, 3, 4, 5, 10, 11,
                                                                  6, 7, 8, 9]
    assert settings.llc_methods() == ("sgd", "deep_ensemble", "hmc")
    assert settings.needs("mfvi") == ("sgd",) and settings.needs("rhat") == ("hmc",)


def test_a_registered_method_reaches_stages_keys_fields_smoke_and_settings(toy):
    assert settings.stages() == (*SHIPPED, "toy", "rhat", "metrics", "llc", "report")
    assert settings.key_number("toy") == 12 and settings.key_number("rhat") == 6
    assert settings.llc_methods() == ("sgd", "deep_ensemble", "hmc", "toy")
    assert settings.needs("toy") == ("sgd",) and "toy" in settings.uses("metrics")
    assert {"toy.num_samples", "toy.step_size"} <= set(presets.fields())
    quick = presets.get("quick")
    assert quick.settings("toy") == ToySettings()
    assert quick.to_dict()["toy"] == {"num_samples": 10, "step_size": 0.1}
    assert presets.smoke(quick).settings("toy").num_samples == 2
    changed = presets.override(quick, {"toy.step_size": 1})
    assert changed.settings("toy") == ToySettings(step_size=1.0)
    with pytest.raises(ValueError, match=r"toy.num_samples='many' is not allowed"):
        presets.override(quick, {"toy.num_samples": "many"})


def test_unregistering_restores_the_built_in_stages(toy):
    methods.unregister("toy")
    assert settings.stages()[:9] == (*SHIPPED, "rhat")
    with pytest.raises(ValueError, match=r"method='toy' is not a registered method"):
        presets.get("quick").settings("toy")


@pytest.mark.parametrize("kwargs, error, match", [
    ({"name": "my method"}, ValueError, r"name='my method' is not allowed: it must be an "
                                        r"identifier"),
    ({"run": 3}, TypeError, r"run must be callable"),
    ({"members": "models"}, ValueError, r"members='models' is not allowed"),
    ({"settings": dict}, TypeError, r"settings must be a dataclass type"),
    ({"settings": ToySettings, "smoke": None}, ValueError, r"has settings but no smoke"),
])
def test_bad_methods_are_refused_naming_the_field(kwargs, error, match):
    fields = {"name": "toy", "label": "toy", "run": _stage, **kwargs}
    with pytest.raises(error, match=match):
        methods.Method(**fields)


@pytest.mark.parametrize("name, needs, match", [
    ("hmc", (), r"a method named 'hmc' is registered already"),
    ("rhat", (), r"name='rhat' is not allowed: it is a stage or preset field"),
    ("toy", ("nuts",), r"method 'toy' needs \['nuts'\], which are not registered"),
])
def test_bad_registrations_are_refused(name, needs, match):
    with pytest.raises(ValueError, match=match):
        methods.register(methods.Method(name, name, _stage, needs=needs))
    assert methods.names() == SHIPPED


def test_a_registered_network_is_a_model_choice_and_rebuilds(digits):
    assert tuple(rebuild.NETWORKS) == rebuild.MODELS
    assert rebuild.network("mlp", (4,), digits) == ws.models.MLP((4,), 10)
    rebuild.register_network("wide", lambda hidden, data, outputs: ws.models.MLP((64,),
                                                                                  outputs))
    try:
        assert rebuild.network("wide", None, digits) == ws.models.MLP((64,), 10)
        args = build_parser().parse_args(["sample", "--model", "wide", "--out", "x"])
        assert args.model == "wide"
        with pytest.raises(ValueError, match=r"name='wide' is not allowed"):
            rebuild.register_network("wide", lambda *a: None)
    finally:
        rebuild.NETWORKS.pop("wide")
    with pytest.raises(ValueError, match=r"model='wide' is not allowed: choose one of 'mlp'"):
        rebuild.network("wide", (), digits)
