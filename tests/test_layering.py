"""The import arrows between the top-level packages, as DESIGN and CONTRIBUTING draw them.

Every ``import`` and ``from ... import`` in the project's code, at module level
or inside a function, is read with :mod:`ast` and checked against the rules
below; one arrow against them fails with the file, the line and the rule.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from schemas.registry import STAGE_NAMES

ROOT = Path(__file__).resolve().parents[1]
OURS = ("schemas", "engines", "serving", "triton_models", "handlers", "infra", "bench", "tests")
#: The one module of handlers that may start or stop the local servers (infra).
INFRA_BRIDGE = "handlers/localstack.py"
STAGE_MODULES = {f"handlers.{name}" for name in STAGE_NAMES}
#: Engine packages handlers may import directly: no model in them, only signal math (resampling,
#: envelopes) and text rules (how a subtitle is read aloud, which QC's word error rate needs to
#: score a transcript against its subtitle as the dub spoke it).
PURE_ENGINE_PACKAGES = ("engines.dsp", "engines.text")


@dataclass(frozen=True)
class Arrow:
    source: str  # file, relative to the root
    line: int
    target: str  # the imported module, dotted


def _module_of(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    return ".".join(relative.parts)


def _arrows(path: Path) -> Iterator[Arrow]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_of(path).rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Arrow(str(path.relative_to(ROOT)), node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield Arrow(str(path.relative_to(ROOT)), node.lineno, target)


def _files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _ours(target: str) -> str | None:
    top = target.split(".", 1)[0]
    return top if top in OURS else None


def _violations() -> list[str]:
    found = []
    for folder in ("schemas", "engines", "serving", "triton_models", "handlers", "infra"):
        for path in _files(folder):
            for arrow in _arrows(path):
                top = _ours(arrow.target)
                if top is None:
                    continue
                rule = _broken_rule(folder, arrow, top)
                if rule:
                    found.append(f"{arrow.source}:{arrow.line} imports {arrow.target}: {rule}")
    return found


def _broken_rule(folder: str, arrow: Arrow, top: str) -> str | None:
    if folder == "schemas" and top != "schemas":
        return "schemas import nothing of ours"
    if folder == "engines" and top != "engines":
        return "engines are model math and import nothing of ours"
    if folder == "serving" and top not in ("serving", "engines"):
        return "the serving package imports only engines"
    if folder == "triton_models" and top not in ("serving", "engines"):
        return "a Triton model file imports only serving and engines"
    if folder == "infra" and top not in ("infra", "schemas"):
        return "infra imports nothing of handlers (nor of the models)"
    if folder == "handlers":
        return _handlers_rule(arrow, top)
    return None


def _handlers_rule(arrow: Arrow, top: str) -> str | None:
    source = arrow.source
    if top == "infra" and source != INFRA_BRIDGE:
        return f"only {INFRA_BRIDGE} imports infra (the process supervisor, one way in)"
    if top == "engines" and not any(arrow.target == pure or arrow.target.startswith(pure + ".")
                                    for pure in PURE_ENGINE_PACKAGES):
        return ("handlers reach models only through the inference client (engines.dsp, pure signal math, and "
                "engines.text, pure text rules, are the exceptions)")
    if top in ("bench", "tests", "triton_models"):
        return "production code imports no benchmark, test or Triton model file"
    if top == "handlers":
        own = _module_of(ROOT / source)
        if own.startswith("handlers.runtime.") and not arrow.target.startswith("handlers.runtime"):
            return "handlers/runtime is plumbing: it imports no stage and nothing above it"
        if own in STAGE_MODULES and arrow.target in STAGE_MODULES and arrow.target != own:
            return "no stage imports another stage"
    return None


def test_no_import_goes_against_the_layering() -> None:
    violations = _violations()
    assert not violations, "imports against the layering:\n" + "\n".join(violations)


def test_runtime_knows_no_stage_by_name() -> None:
    """Stage names live once, in schemas.registry; the plumbing derives what it needs from there."""
    named = []
    for path in _files("handlers/runtime"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in STAGE_NAMES:
                named.append(f"{path.relative_to(ROOT)}:{node.lineno} names stage {node.value!r}")
    assert not named, "\n".join(named)


@pytest.mark.parametrize("rule_breaker, rule", [
    ("engines/x.py", "engines"), ("schemas/x.py", "schemas"), ("handlers/runtime/x.py", "handlers/runtime"),
])
def test_the_checker_catches_a_wrong_arrow(rule_breaker: str, rule: str, tmp_path: Path) -> None:
    """The checker itself: an arrow against each kind of rule is reported."""
    folder = rule_breaker.split("/", 1)[0]
    target = {"engines": "handlers.cli", "schemas": "serving.specs", "handlers/runtime": "handlers.ingest"}[rule]
    arrow = Arrow(rule_breaker, 1, target)
    assert _broken_rule(folder, arrow, target.split(".")[0]) is not None
