"""RVC voices: the community ``.pth`` file (official layout) -> a ready :class:`RvcSynthesizer`.

An RVC voice file is what RVC's training exports (``torch.save`` of a dict):

* ``weight``: the synthesizer's state dict in fp16, keys without prefixes, the
  training-only posterior encoder (``enc_q.*``) normally stripped;
* ``config``: the 18 positional constructor arguments
  (:data:`~engines.rvc.config.CHECKPOINT_FIELDS`), the last one the output rate;
* ``info`` (e.g. "300epoch"), ``sr`` ("32k" / "40k" / "48k"), ``f0`` (1 / 0)
  and ``version`` ("v1" / "v2"; old files have none and are v1).

:func:`load_rvc_voice` reads it with ``torch.load(weights_only=True)`` (these
files hold only tensors, lists, strings and numbers, so nothing executes),
takes the speaker count from ``emb_g.weight`` as RVC does, drops any
``enc_q.*`` key and loads the rest *strictly*: a missing, surplus or
misshapen tensor is an error that names it, rather than a voice that sounds
wrong. :func:`random_voice` builds a voice with random weights (benchmarks,
tests) and :func:`save_rvc_voice` writes one in the official layout.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from engines.checkpoints import layout_problems

from .config import (
    CONTENT_DIM,
    DEFAULT_VERSION,
    RATE_LABELS,
    SPEAKER_COUNT_INDEX,
    RvcConfig,
    parse_preset_name,
    preset,
)
from .synthesizer import RvcSynthesizer

logger = logging.getLogger(__name__)

#: Keys a voice file cannot do without.
REQUIRED_KEYS = ("weight", "config")
#: The speaker table; its rows are the voice's speaker count.
SPEAKER_TABLE_KEY = "emb_g.weight"
#: Substring of the training-only posterior encoder's keys, dropped on load as RVC does.
TRAINING_ONLY_MARK = "enc_q"
#: Top-level keys of an RVC *training* checkpoint (G_*.pth / D_*.pth), to tell users what they hold.
TRAINING_CHECKPOINT_KEYS = frozenset({"model", "iteration", "optimizer", "learning_rate"})
#: The dtype RVC stores voice weights in.
STORED_DTYPE = torch.float16
#: Scale of random biases / embedding rows in :func:`randomize_parameters`: small next to the weights.
RANDOM_BIAS_STD = 0.05
RANDOM_GAIN_SPREAD = 0.1


@dataclass
class LoadedVoice:
    """A voice ready to run: the synthesizer (eval mode) and what its file said."""

    model: RvcSynthesizer
    config: RvcConfig
    version: str
    """"v1" or "v2" (the file's, or v1 when it has none)."""
    f0: bool
    """Whether the voice takes pitch (``pitch`` / ``nsff0`` in ``infer``)."""
    sample_rate: int
    """Output rate in Hz (RVC's ``tgt_sr``, config[-1])."""
    info: str
    """The file's ``info`` (training epochs, usually), "" when absent."""
    name: str
    """The file's stem, or the benchmark name of a random voice."""
    path: Path | None = None


def load_rvc_voice(path: str | Path, device: str | torch.device = "cpu",
                   dtype: torch.dtype | None = None) -> LoadedVoice:
    """Load an RVC ``.pth`` voice (official layout) strictly, in eval mode.

    ``dtype`` defaults to float32 (what a CPU runs); pass ``torch.float16``
    for a GPU. Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` naming what is wrong for anything that is not an RVC voice
    or whose config and weights disagree.
    """
    p = Path(path)
    contents = _read(p)
    weights, config = _parse(contents, p)
    model = RvcSynthesizer(config)
    _load_strictly(model, weights, p)
    model.eval().to(device=device, dtype=dtype or torch.float32)
    logger.info("loaded RVC voice %s: %s at %d Hz, %d speaker(s), %s", p.name, config.variant,
                config.sampling_rate, config.n_speakers, contents.get("info", "no info"))
    return LoadedVoice(model, config, config.version, config.f0, config.sampling_rate,
                       str(contents.get("info", "")), p.stem, p)


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"RVC voice not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path}: refused by the safe loader (weights_only=True): {exc}. An RVC voice holds "
                         "only tensors, lists, strings and numbers; this file holds other objects, so it is not "
                         "an RVC voice as RVC exports them") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"{path}: not a readable torch file ({exc})") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not an RVC voice: expected a dict with {list(REQUIRED_KEYS)}, "
                         f"got a {type(obj).__name__}")
    return obj


def _parse(contents: Mapping[str, Any], path: Path) -> tuple[dict[str, Tensor], RvcConfig]:
    """The weights (enc_q dropped) and the config the file describes."""
    missing = [k for k in REQUIRED_KEYS if k not in contents]
    if missing:
        found = sorted(str(k) for k in contents)[:12]
        hint = ""
        if TRAINING_CHECKPOINT_KEYS <= set(contents):
            hint = (" It looks like an RVC training checkpoint (G_*.pth); export the voice from it with RVC's "
                    "checkpoint tools (the small-model extraction) first.")
        raise ValueError(f"{path}: not an RVC voice: missing {missing} (found top-level keys {found}).{hint}")
    weights = contents["weight"]
    if not isinstance(weights, Mapping) or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in weights.items()):
        raise ValueError(f"{path}: 'weight' must be a state dict (names -> tensors)")
    if SPEAKER_TABLE_KEY not in weights:
        raise ValueError(f"{path}: not an RVC voice: its weights have no {SPEAKER_TABLE_KEY!r} (the speaker table)")
    version = str(contents.get("version", DEFAULT_VERSION))
    if "version" not in contents:
        logger.info("%s: no 'version' field; treating it as %s, as RVC does", path, DEFAULT_VERSION)
    if version not in CONTENT_DIM:
        raise ValueError(f"{path}: unknown RVC version {version!r}; known {sorted(CONTENT_DIM)}")
    f0 = contents.get("f0", 1)
    if f0 not in (0, 1):
        raise ValueError(f"{path}: 'f0' must be 1 or 0, got {f0!r}")
    raw_config = contents["config"]
    if not isinstance(raw_config, (list, tuple)):
        raise ValueError(f"{path}: 'config' must be the list of 18 synthesizer arguments, got "
                         f"{type(raw_config).__name__}")
    config_list = list(raw_config)
    if len(config_list) > SPEAKER_COUNT_INDEX:
        config_list[SPEAKER_COUNT_INDEX] = int(weights[SPEAKER_TABLE_KEY].shape[0])
    try:
        config = RvcConfig.from_checkpoint(config_list, version=version, f0=bool(f0))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    _check_rate_label(contents.get("sr"), config, path)
    dropped = [k for k in weights if TRAINING_ONLY_MARK in k]
    if dropped:
        logger.info("%s: dropping %d training-only %s.* tensors", path, len(dropped), TRAINING_ONLY_MARK)
    return {k: v for k, v in weights.items() if TRAINING_ONLY_MARK not in k}, config


def _check_rate_label(label: Any, config: RvcConfig, path: Path) -> None:
    # RVC itself ignores 'sr' and uses config[-1]; a disagreement is only worth a warning.
    if label is None:
        return
    hz = RATE_LABELS.get(str(label))
    if hz is None and str(label).isdigit():  # a rate in Hz (what a voice at an unpublished rate carries)
        hz = int(str(label))
    if hz != config.sampling_rate:
        logger.warning("%s: 'sr' says %r but the config's rate is %d Hz; using %d Hz as RVC does", path, label,
                       config.sampling_rate, config.sampling_rate)


def _load_strictly(model: RvcSynthesizer, weights: Mapping[str, Tensor], path: Path) -> None:
    expected = model.state_dict()
    problems = layout_problems(expected, weights)
    if problems:
        raise ValueError(f"{path}: the weights do not fit the {model.config.variant} its config and its "
                         f"version/f0 fields describe: {'; '.join(problems)}.{_diagnosis(model.config, weights)}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in weights.items()}, strict=True)


def _diagnosis(config: RvcConfig, weights: Mapping[str, Tensor]) -> str:
    """A likely cause, for the two fields old or hand-edited files get wrong."""
    phone = weights.get("enc_p.emb_phone.weight")
    if phone is not None and phone.ndim == 2 and phone.shape[1] != config.content_dim:
        versions = [v for v, dim in CONTENT_DIM.items() if dim == phone.shape[1]]
        return (f" The content embedding takes {phone.shape[1]}-d features, i.e. a {versions or 'unknown'} voice, "
                f"but the file's version field says {config.version!r}.")
    has_pitch = "enc_p.emb_pitch.weight" in weights
    if has_pitch != config.f0:
        return (f" The weights {'have' if has_pitch else 'lack'} the pitch embedding, but the file's f0 field "
                f"says {int(config.f0)}.")
    return ""


# ---------------------------------------------------------------------------
# writing and random voices
# ---------------------------------------------------------------------------


def voice_file_contents(model: RvcSynthesizer, info: str = "") -> dict[str, Any]:
    """The dict RVC's export writes for ``model``: fp16 weights, config list, info, sr, f0, version."""
    config = model.config
    label = next((k for k, hz in RATE_LABELS.items() if hz == config.sampling_rate), str(config.sampling_rate))
    weights = {k: v.detach().to("cpu", STORED_DTYPE).clone() for k, v in model.state_dict().items()}
    return {"weight": weights, "config": config.to_checkpoint(), "info": info, "sr": label,
            "f0": int(config.f0), "version": config.version}


def save_rvc_voice(model: RvcSynthesizer, path: str | Path, info: str = "") -> Path:
    """Write ``model`` as an RVC voice file in the official layout (weights rounded to fp16)."""
    p = Path(path)
    torch.save(voice_file_contents(model, info), p)
    return p


def randomize_parameters(model: nn.Module, generator: torch.Generator) -> None:
    """Give every parameter a random, well-scaled value (unlike the published init, the flow is not the identity).

    Weights and embeddings ~ N(0, 1/fan_in), weight-norm and LayerNorm gains
    near 1 (a weight-normed channel then has about the norm of a 1/fan_in
    init), biases small. Enough for timing and equivalence checks, not a voice.
    """
    with torch.no_grad():
        for name, param in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            if leaf in ("gamma", "weight_g"):  # gains: a weight-normed channel's norm is its gain
                value = 1 + RANDOM_GAIN_SPREAD * noise
            elif param.ndim >= 2:
                fan_in = param[0].numel()
                value = noise / fan_in ** 0.5
            else:
                value = RANDOM_BIAS_STD * noise
            param.copy_(value.to(param.dtype))


def random_voice(config: RvcConfig | str = "v2-40k", version: str | None = None, f0: bool | None = None,
                 seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> LoadedVoice:
    """A voice with random weights: a published preset ("v1-40k", ...) or any config.

    ``version`` / ``f0`` override the config's. The same seed gives the same weights.
    """
    if isinstance(config, str):
        preset_version, label = parse_preset_name(config)
        cfg = preset(preset_version, label)
    else:
        cfg = config
    cfg = cfg.replace(version=version or cfg.version, f0=cfg.f0 if f0 is None else f0)
    model = RvcSynthesizer(cfg)
    randomize_parameters(model, torch.Generator().manual_seed(seed))
    model.eval().to(device=device, dtype=dtype or torch.float32)
    name = f"random-{cfg.version}-{cfg.sampling_rate // 1000}k{'' if cfg.f0 else '-nono'}-seed{seed}"
    return LoadedVoice(model, cfg, cfg.version, cfg.f0, cfg.sampling_rate, "random weights", name)


__all__ = ["LoadedVoice", "load_rvc_voice", "random_voice", "randomize_parameters", "save_rvc_voice",
           "voice_file_contents"]
