"""Strict checkpoint loading for every engine: what does not fit, said so a person can act on it.

``load_state_dict(strict=True)`` stops at the first kind of problem with a
wall of keys. Every loader here first compares the file's tensors with the
model's and names the missing, unexpected and misshapen keys (a few of each,
with counts), so a wrong file (another model, another version, a training
checkpoint) reads as such.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor

#: Keys named per kind of problem in an error (the count says how many there are).
MAX_KEYS_IN_ERROR = 5


def first_keys(keys: list[str]) -> str:
    """The first few ``keys`` and how many more there are."""
    more = f" (+{len(keys) - MAX_KEYS_IN_ERROR} more)" if len(keys) > MAX_KEYS_IN_ERROR else ""
    return f"{keys[:MAX_KEYS_IN_ERROR]}{more}"


def layout_problems(expected: Mapping[str, Tensor], state: Mapping[str, Tensor],
                    ignore: Callable[[str], bool] = lambda key: False) -> list[str]:
    """What keeps ``state`` from loading strictly into a model whose state dict is ``expected``.

    One phrase per kind of problem (missing, unexpected, misshapen keys),
    empty when it fits; keys for which ``ignore`` is true are not compared.
    """
    missing = [k for k in expected if k not in state and not ignore(k)]
    unexpected = [k for k in state if k not in expected and not ignore(k)]
    misshapen = [f"{k}: file {list(state[k].shape)} vs model {list(expected[k].shape)}"
                 for k in expected if k in state and not ignore(k) and state[k].shape != expected[k].shape]
    kinds = (("missing key(s)", missing), ("unexpected key(s)", unexpected), ("shape mismatch(es)", misshapen))
    return [f"{len(keys)} {kind} {first_keys(keys)}" for kind, keys in kinds if keys]


__all__ = ["MAX_KEYS_IN_ERROR", "first_keys", "layout_problems"]
