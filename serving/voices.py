"""The RVC voices directory: how voice names map to files (no model code, no torch).

One flat directory (``POLYDUB_RVC_VOICES_DIR``) holds the voices a deployment
offers. A voice named ``alice`` is ``alice.pth``, an RVC voice file in the
official layout, and optionally ``alice.index`` beside it, the faiss feature
index its training wrote (``added_IVF*_Flat_*.index``, renamed). The served
model loads what a request names; ingest lists the same directory to reject an
unknown voice before any work, so workers and Triton hosts mount it at the
same path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

VOICE_SUFFIX = ".pth"
INDEX_SUFFIX = ".index"


@dataclass(frozen=True)
class VoiceFiles:
    """The files of one voice."""

    name: str
    voice: Path
    index: Path | None


class VoiceDirectory:
    """Lists and resolves the voices of one directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        """Every voice in the directory, sorted (empty when the directory does not exist)."""
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.iterdir() if p.suffix == VOICE_SUFFIX and p.is_file())

    def files(self, name: str) -> VoiceFiles:
        """The files of voice ``name``; a LookupError lists the voices there are."""
        if not name or Path(name).name != name or name.startswith("."):
            raise LookupError(f"{name!r} is not a voice name: voices are file names without a path")
        voice = self.root / f"{name}{VOICE_SUFFIX}"
        if not voice.is_file():
            raise LookupError(f"no RVC voice {name!r} in {self.root}: {self.available()}")
        index = self.root / f"{name}{INDEX_SUFFIX}"
        return VoiceFiles(name, voice, index if index.is_file() else None)

    def available(self) -> str:
        """The voices there are, as an error message ends with them."""
        names = self.names()
        if not names:
            return f"the directory has no {VOICE_SUFFIX} voices" if self.root.is_dir() else "the directory does not exist"
        return "voices available: " + ", ".join(names)


__all__ = ["INDEX_SUFFIX", "VOICE_SUFFIX", "VoiceDirectory", "VoiceFiles"]
