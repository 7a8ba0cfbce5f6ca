"""The project has one exception tree, with one root, declared and drawn in one place."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import creditexchange
from creditexchange import errors
from creditexchange.errors import CreditExchangeError


def _all_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(creditexchange.__path__, "creditexchange."):
        if (
            info.name.endswith(".__main__")
            or ".migrations" in info.name
            or info.name.startswith("creditexchange.v1")
        ):
            continue
        names.append(info.name)
    return names


def test_every_public_exception_is_declared_in_the_errors_module_under_the_root() -> None:
    strays = []
    for name in _all_modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
                and not attr.startswith("_")
                and name != "creditexchange.errors"
            ):
                strays.append(f"{name}.{attr}")
    assert strays == [], "exceptions belong in creditexchange.errors, under the root"


def test_the_drawn_tree_is_the_tree_of_classes() -> None:
    drawn: dict[str, str] = {}  # class -> parent, as the module docstring draws them
    lines = (errors.__doc__ or "").splitlines()
    root = next(line for line in lines if line.strip() == "CreditExchangeError")
    base = root.index("CreditExchangeError")
    parents = ["CreditExchangeError"]
    drawn["CreditExchangeError"] = ""
    for line in lines:
        branch = re.search(r"[├└]── ([A-Za-z]+)", line)
        if branch is None:
            continue
        depth = (branch.start() - base) // 4 + 1
        del parents[depth:]
        drawn[branch.group(1)] = parents[-1]
        parents.append(branch.group(1))
    declared = {
        name: "" if value is CreditExchangeError else value.__bases__[0].__name__
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, CreditExchangeError)
    }
    assert drawn == declared
