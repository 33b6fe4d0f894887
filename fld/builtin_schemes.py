"""The built-in landmark schemes: iBUG 300-W (68 points), the PAIR challenge's 51 (68
without the jaw), WFLW (98) and COFW (29), and the conversions between them. Indices are
0-based; the types and their rules are ``fld.schemes``'s.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fld.schemes import Edge, Scheme, index_range, pairs_to_perm

# --- iBUG 300-W, 68 points --------------------------------------------------------
# jaw 0-16, brows 17-26, nose bridge 27-30, lower nose 31-35, eyes 36-47, mouth 48-67.
_PAIRS_68 = (
    [(i, 16 - i) for i in range(8)]
    + [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22)]
    + [(31, 35), (32, 34)]
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)]
)
_EDGES_68 = (
    Edge("jaw", index_range(0, 16)),
    Edge("brow_left", index_range(17, 21)),
    Edge("brow_right", index_range(22, 26)),
    Edge("nose_bridge", index_range(27, 30)),
    Edge("nose_lower", index_range(31, 35)),
    Edge("eye_left", index_range(36, 41), closed=True),
    Edge("eye_right", index_range(42, 47), closed=True),
    Edge("lip_outer", index_range(48, 59), closed=True),
    Edge("lip_inner", index_range(60, 67), closed=True),
)
JAW_68 = index_range(0, 16)

SCHEME_300W_68 = Scheme(
    name="300w_68",
    num_points=68,
    flip_perm=pairs_to_perm(68, _PAIRS_68),
    io_indices=(36, 45),
    pupils=(index_range(36, 41), index_range(42, 47)),
    edges=_EDGES_68,
)

# --- PAIR challenge, 51 points = 68 without the jaw -------------------------------
KEEP_51 = np.arange(17, 68)


def _shift(indices: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(i) - 17 for i in indices)


SCHEME_PAIR_51 = Scheme(
    name="pair_51",
    num_points=51,
    flip_perm=pairs_to_perm(51, [_shift(p) for p in _PAIRS_68 if min(p) >= 17]),
    io_indices=(19, 28),
    pupils=(_shift(index_range(36, 41)), _shift(index_range(42, 47))),
    edges=tuple(Edge(e.name, _shift(e.points), e.closed) for e in _EDGES_68[1:]),
)

# --- WFLW, 98 points ----------------------------------------------------------------
# contour 0-32, brows 33-41 / 42-50, nose bridge 51-54, lower nose 55-59,
# eyes 60-67 / 68-75, outer lip 76-87, inner lip 88-95, pupils 96, 97.
_PAIRS_98 = (
    [(i, 32 - i) for i in range(16)]
    + [(33, 46), (34, 45), (35, 44), (36, 43), (37, 42)]
    + [(38, 50), (39, 49), (40, 48), (41, 47)]
    + [(55, 59), (56, 58)]
    + [(60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73)]
    + [(76, 82), (77, 81), (78, 80), (83, 87), (84, 86)]
    + [(88, 92), (89, 91), (93, 95), (96, 97)]
)
SCHEME_WFLW_98 = Scheme(
    name="wflw_98",
    num_points=98,
    flip_perm=pairs_to_perm(98, _PAIRS_98),
    io_indices=(60, 72),
    pupils=((96,), (97,)),
    edges=(
        Edge("contour", index_range(0, 32)),
        Edge("brow_left", index_range(33, 41), closed=True),
        Edge("brow_right", index_range(42, 50), closed=True),
        Edge("nose_bridge", index_range(51, 54)),
        Edge("nose_lower", index_range(55, 59)),
        Edge("eye_left", index_range(60, 67), closed=True),
        Edge("eye_right", index_range(68, 75), closed=True),
        Edge("lip_outer", index_range(76, 87), closed=True),
        Edge("lip_inner", index_range(88, 95), closed=True),
    ),
)

# --- COFW, 29 points ----------------------------------------------------------------
# brows 0-7, eye corners 8-11, eyelids 12-15, pupils 16-17, nose 18-21, mouth 22-27,
# chin 28. Pairs follow the public COFW mirror; the edge grouping is ours.
SCHEME_COFW_29 = Scheme(
    name="cofw_29",
    num_points=29,
    flip_perm=pairs_to_perm(
        29,
        [(0, 1), (2, 3), (4, 6), (5, 7), (8, 9), (10, 11), (12, 14), (13, 15),
         (16, 17), (18, 19), (22, 23)],
    ),
    io_indices=(8, 9),
    pupils=((16,), (17,)),
    edges=(
        Edge("brow_left", (0, 4, 2, 5), closed=True),
        Edge("brow_right", (1, 6, 3, 7), closed=True),
        Edge("eye_left", (8, 12, 10, 13), closed=True),
        Edge("eye_right", (9, 14, 11, 15), closed=True),
        Edge("nose", (18, 21, 19)),
        Edge("lip_outer", (22, 24, 23, 27), closed=True),
        Edge("lip_inner", (22, 25, 23, 26), closed=True),
    ),
)

BUILTIN_SCHEMES = {
    s.name: s for s in (SCHEME_300W_68, SCHEME_PAIR_51, SCHEME_WFLW_98, SCHEME_COFW_29)
}


def convert_68_to_51(landmarks: np.ndarray) -> np.ndarray:
    """Drops the 17 jaw points: (..., 68, 2) -> (..., 51, 2)."""
    landmarks = np.asarray(landmarks)
    if landmarks.shape[-2] != 68:
        raise ValueError(f"convert_68_to_51 needs 68 points, got {landmarks.shape[-2]}")
    return landmarks[..., KEEP_51, :]


# Conversions between schemes, keyed by (source K, target scheme name).
CONVERSIONS = {(68, "pair_51"): convert_68_to_51}
# Schemes that are a subset of another's points: (source, target) -> source indices.
POINT_SUBSETS = {("300w_68", "pair_51"): KEEP_51}
