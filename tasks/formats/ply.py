"""PLY point clouds and meshes: the one writer and reader (binary little-endian).

Vertex properties are named columns, written in the order given: x y z, then e.g. nx ny nz
(COLMAP's fused cloud), red green blue (uchar), or a per-point `distance`. Faces, when given,
are triangles of vertex indices.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tasks.formats.atomic import write_bytes

_TYPES = {
    "float": "<f4",
    "float32": "<f4",
    "double": "<f8",
    "float64": "<f8",
    "uchar": "u1",
    "uint8": "u1",
    "int": "<i4",
    "int32": "<i4",
    "uint": "<u4",
    "uint32": "<u4",
}
_NAMES = {"<f4": "float", "<f8": "double", "u1": "uchar", "<i4": "int", "<u4": "uint"}


def write_ply(
    path: str | os.PathLike,
    vertices: Mapping[str, np.ndarray],
    *,
    faces: np.ndarray | None = None,
) -> Path:
    """Write (N,) vertex columns and optional (F, 3) triangles, atomically. Columns keep
    their type when PLY has it (float32, float64, uint8, int32, uint32); others become float32."""
    columns = {name: _ply_column(np.asarray(v)) for name, v in vertices.items()}
    dtype = [(name, v.dtype.str.lstrip("|")) for name, v in columns.items()]
    count = len(next(iter(columns.values())))
    table = np.empty(count, dtype=dtype)
    for name, values in columns.items():
        table[name] = values
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {count}"]
    header += [f"property {_NAMES[kind]} {name}" for name, kind in dtype]
    body = table.tobytes()
    if faces is not None:
        faces = np.asarray(faces, dtype=np.int64)
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
        rows = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
        rows["n"], rows["v"] = 3, faces
        body += rows.tobytes()
    return write_bytes(path, ("\n".join([*header, "end_header"]) + "\n").encode() + body)


def _ply_column(values: np.ndarray) -> np.ndarray:
    kind = values.dtype.newbyteorder("<").str.lstrip("|")
    return values.astype(kind if kind in _NAMES else "<f4", copy=False)


def read_ply_vertices(path: str | os.PathLike) -> np.ndarray:
    """The vertex element of a binary little-endian PLY as a structured (N,) array."""
    raw = Path(path).read_bytes()
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a PLY file")
    header = raw[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in header:
        raise ValueError(f"{path}: only binary little-endian PLY is read")
    count, fields, in_vertex = 0, [], False
    for words in (line.split() for line in header):
        if words[:1] == ["element"]:
            in_vertex = words[1] == "vertex"
            count = int(words[2]) if in_vertex else count
        elif words[:1] == ["property"] and in_vertex:
            if words[1] not in _TYPES:
                raise ValueError(f"{path}: vertex property type {words[1]!r} is not read")
            fields.append((words[2], _TYPES[words[1]]))
    try:
        return np.frombuffer(raw, dtype=np.dtype(fields), count=count, offset=end + 11)
    except ValueError as err:
        raise ValueError(f"{path}: truncated PLY ({err})") from err
