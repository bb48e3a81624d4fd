"""The one registry class, and every registry of the project built on it (parametrised over them all)."""
import pytest

from mmgeolm_core.errors import InputError, UnknownNameError
from mmgeolm_core.registry import Registry


def _registries():
    from data_recipes.diagrams import families, perturbations
    from data_recipes.external import edits
    from data_recipes.text_negatives import retrieval
    from data_recipes.text_negatives.rules import registry as rules
    from mmclip_plugin.ablation import arms
    from mmclip_plugin.losses import terms
    from mmgeolm.bench import registry as benchmarks

    benchmarks.list_benchmarks()  # imports the built-in benchmarks
    return {
        "benchmarks": (benchmarks._BENCHMARKS, benchmarks.list_benchmarks, benchmarks._BENCHMARKS.get),
        "families": (families._FAMILIES, families.list_families, families.get_family),
        "perturbations": (perturbations._PERTURBATIONS, perturbations.list_perturbations,
                          perturbations.get_perturbation),
        "script edits": (edits._EDITS, edits.list_script_edits, edits.get_script_edit),
        "retrieval backends": (retrieval._BACKENDS, retrieval.list_backends, retrieval._BACKENDS.get),
        "caption rules": (rules._RULES, rules.list_rules, rules.get_rule),
        "ablation arms": (arms._ARMS, arms.list_arms, arms.get_arm),
        "losses": (terms._LOSSES, terms.list_losses, terms._LOSSES.get),
    }


def test_register_get_names_and_errors():
    reg: Registry[int] = Registry("widget")
    assert reg.register("b", 2) == 2

    @reg.register("a")
    def a():
        return 1

    assert reg.names() == ["a", "b"] and list(reg) == ["a", "b"] and len(reg) == 2 and "a" in reg
    assert reg.get("b") == 2 and reg.get("a") is a
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.register("a", 3)
    with pytest.raises(UnknownNameError, match="unknown widget 'c'; known: a, b") as err:
        reg.get("c")
    # one error type that every caller can catch as it did before, and the CLIs map to exit 2
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError) and isinstance(err.value, InputError)
    assert str(err.value) == "unknown widget 'c'; known: a, b"  # not KeyError's quoted repr
    assert reg.unregister("a") is a and reg.names() == ["b"]
    with pytest.raises(ValueError, match="non-empty string"):
        reg.register("", 1)


@pytest.mark.parametrize("kind", sorted(_registries()))
def test_every_registry_is_sorted_refuses_duplicates_and_lists_known_names(kind):
    registry, list_fn, get_fn = _registries()[kind]
    names = list_fn()
    assert names and names == sorted(names) == registry.names()
    for name in names:
        assert get_fn(name) is not None
    with pytest.raises(UnknownNameError) as err:
        get_fn("no-such-name")
    assert all(name in str(err.value) for name in names)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(names[0], registry.get(names[0]))
