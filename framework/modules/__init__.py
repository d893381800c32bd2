"""The module system: typed options, YAML modules with imports, merge priorities."""

from framework.modules.evaluate import Evaluation, evaluate
from framework.modules.nodes import mk_default, mk_force
from framework.modules.option import Config, Module, option
from framework.modules.types import REQUIRED, Option

__all__ = [
    "REQUIRED",
    "Config",
    "Evaluation",
    "Module",
    "Option",
    "evaluate",
    "mk_default",
    "mk_force",
    "option",
]
