"""Annotation readers: iBUG ``.pts`` folders, WFLW ``.txt`` lists and CSV tables -> Records.

Every reader returns landmarks as 0-based pixel centers (``fld.crop``'s convention):

- iBUG ``.pts`` are 1-based (the center of the top-left pixel is (1, 1)); ``read_pts``
  subtracts 1, once, and ``write_pts`` adds it back.
- WFLW lists are already 0-based; CSV tables are defined as 0-based.

A bad file (unreadable, wrong number of points, non-numeric or non-finite values, a
missing image or one whose header cannot be read, a header that disagrees with the
points, points outside the image: ``check_inside_image``) raises ``AnnotationError``
naming the file (and line) and the problem. With ``skip_bad=True`` bad entries are
skipped instead, and one ``AnnotationWarning`` says how many and why.

Numpy only (no TensorFlow).
"""

from __future__ import annotations

import csv
import os
from typing import Optional

import numpy as np

from fld.data.annotation_checks import (  # noqa: F401  (re-exported: the readers' API)
    IMAGE_EXTENSIONS, OUTSIDE_MARGIN, AnnotationError, AnnotationWarning, BadEntries,
    check_image, check_inside_image, parse_number)
from fld.data.records import Record
from fld.fileio import write_text_atomic
from fld.schemes import Scheme, adapt_landmarks, get_scheme

WFLW_NUM_POINTS = 98
WFLW_ATTRIBUTES = ("pose", "expression", "illumination", "make_up", "occlusion", "blur")
# --- iBUG .pts ----------------------------------------------------------------------


def read_pts(path: str) -> np.ndarray:
    """Reads an iBUG ``.pts`` file as (K, 2) float32, 0-based pixel centers.

    Accepts the standard layout (``version: 1``, ``n_points: N``, ``{``, N lines
    ``x y``, ``}``) and a headerless one (just the ``x y`` lines). Raises
    ``AnnotationError`` when the file cannot be read, a value is non-numeric or
    non-finite, ``n_points`` disagrees with the point lines, or the ``}`` is missing.
    """
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{path}: cannot read ({e})") from None
    lines = [(i + 1, line.strip()) for i, line in enumerate(text.splitlines())]
    lines = [(n, line) for n, line in lines if line]

    header: dict[str, str] = {}
    body = lines
    has_brace = any(line == "{" for _, line in lines)
    if has_brace:
        start = next(j for j, (_, line) in enumerate(lines) if line == "{")
        for n, line in lines[:start]:
            key, sep, value = line.partition(":")
            if not sep:
                raise AnnotationError(f"{path}:{n}: expected a 'key: value' header line, "
                                      f"got {line!r}")
            header[key.strip().lower()] = value.strip()
        ends = [j for j, (_, line) in enumerate(lines) if line == "}"]
        if not ends:
            raise AnnotationError(f"{path}: truncated file, no closing '}}' after the points")
        end = ends[0]
        if end < start:
            raise AnnotationError(f"{path}:{lines[end][0]}: '}}' before '{{'")
        if end != len(lines) - 1:
            n, line = lines[end + 1]
            raise AnnotationError(f"{path}:{n}: unexpected content after '}}': {line!r}")
        body = lines[start + 1:end]

    if not has_brace and lines and ":" in lines[0][1]:
        raise AnnotationError(f"{path}: header without '{{' and points (truncated file?)")
    points = []
    for n, line in body:
        tokens = line.split()
        if len(tokens) != 2:
            raise AnnotationError(f"{path}:{n}: expected 'x y', got {line!r}")
        points.append([parse_number(t, f"{path}:{n}") for t in tokens])
    if not points:
        raise AnnotationError(f"{path}: no landmark points")
    if "n_points" in header:
        try:
            expected = int(header["n_points"])
        except ValueError:
            raise AnnotationError(
                f"{path}: n_points header is not an integer: {header['n_points']!r}"
            ) from None
        if expected != len(points):
            raise AnnotationError(
                f"{path}: header says n_points: {expected} but the file has "
                f"{len(points)} point lines"
            )
    # iBUG is 1-based: convert to 0-based pixel centers, here and nowhere else.
    return (np.asarray(points, np.float64) - 1.0).astype(np.float32)


def write_pts(path: str, landmarks: np.ndarray) -> None:
    """Writes (K, 2) 0-based landmarks as an iBUG ``.pts`` file (1-based), atomically."""
    pts = np.asarray(landmarks, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
        raise ValueError(f"write_pts {path}: landmarks must be (K, 2), got {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise ValueError(f"write_pts {path}: landmarks contain NaN or inf")
    lines = ["version: 1", f"n_points: {len(pts)}", "{"]
    lines += [f"{x + 1.0:.6f} {y + 1.0:.6f}" for x, y in pts]
    lines.append("}")
    write_text_atomic(path, "\n".join(lines) + "\n")


# --- shared helpers -----------------------------------------------------------------


def _adapt(landmarks: np.ndarray, scheme: Optional[Scheme], where: str) -> np.ndarray:
    if scheme is None:
        return landmarks
    try:
        return adapt_landmarks(landmarks, scheme, source=where)
    except ValueError as e:
        raise AnnotationError(str(e)) from None


def _subset(relative_path: str) -> str:
    """The first folder of a path relative to the dataset root, or ''."""
    parts = os.path.normpath(relative_path).replace("\\", "/").split("/")
    return parts[0] if len(parts) > 1 and parts[0] not in ("", ".", "..") else ""


def _face_record(image_path: str, landmarks: np.ndarray, scheme: Optional[Scheme], where: str,
                 subset: str, box=None, attributes=None) -> Record:
    """The checked Record of one face: its image exists, its points lie in it, and they
    fit ``scheme``."""
    check_image(image_path, where)
    check_inside_image(image_path, landmarks, where)
    return Record(image_path, _adapt(landmarks, scheme, where), box, subset, attributes)


def _resolve_scheme(scheme) -> Optional[Scheme]:
    return None if scheme is None else get_scheme(scheme)


# --- folders of .pts + images --------------------------------------------------------


def read_pts_dir(root: str, scheme=None, skip_bad: bool = False) -> list[Record]:
    """Reads every ``.pts`` under ``root`` (recursively) with the image of the same stem.

    The image is ``STEM.jpg/.jpeg/.png/.bmp`` (any case) in the same folder; a missing
    image, or several candidates, is an error. Records are sorted by ``.pts`` path.
    ``scheme`` (a name, JSON path or ``Scheme``) adapts the points, e.g. 68 -> 51 for
    ``pair_51``; a point count that does not fit is an error. ``box`` is None (.pts has
    no box); ``subset`` is the first folder under ``root``.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"annotation folder not found: {root}")
    scheme = _resolve_scheme(scheme)
    found = []  # (pts path, {stem: [image paths]})
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        images: dict[str, list[str]] = {}
        for name in files:
            stem, ext = os.path.splitext(name)
            if ext.lower() in IMAGE_EXTENSIONS:
                images.setdefault(stem, []).append(os.path.join(folder, name))
        found += [(os.path.join(folder, name), images)
                  for name in files if name.lower().endswith(".pts")]
    if not found:
        raise AnnotationError(f"{root}: no .pts annotation files in this folder or below")
    found.sort(key=lambda item: item[0])

    bad = BadEntries(root, skip_bad)
    records = []
    for pts_path, images in found:
        try:
            stem = os.path.splitext(os.path.basename(pts_path))[0]
            candidates = sorted(images.get(stem, []))
            if not candidates:
                raise AnnotationError(
                    f"{pts_path}: image file not found (looked for {stem}"
                    f"{{{','.join(IMAGE_EXTENSIONS)}}} beside it)")
            if len(candidates) > 1:
                raise AnnotationError(f"{pts_path}: several images match: {candidates}")
            landmarks = _adapt(read_pts(pts_path), scheme, pts_path)
            check_inside_image(candidates[0], landmarks, pts_path)
            records.append(Record(candidates[0], landmarks, None,
                                  _subset(os.path.relpath(pts_path, root))))
        except AnnotationError as e:
            bad.handle(e)
    return bad.finish(records, len(found))


# --- WFLW list files ------------------------------------------------------------------


def read_wflw(annotation_txt: str, image_root: str, skip_bad: bool = False,
              scheme=None) -> list[Record]:
    """Reads a WFLW annotation list (e.g. ``list_98pt_rect_attr_train.txt``).

    One face per line: 196 numbers (98 x, y pairs, 0-based pixel coordinates as in
    WFLW), 4 box numbers (x_min y_min x_max y_max), 6 attribute flags (pose,
    expression, illumination, make-up, occlusion, blur), then the image path relative
    to ``image_root``. The flags are kept in ``Record.attributes``.
    """
    scheme = _resolve_scheme(scheme)
    n_numbers = 2 * WFLW_NUM_POINTS + 4 + len(WFLW_ATTRIBUTES)
    try:
        with open(annotation_txt, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{annotation_txt}: cannot read ({e})") from None
    entries = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    if not entries:
        raise AnnotationError(f"{annotation_txt}: no annotation lines")

    bad = BadEntries(annotation_txt, skip_bad)
    records = []
    for n, line in entries:
        where = f"{annotation_txt}:{n}"
        try:
            tokens = line.split(None, n_numbers)
            if len(tokens) != n_numbers + 1:
                raise AnnotationError(
                    f"{where}: expected {n_numbers} numbers and an image path "
                    f"({n_numbers + 1} fields), got {len(tokens)} fields")
            values = [parse_number(t, where) for t in tokens[:n_numbers]]
            k2 = 2 * WFLW_NUM_POINTS
            landmarks = np.asarray(values[:k2], np.float32).reshape(-1, 2)
            box = np.asarray(values[k2:k2 + 4], np.float32)
            flags = values[k2 + 4:]
            if any(v != int(v) for v in flags):
                raise AnnotationError(f"{where}: attribute flags must be integers, got {flags}")
            relative = tokens[-1].strip()
            records.append(_face_record(
                os.path.join(image_root, relative), landmarks, scheme, where, _subset(relative),
                box, dict(zip(WFLW_ATTRIBUTES, (int(v) for v in flags)))))
        except AnnotationError as e:
            bad.handle(e)
    return bad.finish(records, len(entries))


# --- CSV tables -------------------------------------------------------------------------


def read_csv(path: str, image_root: Optional[str] = None, skip_bad: bool = False,
             scheme=None) -> list[Record]:
    """Reads a CSV table: a header row, then ``image,x0,y0,x1,y1,...`` per face.

    Coordinates are 0-based pixel centers (the center of the top-left pixel is (0, 0)).
    The image path is relative to the CSV's folder, or to ``image_root`` when given
    (absolute paths are used as they are). The header's column names are not
    interpreted, only counted: 1 + 2K columns.
    """
    scheme = _resolve_scheme(scheme)
    base = image_root if image_root is not None else os.path.dirname(os.path.abspath(path))
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise AnnotationError(f"{path}: cannot read ({e})") from None
    rows = [(n, row) for n, row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise AnnotationError(f"{path}: empty CSV, expected a header row")
    header = rows[0][1]
    if len(header) < 3 or len(header) % 2 != 1:
        raise AnnotationError(
            f"{path}:{rows[0][0]}: header must be 'image' then x,y columns (1 + 2K "
            f"columns), got {len(header)} columns")
    body = rows[1:]
    if not body:
        raise AnnotationError(f"{path}: no annotation rows after the header")

    bad = BadEntries(path, skip_bad)
    records = []
    for n, row in body:
        where = f"{path}:{n}"
        try:
            if len(row) != len(header):
                raise AnnotationError(
                    f"{where}: expected {len(header)} columns like the header, got {len(row)}")
            values = [parse_number(cell.strip(), where) for cell in row[1:]]
            relative = row[0].strip()
            records.append(_face_record(
                os.path.join(base, relative), np.asarray(values, np.float32).reshape(-1, 2),
                scheme, where, _subset(relative)))
        except AnnotationError as e:
            bad.handle(e)
    return bad.finish(records, len(body))


# --- dispatch -----------------------------------------------------------------------------


def read_annotations(path: str, scheme=None, skip_bad: bool = False,
                     image_root: Optional[str] = None) -> list[Record]:
    """Reads annotations of any supported format, chosen by ``path``.

    A folder -> ``.pts`` files with their images (``read_pts_dir``); ``*.csv`` ->
    ``read_csv``; ``*.txt`` -> a WFLW list (``read_wflw``; images under
    ``image_root``, by default the list's folder). ``scheme`` adapts or checks the
    point count.
    """
    if os.path.isdir(path):
        return read_pts_dir(path, scheme=scheme, skip_bad=skip_bad)
    if not os.path.exists(path):
        raise FileNotFoundError(f"annotation path not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".csv":
        return read_csv(path, image_root=image_root, skip_bad=skip_bad, scheme=scheme)
    if ext == ".txt":
        root = image_root if image_root is not None else os.path.dirname(os.path.abspath(path))
        return read_wflw(path, root, skip_bad=skip_bad, scheme=scheme)
    raise AnnotationError(
        f"{path}: unknown annotation format {ext!r}: use a folder of .pts files, "
        f"a .csv table or a WFLW .txt list")
