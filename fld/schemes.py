"""Landmark schemes: the one table that says what each landmark index means.

A scheme owns, for K landmarks: the horizontal-flip permutation, the indices used to
normalize errors (outer eye corners for inter-ocular NME, the points averaged into each
pupil for inter-pupil NME), and the edge groups (boundary curves) used by the
Anisotropic Attention Module. Built-in schemes: ``300w_68``, ``pair_51``, ``wflw_98``,
``cofw_29``. Custom schemes are declared in a JSON file (see ``load_scheme_file``) and
used by passing the file path wherever a scheme name is accepted.

Indices are 0-based everywhere. Numpy only: the TensorFlow-free runtime imports this.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Edge:
    """A boundary curve through some landmarks, in drawing order."""

    name: str
    points: tuple[int, ...]
    closed: bool = False


@dataclasses.dataclass(frozen=True)
class Scheme:
    """A landmark scheme.

    Attributes:
        name: scheme name (``300w_68`` ...).
        num_points: K.
        flip_perm: ``flip_perm[i]`` is the index that point i becomes after a
            horizontal mirror (an involution).
        io_indices: (left, right) outer eye corners for inter-ocular NME.
        pupils: two index tuples; each pupil is the mean of its points (a single
            index when the scheme annotates the pupil itself).
        edges: boundary curves for the AAM edge maps.
    """

    name: str
    num_points: int
    flip_perm: tuple[int, ...]
    io_indices: tuple[int, int]
    pupils: tuple[tuple[int, ...], tuple[int, ...]]
    edges: tuple[Edge, ...]

    def __post_init__(self):
        k = self.num_points
        where = f"landmark scheme {self.name!r}"
        if k < 2:
            raise ValueError(f"{where}: needs at least 2 points, got {k}")
        perm = np.asarray(self.flip_perm)
        if perm.shape != (k,) or sorted(perm.tolist()) != list(range(k)):
            raise ValueError(f"{where}: flip_perm must be a permutation of 0..{k - 1}")
        if not np.array_equal(perm[perm], np.arange(k)):
            raise ValueError(f"{where}: flip_perm must be its own inverse (pairs swap)")
        used = list(self.io_indices) + [i for p in self.pupils for i in p]
        used += [i for e in self.edges for i in e.points]
        bad = [i for i in used if not 0 <= i < k]
        if bad:
            raise ValueError(f"{where}: indices out of range 0..{k - 1}: {sorted(set(bad))}")
        if len(self.io_indices) != 2 or self.io_indices[0] == self.io_indices[1]:
            raise ValueError(f"{where}: io_indices must be two different points")
        for e in self.edges:
            if len(e.points) < 2:
                raise ValueError(f"{where}: edge {e.name!r} needs at least 2 points")
        self.edge_flip_perm()   # every edge's mirror image must be an edge too

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    def edge_to_point(self) -> np.ndarray:
        """The AAM's fixed edge-to-point transform as a (E, K) float32 matrix plus bias.

        Returns ``(matrix, bias)``: ``matrix[e, p] = 1`` when point p lies on edge e;
        ``bias[p] = 1`` for points on no edge (ADNet), so that
        ``edge_maps @ matrix + bias`` gives one attention channel per point.
        """
        matrix = np.zeros((self.num_edges, self.num_points), np.float32)
        for e, edge in enumerate(self.edges):
            matrix[e, list(edge.points)] = 1.0
        bias = (matrix.sum(axis=0) == 0).astype(np.float32)
        return matrix, bias

    def edge_flip_perm(self) -> tuple[int, ...]:
        """``edge_flip_perm[e]``: the edge that edge e becomes after a mirror.

        Found by matching point sets through ``flip_perm``; an edge whose mirror image
        is not an edge of the scheme is an error (edge maps could not be flipped).
        """
        by_points = {frozenset(e.points): i for i, e in enumerate(self.edges)}
        perm = []
        for edge in self.edges:
            mirrored = frozenset(self.flip_perm[i] for i in edge.points)
            if mirrored not in by_points:
                raise ValueError(f"landmark scheme {self.name!r}: the mirror of edge "
                                 f"{edge.name!r} is not an edge of the scheme")
            perm.append(by_points[mirrored])
        return tuple(perm)

    def flip(self, landmarks: np.ndarray, width: float) -> np.ndarray:
        """Mirror (..., K, 2) landmarks in an image ``width`` pixels wide (0-based centers)."""
        out = np.asarray(landmarks, np.float32)[..., list(self.flip_perm), :].copy()
        out[..., 0] = (width - 1) - out[..., 0]
        return out

    def to_dict(self) -> dict:
        """The scheme as plain JSON types (edges as ``{name, points, closed}``): the one
        serialization, used by model configs and the ``.tflite`` metadata."""
        return {
            "name": self.name,
            "num_points": self.num_points,
            "flip_perm": list(self.flip_perm),
            "io_indices": list(self.io_indices),
            "pupils": [list(p) for p in self.pupils],
            "edges": [{"name": e.name, "points": list(e.points), "closed": e.closed}
                      for e in self.edges],
        }

    @classmethod
    def from_dict(cls, spec: dict, where: str = "scheme") -> "Scheme":
        """Rebuilds a scheme from ``to_dict``'s output; indices must be integers and
        errors name the field (``where.field``)."""
        edges = spec.get("edges", [])
        if not isinstance(edges, (list, tuple)):
            raise ValueError(f"{where}.edges must be a list, got {edges!r}")
        for j, e in enumerate(edges):
            if not isinstance(e.get("closed", False), bool):
                raise ValueError(f"{where}.edges[{j}].closed must be true or false")
        return cls(
            name=str(spec["name"]),
            num_points=index_value(spec["num_points"], f"{where}.num_points"),
            flip_perm=index_list(spec["flip_perm"], f"{where}.flip_perm"),
            io_indices=index_list(spec["io_indices"], f"{where}.io_indices"),
            pupils=tuple(index_list(p, f"{where}.pupils[{n}]")
                         for n, p in enumerate(spec["pupils"])),
            edges=tuple(Edge(str(e["name"]), index_list(e["points"], f"{where}.edges[{j}].points"),
                             e.get("closed", False)) for j, e in enumerate(edges)),
        )


def index_value(value, where: str) -> int:
    """A point index read from JSON: an integer (not a float such as 0.9, not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where} must be an integer, got {value!r}")
    return value


def index_list(values, where: str) -> tuple[int, ...]:
    """A JSON list of point indices (``index_value`` each)."""
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{where} must be a list of point indices, got {values!r}")
    return tuple(index_value(v, f"{where}[{i}]") for i, v in enumerate(values))


def pairs_to_perm(k: int, pairs: Sequence[Sequence[int]]) -> tuple[int, ...]:
    perm = list(range(k))
    for n, pair in enumerate(pairs):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"flip_pairs[{n}] must be a pair of point indices, got {pair!r}")
        a, b = index_list(pair, f"flip_pairs[{n}]")
        if not (0 <= a < k and 0 <= b < k):
            raise ValueError(f"flip_pairs[{n}] = {list(pair)}: index out of range 0..{k - 1}")
        perm[a], perm[b] = b, a
    return tuple(perm)


def index_range(a: int, b: int) -> tuple[int, ...]:
    """Inclusive index range."""
    return tuple(range(a, b + 1))


def load_scheme_file(path: str) -> Scheme:
    """Reads a custom scheme from JSON.

    Format::

        {"name": "my_12", "num_points": 12,
         "flip_pairs": [[0, 1], [2, 3]],          # unlisted points map to themselves
         "io_indices": [0, 1],
         "pupils": [[0, 4], [1, 5]],              # optional; default: the io points
         "edges": [{"name": "brow", "points": [0, 2, 4], "closed": false}]}
    """
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"scheme file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: not valid JSON ({type(e).__name__}: {e})") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e})") from None
    try:
        if not isinstance(spec, dict):
            raise TypeError("the file must hold a JSON object")
        k = index_value(spec["num_points"], "num_points")
        io = index_list(spec["io_indices"], "io_indices")
        edges = spec.get("edges", [])
        if not isinstance(edges, (list, tuple)):
            raise TypeError("edges must be a list")
        return Scheme.from_dict({
            "name": str(spec.get("name", os.path.splitext(os.path.basename(path))[0])),
            "num_points": k,
            "flip_perm": pairs_to_perm(k, spec.get("flip_pairs", [])),
            "io_indices": io,
            "pupils": spec.get("pupils") or [[io[0]], [io[1]]],
            "edges": [{"name": e.get("name", f"edge{j}"), "points": e["points"],
                       "closed": e.get("closed", False)} for j, e in enumerate(edges)],
        }, where="scheme")
    except (KeyError, TypeError, IndexError, AttributeError) as e:
        raise ValueError(f"{path}: malformed scheme ({type(e).__name__}: {e})") from None
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def get_scheme(name_or_path: str | Scheme) -> Scheme:
    """Returns a built-in scheme by name, or loads a custom one from a JSON path."""
    if isinstance(name_or_path, Scheme):
        return name_or_path
    if name_or_path in BUILTIN_SCHEMES:
        return BUILTIN_SCHEMES[name_or_path]
    if str(name_or_path).endswith(".json"):
        return load_scheme_file(name_or_path)
    raise ValueError(
        f"unknown landmark scheme {name_or_path!r}: use one of "
        f"{sorted(BUILTIN_SCHEMES)} or the path of a scheme .json file"
    )


def subset_indices(source: Scheme, target: Scheme) -> np.ndarray:
    """Indices of ``target``'s points among ``source``'s (e.g. 300w_68 -> pair_51: 17..67)."""
    if source == target:
        return np.arange(source.num_points)
    indices = POINT_SUBSETS.get((source.name, target.name))
    if indices is None:
        known = ", ".join(f"{a} -> {b}" for a, b in POINT_SUBSETS)
        raise ValueError(f"scheme {target.name!r} is not a subset of {source.name!r}'s points "
                         f"(known: {known})")
    return indices.copy()


def adapt_landmarks(landmarks: np.ndarray, scheme: Scheme, source: str = "") -> np.ndarray:
    """Returns landmarks in ``scheme``, converting when a conversion exists.

    Raises a ValueError naming ``source`` (e.g. the annotation file) when the number of
    points does not fit the scheme and no conversion is known.
    """
    k = landmarks.shape[-2]
    if k == scheme.num_points:
        return landmarks
    convert = CONVERSIONS.get((k, scheme.name))
    if convert is None:
        raise ValueError(
            f"{source or 'landmarks'}: has {k} points, scheme {scheme.name!r} needs "
            f"{scheme.num_points}"
        )
    return convert(landmarks)


# The built-in tables are built from the types above.
from fld.builtin_schemes import (  # noqa: E402, F401
    BUILTIN_SCHEMES, CONVERSIONS, POINT_SUBSETS, SCHEME_300W_68, SCHEME_PAIR_51, convert_68_to_51)
