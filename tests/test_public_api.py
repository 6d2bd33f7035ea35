"""The public surface: __all__, module names, docstrings, typing marker."""

from __future__ import annotations

import importlib.resources
import inspect

import cancelpool


def test_all_is_a_tuple_matching_public_names() -> None:
    assert isinstance(cancelpool.__all__, tuple)
    defined = {
        name for name in vars(cancelpool)
        if not name.startswith("_") and not inspect.ismodule(getattr(cancelpool, name))
    }  # fmt: skip
    assert set(cancelpool.__all__) - {"__version__"} == defined
    assert len(cancelpool.__all__) == len(set(cancelpool.__all__))


def test_public_objects_claim_the_public_module() -> None:
    for name in cancelpool.__all__:
        obj = getattr(cancelpool, name)
        if hasattr(obj, "__module__") and not isinstance(obj, str):
            assert obj.__module__ == "cancelpool", name


def test_every_public_object_and_method_is_documented() -> None:
    for name in cancelpool.__all__:
        obj = getattr(cancelpool, name)
        if isinstance(obj, str):
            continue
        assert inspect.getdoc(obj), name
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not (callable(member) or isinstance(member, property)):
                    continue
                assert inspect.getdoc(member), f"{name}.{attr}"


def test_py_typed_is_shipped() -> None:
    assert importlib.resources.files("cancelpool").joinpath("py.typed").is_file()


def test_repr_names_public_module() -> None:
    assert repr(cancelpool.TaskCancelled) == "<class 'cancelpool.TaskCancelled'>"
