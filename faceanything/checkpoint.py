"""Checkpoint files: ours, DA3's, and the authors' Face Anything release, in one key layout.

Three kinds are read, by `torch.load(weights_only=True)` or safetensors, never by running
pickled code unless the caller trusts the file (`trust=True`, `--trust-checkpoint` on every
command; never the default): the authors' release is a pickled file that may hold training
objects weights_only refuses. Convert such a file once, then load the safetensors copy:

    python -m faceanything.checkpoint convert RELEASE.pt OUT.safetensors --trust-checkpoint

- ours: `{"format": "faceanything", "config": {...}, "model": state_dict, "train": {...}}`,
  or a safetensors file whose metadata holds "format" and "config" (a conversion's output);
- the authors' release: `{"model": state_dict}` or a bare state dict whose keys are those of
  DA3's API class plus the canonical head, `model.deformation_head.*`;
- DA3: a safetensors or torch file of `DepthAnything3Net` (keys `backbone.*`, `head.*`, ...,
  or with the API class's `model.` prefix); the canonical head is then new.

Keys are brought to one layout (`model.` + the `DepthAnything3Net` key) before matching; a
`module.` prefix (DDP) is dropped, DA3-Giant's 3DGS branch (`model.gs_head.*`,
`model.gs_adapter.*`) is ignored and reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

FORMAT = "faceanything"
"""Value of the "format" entry of our checkpoints."""
CANONICAL_PREFIX = "model.deformation_head."
IGNORED_PREFIXES = ("model.gs_head.", "model.gs_adapter.")
"""DA3-Giant's 3DGS branch: in its checkpoints, not in our network."""
_NET_PARTS = (
    *("backbone.", "head.", "cam_enc.", "cam_dec.", "deformation_head.", "gs_head."),
    "gs_adapter.",
)
"""First names of `DepthAnything3Net`'s parts: keys starting so lack the API class's prefix."""
Kind = Literal["faceanything", "authors", "da3"]


class CheckpointError(ValueError):
    """A checkpoint file could not be read or does not fit the network; names file and keys."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Loaded:
    """A checkpoint file's contents, keys in our layout."""

    kind: Kind
    """Which of the three kinds (module docstring) the file is."""
    state: dict[str, Tensor]
    """State dict, keys `model.*`."""
    config: dict | None
    """Our network config (`FaceAnythingConfig` fields), ours only."""
    train: dict | None
    """Training state (optimizer, scheduler, sampler, RNG), ours only when saved by training."""
    ignored: tuple[str, ...]
    """Keys dropped (3DGS branch)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoadReport:
    """What loading a checkpoint into a network found."""

    path: Path
    """The file."""
    kind: Kind
    """Its kind."""
    new: tuple[str, ...]
    """Network keys the file did not have, left freshly initialised (DA3: the canonical head)."""
    ignored: tuple[str, ...]
    """File keys not used (DA3-Giant's 3DGS branch)."""

    def __str__(self) -> str:
        new = f"{len(self.new)} new keys (canonical head initialised)" if self.new else "complete"
        return f"{self.path}: {self.kind} checkpoint, {new}, {len(self.ignored)} ignored keys"


def read_checkpoint(path: str | os.PathLike, *, trust: bool = False) -> Loaded:
    """A checkpoint file's state dict (our key layout) and, for ours, config and training state.
    `trust`: the file may run pickled code (only for a file from a source you trust)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    obj = _read_file(path, trust=trust)
    config = train = None
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        state, config, train = obj.get("model"), dict(obj.get("config") or {}), obj.get("train")
    elif isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        state = obj["model"]
    else:
        state = obj
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{path}: holds no state dict (found {type(state).__name__})")
    not_tensors = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: non-tensor entries {_listed(not_tensors)}")
    state = {_our_key(str(k)): v for k, v in state.items()}
    ignored = tuple(sorted(k for k in state if k.startswith(IGNORED_PREFIXES)))
    state = {k: v for k, v in state.items() if k not in ignored}
    kind: Kind = (
        "faceanything"
        if config is not None
        else "authors"
        if any(k.startswith(CANONICAL_PREFIX) for k in state)
        else "da3"
    )
    return Loaded(kind=kind, state=state, config=config, train=train, ignored=ignored)


def _read_file(path: Path, *, trust: bool) -> object:
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        try:  # memory-mapped: the authors' 15 GB file is not read into memory twice
            return torch.load(path, map_location="cpu", weights_only=not trust, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as err:
        named = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f"first: {named.group(1)}" if named else str(err).strip().split("\n")[0]
        raise CheckpointError(
            f"{path}: torch.load(weights_only=True) refuses it: it holds pickled objects ({what}) "
            f"and loading it would run code from the file. If you trust its source, pass "
            f"--trust-checkpoint (trust=True), or convert it once: python -m "
            f"faceanything.checkpoint convert {path} OUT.safetensors --trust-checkpoint"
        ) from err
    except (RuntimeError, OSError, EOFError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({err})") from err


def _read_safetensors(path: Path) -> object:
    """A state dict, or ours (format and config from the metadata)."""
    try:
        state = load_file(str(path), device="cpu")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    if meta.get("format") != FORMAT:
        return state
    return {"format": FORMAT, "config": json.loads(meta.get("config", "{}")), "model": state}


def _our_key(key: str) -> str:
    key = key.removeprefix("module.")
    return f"model.{key}" if key.startswith(_NET_PARTS) else key


def infer_size(state: Mapping[str, Tensor], embed_dims: Mapping[str, int], path: Path) -> str:
    """The network size whose backbone width the state dict's class token has."""
    token = state.get("model.backbone.pretrained.cls_token")
    if token is None:
        raise CheckpointError(
            f"{path}: no model.backbone.pretrained.cls_token: not a DA3 / Face Anything state "
            f"dict (keys {_listed(state)})"
        )
    sizes = [size for size, dim in embed_dims.items() if dim == token.shape[-1]]
    if not sizes:
        raise CheckpointError(f"{path}: backbone width {token.shape[-1]} is no known DA3 size")
    return sizes[0]


def match_keys(*, path: Path, loaded: Loaded, expected: Mapping[str, Tensor]) -> tuple[str, ...]:
    """Check a file's state against the network's (`expected`): the keys left new (only the
    canonical head, only from a DA3 file); CheckpointError naming missing, unexpected or
    mis-shaped keys otherwise. A key missing from the file while a tensor tied to it (DA3's
    DualDPT shares one LayerNorm across its ray levels) is there counts as present, as
    safetensors' `save_model` keeps one name of tied tensors."""
    tied = _tied_names(expected)
    missing = sorted(
        k for k in set(expected) - set(loaded.state) if not tied[k] & set(loaded.state)
    )
    unexpected = sorted(set(loaded.state) - set(expected))
    new = tuple(k for k in missing if loaded.kind == "da3" and k.startswith(CANONICAL_PREFIX))
    missing = [k for k in missing if k not in new]
    shapes = [
        f"{k} {tuple(v.shape)} (network {tuple(expected[k].shape)})"
        for k, v in loaded.state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    problems = [
        f"{what} {_listed(keys)}"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
        if keys
    ]
    if problems:
        raise CheckpointError(f"{path} ({loaded.kind}) does not fit: " + "; ".join(problems))
    return new


def _tied_names(state: Mapping[str, Tensor]) -> dict[str, set[str]]:
    """Each key's other names for the same storage."""
    by_storage: dict[tuple[int, int], set[str]] = {}
    for key, value in state.items():
        by_storage.setdefault(
            (value.untyped_storage().data_ptr(), value.storage_offset()), set()
        ).add(key)
    return {key: names - {key} for names in by_storage.values() for key in names}


def _listed(keys: Iterable[str], most: int = 8) -> str:
    keys = list(keys)
    more = f" and {len(keys) - most} more" if len(keys) > most else ""
    return f"{len(keys)} keys [{', '.join(map(str, keys[:most]))}{more}]"


def save_checkpoint(
    path: str | os.PathLike,
    *,
    config: Mapping[str, object],
    state: Mapping[str, Tensor],
    train: Mapping[str, object] | None = None,
) -> Path:
    """Write our checkpoint (readable with `torch.load(weights_only=True)`) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    payload = {"format": FORMAT, "config": dict(config), "model": dict(state)}
    if train is not None:
        payload["train"] = dict(train)
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def convert(source: str | os.PathLike, target: str | os.PathLike, *, trust: bool = False) -> Loaded:
    """Write a checkpoint's weights (our key layout) as safetensors, our config in its
    metadata; training state (optimizer, RNG, any pickled objects) is left behind. A tensor
    stored under several names (tied) is written once, as safetensors requires; loading
    counts its other names as present."""
    loaded = read_checkpoint(source, trust=trust)
    kept, seen = {}, set()
    for key, value in loaded.state.items():
        storage = (value.untyped_storage().data_ptr(), value.storage_offset(), value.shape)
        if value.numel() and storage in seen:
            continue
        seen.add(storage)
        kept[key] = value.contiguous()
    meta = {"source": Path(source).name, "kind": loaded.kind}
    if loaded.config is not None:
        meta |= {"format": FORMAT, "config": json.dumps(loaded.config)}
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    save_file(kept, str(tmp), metadata=meta)
    os.replace(tmp, target)
    return loaded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m faceanything.checkpoint",
        description="Convert a checkpoint (ours, DA3's or the authors') to safetensors, once.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    conv = commands.add_parser("convert", help="IN (.pt, .pth, .safetensors) -> OUT.safetensors")
    conv.add_argument("source", type=Path)
    conv.add_argument("target", type=Path)
    conv.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="IN may run pickled code when loaded (only for a file from a source you trust)",
    )
    args = parser.parse_args(argv)
    if args.target.suffix != ".safetensors":
        parser.error(f"{args.target}: the output must end in .safetensors")
    try:
        loaded = convert(args.source, args.target, trust=args.trust_checkpoint)
    except (FileNotFoundError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.source} ({loaded.kind}, {len(loaded.state)} tensors) -> {args.target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
