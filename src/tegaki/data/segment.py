"""Find the digits of a number written in one image: connected ink, merged and split, left to right.

    groups, note = find_digits(ink)      # ink: the ink map to_mnist computes (ink 1, paper 0)
    [g.box for g in groups]              # (x0, y0, x1, y1) in the ink map's pixels, x1/y1 exclusive
    from_ink(g.ink)                      # each digit made MNIST-like (tegaki.data.preprocess)

The steps:
  components  clear ink (>= 0.25) in 8-connected pieces; the faint rim round a stroke goes with the
              piece it borders
  merged      pieces that overlap horizontally by at least half the narrower one's width are one
              digit (the bar of a 5 written apart, a 4 in two strokes, a broken line); repeated
              until nothing changes
  flat        a flat piece (less than FLAT of the median height, e.g. the bar of a 5 written a little
              apart) joins the nearest group beside it, when closer than a quarter of that height; a
              crumb (less than CRUMB of the median group's ink) when closer than a twentieth
  specks      groups with less than SPECK of the largest group's ink are dropped
  split       a group wider than SPLIT times its height (or the digits' median height) is two or
              more touching digits: it is cut at the column of least ink in its middle half, where
              that column holds at most THIN_CUT of the group's mean column ink (or anyway when the
              group is wider than WIDE times the height), and each part is looked at again; the
              reader undoes the cut when the network reads the whole group as a sure digit
  checked     (by the reader) a group wider than MAYBE times the height whose read is unsure is cut
              at one of its thinnest middle columns when the network reads both parts as sure digits
  bounded     at most `max_digits` groups are read, the leftmost ones, with a note saying so
  lines       a group whose pieces lie in two bands, one above the other, gets a note: one line is read
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from tegaki.data.preprocess import ink_box

#: a group with less ink than this share of the largest group's is a speck
SPECK = 0.08
#: wider than this times its height: touching digits, to be cut
SPLIT = 1.2
#: wider than this times its height: cut even where the digits overlap (no thin column)
WIDE = 1.6
#: wider than this times its height: perhaps two touching digits, if the network agrees
MAYBE = 0.85
#: a cut goes through a column with at most this share of the group's mean ink per column
THIN_CUT = 0.45
#: a checked cut goes through a column with at most this share of the group's mean ink per column
CHECK_CUT = 1.0
#: a piece flatter than this share of the digits' median height is part of a digit beside it
FLAT = 0.45
#: a piece with less ink than this share of the median group's, close beside a group, is part of it
CRUMB = 0.25
#: read at most this many digits
MAX_DIGITS = 12
#: a photo of text can hold thousands of pieces: the merging looks at this many, the largest
MAX_PIECES = 200


@dataclass
class Group:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the ink map, x1/y1 exclusive
    ink: np.ndarray  # (y1-y0, x1-x0) the group's own ink (other groups' ink left out)
    whole: "Group | None" = None  # for a part of a cut group: the group before the cut


def _pieces(ink: np.ndarray) -> tuple[np.ndarray, list[list]]:
    """Label clear ink (rim attached): (labels (H, W), [[x0, y0, x1, y1, mass], ...] per label - 1).
    Dust (under a hundredth of the largest piece's ink) is left out, and beyond MAX_PIECES pieces
    all but the largest: a photo of text or gravel costs no more than a number. The work is done
    on the box around the ink (a drawing's digit covers a fraction of its canvas)."""
    box = ink_box(ink)
    if box is None:
        return np.zeros(ink.shape, np.int32), []
    y0, y1, x0, x1 = box
    labels, boxes = _pieces_in(ink[y0:y1, x0:x1])
    full = np.zeros(ink.shape, labels.dtype)
    full[y0: y0 + labels.shape[0], x0: x0 + labels.shape[1]] = labels
    return full, [[b[0] + x0, b[1] + y0, b[2] + x0, b[3] + y0, b[4]] if b[4] else b for b in boxes]


def _pieces_in(ink: np.ndarray) -> tuple[np.ndarray, list[list]]:
    """_pieces on an ink map with ink on every edge (outside it, nothing: the dilation's edge is
    zeros, which for a maximum over 5x5 is what reflecting the map's own edge would give)."""
    labels, n = ndimage.label(ink >= 0.25, structure=np.ones((3, 3), bool))
    if n == 0:
        return labels, []
    mass = np.bincount(labels.ravel(), weights=ink.ravel(), minlength=n + 1)[1:]  # (n,) ink per piece
    order = np.argsort(-mass, kind="stable")
    order = order[mass[order] >= 0.01 * mass[order[0]]][:MAX_PIECES]
    table = np.zeros(n + 1, np.int32)  # old label -> new label (0: dropped)
    table[order + 1] = np.arange(1, len(order) + 1)
    labels = table[labels]
    rim = (labels == 0) & (ink > 0)
    if rim.any():  # the anti-aliased rim (and dust beside a piece): to the neighbouring piece
        grown = ndimage.grey_dilation(labels, size=(5, 5), mode="constant", cval=0)
        labels = np.where(rim, grown, labels)
    mass = np.bincount(labels.ravel(), weights=ink.ravel(), minlength=len(order) + 1)[1:]
    boxes = []
    for i, sl in enumerate(ndimage.find_objects(labels, max_label=len(order))):
        boxes.append([0, 0, 0, 0, 0.0] if sl is None else
                     [sl[1].start, sl[0].start, sl[1].stop, sl[0].stop, float(mass[i])])
    return labels, boxes


def _merge(boxes: list[list]) -> list[tuple[list, set[int]]]:
    """Pieces overlapping horizontally by half the narrower width -> [(box, {labels}), ...]."""
    groups = [(list(b), {i + 1}) for i, b in enumerate(boxes) if b[4] > 0]
    changed = True
    while changed:
        changed = False
        groups.sort(key=lambda g: g[0][0])
        out: list[tuple[list, set[int]]] = []
        for box, members in groups:
            for ob, om in out:
                overlap = min(ob[2], box[2]) - max(ob[0], box[0])
                if overlap >= 0.5 * min(ob[2] - ob[0], box[2] - box[0]):
                    joined, om2 = _join((ob, om), (box, members))
                    ob[:] = joined
                    om |= om2
                    changed = True
                    break
            else:
                out.append((box, members))
        groups = out
    return groups


def _stacked(members: set[int], boxes: list[list]) -> bool:
    """Whether a group's pieces lie in two bands, one above the other with empty rows between, each
    with a quarter of the ink at least and a third of the group's height: digits written in two lines,
    which the merge (by horizontal overlap) made one column each."""
    spans = sorted((boxes[m - 1][1], boxes[m - 1][3], boxes[m - 1][4]) for m in members)
    top, bottom = spans[0][0], max(y1 for _, y1, _ in spans)
    total = sum(mass for *_, mass in spans)
    end, above = spans[0][1], spans[0][2]
    for y0, y1, mass in spans[1:]:
        if y0 > end and min(above, total - above) >= 0.25 * total and \
                min(end - top, bottom - y0) >= (bottom - top) / 3:
            return True
        end, above = max(end, y1), above + mass
    return False


def _join(a: tuple[list, set[int]], b: tuple[list, set[int]]) -> tuple[list, set[int]]:
    (x, m), (y, n) = a, b
    return [min(x[0], y[0]), min(x[1], y[1]), max(x[2], y[2]), max(x[3], y[3]), x[4] + y[4]], m | n


def _attach_flat(groups: list[tuple[list, set[int]]]) -> list[tuple[list, set[int]]]:
    """A flat piece (less than FLAT of the median height: the bar of a 5 lifted off) goes to the
    nearest group beside it when the gap is under a quarter of the median height; a crumb (less than
    CRUMB of the median group's ink: the end of a broken stroke) when it is under a twentieth."""
    height = float(np.median([b[3] - b[1] for b, _ in groups]))
    typical = float(np.median([b[4] for b, _ in groups]))
    groups = sorted(groups, key=lambda g: g[0][0])
    i = 0
    while i < len(groups) and len(groups) > 1:
        box = groups[i][0]
        reach = 0.25 * height if box[3] - box[1] < FLAT * height else 0.05 * height if box[4] < CRUMB * typical else -1
        gaps = [(max(0, max(b[0], box[0]) - min(b[2], box[2])), j) for j, (b, _) in enumerate(groups) if j != i]
        gap, j = min(gaps)
        if gap > reach:
            i += 1
            continue
        joined = _join(groups[j], groups[i])
        groups = [g for k, g in enumerate(groups) if k not in (i, j)] + [joined]
        groups.sort(key=lambda g: g[0][0])
        i = 0
    return groups


def _tight(ink: np.ndarray, x0: int, y0: int) -> Group | None:
    """A group's ink cropped to its own bounding box (offset x0, y0 in the ink map)."""
    box = ink_box(ink)
    if box is None:
        return None
    top, bottom, left, right = box
    return Group((x0 + left, y0 + top, x0 + right, y0 + bottom), ink[top:bottom, left:right])


def _split(g: Group, height: float, depth: int = 0) -> list[Group]:
    """Cut a group too wide for one digit at its thinnest middle column, recursively."""
    h, w = g.ink.shape
    if depth > 3 or w <= SPLIT * max(h, height) or w < 8:
        return [g]
    cols = ndimage.uniform_filter1d(g.ink.sum(axis=0), size=max(1, w // 40))  # (w,)
    lo, hi = w // 4, w - w // 4
    cut = lo + int(np.argmin(cols[lo:hi]))
    if cols[cut] > THIN_CUT * float(cols.mean()) and w <= WIDE * max(h, height):
        return [g]
    x0, y0 = g.box[:2]
    out = []
    for a, b in ((0, cut), (cut, w)):
        part = _tight(g.ink[:, a:b], x0 + a, y0)
        if part is not None:
            out += _split(part, height, depth + 1)
    return out


def cut_candidates(g: Group, height: float, count: int = 3) -> list[tuple[Group, Group]]:
    """Ways to cut a group that may be two touching digits (wider than MAYBE times its height, or the
    median height): at the `count` columns of least ink in its middle half, at least a tenth of its
    width apart. The reader keeps a cut only when the network reads both parts as digits and not
    the whole (tegaki.predict.Predictor.read_numbers)."""
    h, w = g.ink.shape
    if w <= MAYBE * max(h, height) or w < 8:
        return []
    cols = ndimage.uniform_filter1d(g.ink.sum(axis=0), size=max(1, w // 40))  # (w,)
    lo, hi = w // 4, w - w // 4
    cuts: list[int] = []
    for c in lo + np.argsort(cols[lo:hi], kind="stable"):
        if cols[c] > CHECK_CUT * float(cols.mean()):  # no column this thin: one digit, however unsure its read
            break
        if all(abs(int(c) - k) >= max(2, w // 10) for k in cuts):
            cuts.append(int(c))
        if len(cuts) == count:
            break
    x0, y0 = g.box[:2]
    out = []
    for c in cuts:
        left, right = _tight(g.ink[:, :c], x0, y0), _tight(g.ink[:, c:], x0 + c, y0)
        if left is not None and right is not None:
            out.append((left, right))
    return out


def median_height(groups: list[Group]) -> float:
    return float(np.median([g.box[3] - g.box[1] for g in groups])) if groups else 0.0


def group_count(ink: np.ndarray, max_digits: int = MAX_DIGITS) -> int:
    """len(find_digits(ink)[0]), cheaply where the answer is plain: one 8-connected piece of clear
    ink (so no dust, no specks, nothing to merge) whose box, rim included, is at most SPLIT times as
    wide as the clear ink is high (so it is never cut) is one group. The page's usual drawing."""
    mask = ink >= 0.25
    clear, inked = ink_box(mask), ink_box(ink)
    if clear is not None and inked[3] - inked[2] <= SPLIT * (clear[1] - clear[0]):  # group w <= this; h >= that
        crop = mask[clear[0]: clear[1], clear[2]: clear[3]]
        if ndimage.label(crop, structure=np.ones((3, 3), bool))[1] == 1:
            return 1
    return len(find_digits(ink, max_digits)[0])


def find_digits(ink: np.ndarray, max_digits: int = MAX_DIGITS) -> tuple[list[Group], str | None]:
    """The digit groups of an ink map, left to right, and a note (None, or why some were left out)."""
    labels, boxes = _pieces(ink)
    if not boxes:
        return [], None
    note = None
    groups = _attach_flat(_merge(boxes))
    biggest = max(b[4] for b, _ in groups)
    groups = [(b, m) for b, m in groups if b[4] >= SPECK * biggest]
    height = float(np.median([b[3] - b[1] for b, _ in groups]))
    found: list[Group] = []
    for (x0, y0, x1, y1, _), members in sorted(groups, key=lambda g: g[0][0]):
        mine = np.isin(labels[y0:y1, x0:x1], list(members))
        g = _tight(np.where(mine, ink[y0:y1, x0:x1], 0.0).astype(np.float32), x0, y0)
        if g is not None:
            parts = _split(g, height)
            for part in parts if len(parts) > 1 else []:
                part.whole = g
            found += parts
    found.sort(key=lambda g: g.box[0])
    if any(_stacked(members, boxes) for _, members in groups):
        note = "the ink seems to be in more than one line; only one line of digits is read, left to right"
    if len(found) > max_digits:
        note = f"too many marks ({len(found)}): read the first {max_digits}"
        found = found[:max_digits]
    return found, note
