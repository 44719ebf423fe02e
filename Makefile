# polydub: every set-up step lives here, so a fresh clone needs nothing by hand.
#   make demo   create the venv, make a sample video, dub it (the README's first command)
#   make test   create the venv, run the whole test suite (the README's second command)

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.polydub-installed
LANG_TO ?= ko
SECONDS ?= 12

# Packages installed without their declared dependencies: we use only the
# tritonserver binary of nvidia-pytriton (its pins would downgrade numpy) and
# only the GE2E weights file of Resemblyzer (its librosa/webrtcvad chain is unused).
BINARY_ONLY := nvidia-pytriton==0.7.0 Resemblyzer==0.1.4

.PHONY: venv demo test test-fast bench generate clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(BINARY_ONLY)
	touch $@

demo: venv
	$(BIN)/polydub sample --lang $(LANG_TO) --seconds $(SECONDS) -o out/sample.mp4
	$(BIN)/polydub run out/sample.mp4 --subs out/sample.srt --to $(LANG_TO) -o out/sample.dub.mp4

test: venv
	$(BIN)/python -m pytest

test-fast: venv
	$(BIN)/python -m pytest -m "not slow and not integration"

bench: venv
	$(BIN)/python -m bench

# Regenerate every checked-in file derived from code (tests fail when they drift).
generate: venv
	$(BIN)/python -m schemas.generate
	$(BIN)/python -m serving.configs
	$(BIN)/python -m handlers.asyncapi
	$(BIN)/python -m handlers.docs

clean:
	rm -rf $(VENV) .polydub out
