"""Loaders for NVIDIA DeepLearningExamples FastPitch and HiFi-GAN checkpoints.

FastPitch files (``FastPitch_checkpoint_*.pt``, NGC ``nvidia_fastpitch_*.pt``)::

    {"epoch", "iteration", "config"?, "train_setup"?, "state_dict",
     "ema_state_dict"?, "optimizer", "scaler"}

``config`` holds the constructor kwargs (absent from e.g.
``nvidia_fastpitch_210824.pt``: then the caller's config or the published
defaults apply). Keys may carry a DataParallel ``module.`` prefix. The
``attention.*`` aligner is training-only and may be missing.

HiFi-GAN files (``hifigan_gen_checkpoint_*.pt``; original jik876 ``g_*``)::

    {"generator", "gen_ema"?, "config"?, "train_setup"?, "train_state"?}

with residual blocks either nested ``resblocks.{stage}.{j}`` (NVIDIA) or flat
``resblocks.{stage * n_kernels + j}`` (original HiFi-GAN), and ``weight_g``
possibly stored with a different rank. Weight norm is folded away after
loading unless asked otherwise.

Files are read with ``torch.load(weights_only=True)``: a checkpoint cannot run
code. ``allow_pickle=True`` lifts that for files the user trusts, with a warning.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from engines.checkpoints import layout_problems

from .config import FastPitchConfig, HiFiGanConfig
from .hifigan import HiFiGan
from .model import FastPitch

logger = logging.getLogger(__name__)

#: Container keys holding a FastPitch state dict, in default preference order.
FASTPITCH_STATE_KEYS = ("state_dict", "ema_state_dict")
#: Container keys holding a HiFi-GAN generator state dict.
HIFIGAN_STATE_KEYS = ("generator", "gen_ema")
#: FastPitch parameters that only training uses; tolerated when absent.
TRAINING_ONLY_PREFIX = "attention."
#: How many offending keys an error message lists.
_MODULE_PREFIX_RE = re.compile(r"^module\.")


@dataclass
class LoadedFastPitch:
    """A FastPitch restored from a file, in eval mode, plus what the file said."""

    model: FastPitch
    config: FastPitchConfig
    path: Path
    state_key: str
    """Which entry was loaded: "state_dict", "ema_state_dict" or "<bare>"."""
    train_setup: dict[str, Any] = field(default_factory=dict)
    """NVIDIA's training args (sampling_rate, hop_length, symbol_set, ...), if saved."""
    config_source: str = "checkpoint"
    """"checkpoint" if the file embedded its config, else "given" or "defaults"."""


@dataclass
class LoadedHiFiGan:
    """A HiFi-GAN generator restored from a file, in eval mode."""

    model: HiFiGan
    config: HiFiGanConfig
    path: Path
    state_key: str
    resblock_layout: str
    """"nested" (NVIDIA) or "flat" (original HiFi-GAN), as found in the file."""
    train_setup: dict[str, Any] = field(default_factory=dict)
    config_source: str = "checkpoint"


def read_checkpoint(path: str | Path, *, allow_pickle: bool = False) -> dict[str, Any]:
    """``torch.load`` to CPU, refusing pickled code unless ``allow_pickle``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if allow_pickle:
        logger.warning("loading %s with allow_pickle=True: the file can execute arbitrary "
                       "code while loading; only do this for files you trust", p)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{p}: refused by the safe loader (weights_only=True): {exc}. If you trust the "
            "file, load it with allow_pickle=True.") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"{p}: not a readable torch checkpoint ({exc})") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{p}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


def strip_module_prefix(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove DataParallel / DDP's leading ``module.`` from every key."""
    return {_MODULE_PREFIX_RE.sub("", k): v for k, v in state_dict.items()}


def _pick_state_dict(ckpt: Mapping[str, Any], keys: tuple[str, str], prefer_ema: bool,
                     probe_key: str, path: Path, what: str) -> tuple[str, dict[str, Tensor]]:
    main_key, ema_key = keys
    order = (ema_key, main_key) if prefer_ema else (main_key, ema_key)
    for key in order:
        if key in ckpt and isinstance(ckpt[key], Mapping):
            if prefer_ema and key != ema_key:
                logger.info("%s: no %r in the file; using %r", path, ema_key, key)
            return key, dict(ckpt[key])
    stripped = strip_module_prefix(ckpt) if all(isinstance(k, str) for k in ckpt) else {}
    if probe_key in stripped and all(isinstance(v, Tensor) for v in stripped.values()):
        return "<bare>", dict(ckpt)
    top = sorted(str(k) for k in ckpt)[:12]
    raise ValueError(
        f"{path}: not a {what} checkpoint: expected a dict with {main_key!r} or {ema_key!r} "
        f"(NVIDIA DeepLearningExamples layout) or a bare state dict containing {probe_key!r}; "
        f"found top-level keys {top}")


def _check_and_load(model: nn.Module, state_dict: dict[str, Tensor], *, path: Path,
                    layout: str, optional_prefix: str | None = None) -> list[str]:
    """Strict load with an actionable error; returns optional keys left out.

    ``optional_prefix`` keys may be absent (or mismatched) as a group: they
    are then skipped and keep their initial values.
    """
    expected = model.state_dict()

    def is_optional(k: str) -> bool:
        return optional_prefix is not None and k.startswith(optional_prefix)

    problems = layout_problems(expected, state_dict, is_optional)
    if problems:
        raise ValueError(
            f"{path}: state dict does not match the expected layout ({layout}): "
            + "; ".join(problems)
            + ". If the file has no embedded config, pass the config it was trained with.")
    skipped: list[str] = []
    if optional_prefix is not None:
        opt_expected = [k for k in expected if is_optional(k)]
        complete = all(k in state_dict and state_dict[k].shape == expected[k].shape
                       for k in opt_expected)
        if not complete:
            skipped = opt_expected
            state_dict = {k: v for k, v in state_dict.items() if not is_optional(k)}
        else:
            state_dict = {k: v for k, v in state_dict.items() if k in expected}
    model.load_state_dict(state_dict, strict=not skipped)
    return skipped


def _resolve_config(ckpt: dict[str, Any], key: str, config: Any, config_cls: Any, path: Path,
                    label: str) -> tuple[Any, str]:
    """The model config: the file's embedded one (over ``config``), else ``config``, else defaults.

    Returns the config and where it came from, for error messages.
    """
    embedded = ckpt.get("config") if key != "<bare>" else None
    if embedded is not None:
        return config_cls.from_checkpoint_config(embedded, base=config), "checkpoint"
    logger.info("%s: no embedded config; using %s %s config", path,
                "the given" if config is not None else "the published default", label)
    return (config, "given") if config is not None else (config_cls(), "defaults")


def load_fastpitch(
    path: str | Path,
    config: FastPitchConfig | None = None,
    *,
    prefer_ema: bool = False,
    allow_pickle: bool = False,
    device: str | torch.device = "cpu",
) -> LoadedFastPitch:
    """Restore a FastPitch from an NVIDIA checkpoint (strict, eval mode).

    ``config`` is the base for a file without an embedded config (otherwise
    the published defaults); keys the file does embed take precedence.
    ``prefer_ema`` loads ``ema_state_dict`` when the file has one.
    """
    p = Path(path)
    ckpt = read_checkpoint(p, allow_pickle=allow_pickle)
    key, raw_sd = _pick_state_dict(ckpt, FASTPITCH_STATE_KEYS, prefer_ema,
                                   "encoder.word_emb.weight", p, "FastPitch")
    cfg, source = _resolve_config(ckpt, key, config, FastPitchConfig, p, "FastPitch")
    model = FastPitch(cfg)
    sd = strip_module_prefix(raw_sd)
    skipped = _check_and_load(
        model, sd, path=p, optional_prefix=TRAINING_ONLY_PREFIX,
        layout=f"NVIDIA FastPitch, {len(model.state_dict())} keys for config from {source}")
    if skipped:
        logger.info("%s: training-only aligner (%s*) absent or different; not needed for "
                    "inference", p, TRAINING_ONLY_PREFIX)
    model.eval().to(device)
    train_setup = ckpt.get("train_setup") if isinstance(ckpt.get("train_setup"), Mapping) else {}
    return LoadedFastPitch(model, cfg, p, key, dict(train_setup or {}), source)


def _remap_resblocks(sd: dict[str, Tensor], n_kernels: int) -> tuple[dict[str, Tensor], str]:
    """Flat ``resblocks.{3i+j}.convs1...`` -> nested ``resblocks.{i}.{j}.convs1...``."""
    layouts = set()
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "resblocks" and len(parts) > 2 and parts[1].isdigit():
            if parts[2].isdigit():
                layouts.add("nested")
            else:
                layouts.add("flat")
                stage, j = divmod(int(parts[1]), n_kernels)
                k = ".".join(["resblocks", str(stage), str(j), *parts[2:]])
        out[k] = v
    if len(layouts) > 1:
        raise ValueError("HiFi-GAN state dict mixes flat (resblocks.N.convs1) and nested "
                         "(resblocks.S.J.convs1) residual-block keys")
    return out, layouts.pop() if layouts else "nested"


def _fix_weight_ranks(sd: dict[str, Tensor], expected: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Reconcile a trailing singleton dim (weight_g saved as [C,1] vs [C,1,1])."""
    out = {}
    for k, v in sd.items():
        if k in expected:
            diff = v.ndim - expected[k].ndim
            if diff == -1:
                v = v.unsqueeze(-1)
            elif diff == 1 and v.size(-1) == 1:
                v = v.squeeze(-1)
        out[k] = v
    return out


def load_hifigan(
    path: str | Path,
    config: HiFiGanConfig | None = None,
    *,
    prefer_ema: bool = False,
    allow_pickle: bool = False,
    remove_weight_norm: bool = True,
    device: str | torch.device = "cpu",
) -> LoadedHiFiGan:
    """Restore a HiFi-GAN generator (strict, eval mode, weight norm folded).

    Accepts NVIDIA's nested and the original flat residual-block layouts, and
    generators saved with weight norm already removed (``*.weight`` keys).
    """
    p = Path(path)
    ckpt = read_checkpoint(p, allow_pickle=allow_pickle)
    key, raw_sd = _pick_state_dict(ckpt, HIFIGAN_STATE_KEYS, prefer_ema,
                                   "conv_pre.bias", p, "HiFi-GAN generator")
    cfg, source = _resolve_config(ckpt, key, config, HiFiGanConfig, p, "HiFi-GAN")
    model = HiFiGan(cfg)
    sd, layout = _remap_resblocks(strip_module_prefix(raw_sd), len(cfg.resblock_kernel_sizes))
    if "conv_pre.weight" in sd and "conv_pre.weight_v" not in sd:
        model.remove_weight_norm()  # the file was exported without weight norm
    sd = _fix_weight_ranks(sd, model.state_dict())
    _check_and_load(model, sd, path=p,
                    layout=f"HiFi-GAN generator, {len(model.state_dict())} keys, nested "
                           f"resblocks.{{stage}}.{{j}}, config from {source}")
    if remove_weight_norm:
        model.remove_weight_norm()
    model.eval().to(device)
    train_setup = ckpt.get("train_setup") if isinstance(ckpt.get("train_setup"), Mapping) else {}
    return LoadedHiFiGan(model, cfg, p, key, layout, dict(train_setup or {}), source)


__all__ = [
    "FASTPITCH_STATE_KEYS", "HIFIGAN_STATE_KEYS", "LoadedFastPitch", "LoadedHiFiGan",
    "load_fastpitch", "load_hifigan", "read_checkpoint", "strip_module_prefix",
]
