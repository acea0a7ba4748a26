"""Pictures of what was retrieved: one row per query, the query image then its top-K
gallery images, each framed green (same class as the query) or red (another class),
so a user can see what the model confuses.

    queries = pick_queries(len(features), 10, seed)
    neighbours = nearest(features, queries, k=5)
    save_grids(out_dir, paths, labels, queries, neighbours)   # -> retrievals_000.png, ...

Captions show the class name where `names` ({class id: name}, classes.txt) knows it,
else the class id; a name too long for the tile is cut with an ellipsis.
"""
import os
import re

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from dml.data import imgtool
from dml.outputs import write_set

THUMB = 96          # side of each image thumbnail, px
FRAME = 5           # frame width around a thumbnail, px
PAD = 6             # space between tiles and around the grid, px
CAPTION = 14        # height of the caption strip under each tile, px
ROWS_PER_GRID = 10  # queries per PNG file
TILE = THUMB + 2 * FRAME
GRID_NAME = re.compile(r"retrievals_\d+\.png")

BACKGROUND = (255, 255, 255)
QUERY_FRAME = (60, 90, 200)
HIT_FRAME = (0, 170, 0)
MISS_FRAME = (220, 0, 0)
UNKNOWN_FRAME = (150, 150, 150)
TEXT = (0, 0, 0)
UNREADABLE = (160, 160, 160)


def pick_queries(num_items, count, seed):
    """`count` distinct item indices drawn with `seed`, ascending (all when fewer)."""
    count = min(count, num_items)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_items, size=count, replace=False))


def _unit(fea):
    fea = np.asarray(fea, dtype=np.float32)
    norms = np.linalg.norm(fea, axis=1, keepdims=True)
    return fea / np.where(norms > 0, norms, 1.0)


def nearest(fea, queries, k):
    """[Q, k] indices of each query's k most cosine-similar items, itself excluded,
    ties to the lower index (the order the metrics rank by)."""
    fea = _unit(fea)
    sims = fea[queries] @ fea.T
    sims[np.arange(len(queries)), queries] = -np.inf
    k = min(k, len(fea) - 1)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def nearest_in(queries, gallery, k):
    """[Q, k] indices into `gallery` of each query row's k most cosine-similar gallery
    rows, ties to the lower index."""
    sims = _unit(queries) @ _unit(gallery).T
    return np.argsort(-sims, axis=1, kind="stable")[:, :min(k, len(gallery))]


def grid_size(num_rows, topk):
    """(width, height) in px of a grid of `num_rows` queries with `topk` results each."""
    width = PAD + (topk + 1) * (TILE + PAD)
    height = PAD + num_rows * (TILE + CAPTION + PAD)
    return width, height


def thumbnail(path):
    """The image scaled to fit THUMB x THUMB (aspect kept, white padding); grey if unreadable."""
    try:
        img = imgtool.decode_rgb(path)
    except imgtool.DecodeError:
        return Image.new("RGB", (THUMB, THUMB), UNREADABLE)
    img = ImageOps.contain(img, (THUMB, THUMB), Image.LANCZOS)
    tile = Image.new("RGB", (THUMB, THUMB), BACKGROUND)
    tile.paste(img, ((THUMB - img.width) // 2, (THUMB - img.height) // 2))
    return tile


def describe(label, names=None):
    """Caption text of a label: its class name when known; a negative label means
    unknown (search.py's unlabelled images)."""
    if label >= 0 and names and int(label) in names:
        return names[int(label)]
    return "class ?" if label < 0 else f"class {label}"


def fitted(draw, text, font, width):
    """`text`, cut with an ellipsis to fit `width` px."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def frame_colour(label, query_label):
    if label < 0 or query_label < 0:
        return UNKNOWN_FRAME
    return HIT_FRAME if label == query_label else MISS_FRAME


def draw_grid(paths, labels, queries, neighbours, names=None):
    """One PIL image: row r = query `queries[r]`, then its `neighbours[r]` in rank order
    (rows may hold fewer neighbours than others)."""
    topk = max((len(found) for found in neighbours), default=0)
    canvas = Image.new("RGB", grid_size(len(queries), topk), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for row, (query, found) in enumerate(zip(queries, neighbours)):
        y = PAD + row * (TILE + CAPTION + PAD)
        tiles = [(query, QUERY_FRAME, f"query, {describe(labels[query], names)}")]
        for rank, item in enumerate(found, start=1):
            tiles.append((item, frame_colour(labels[item], labels[query]), f"#{rank}, {describe(labels[item], names)}"))
        for col, (item, colour, caption) in enumerate(tiles):
            x = PAD + col * (TILE + PAD)
            draw.rectangle([x, y, x + TILE - 1, y + TILE - 1], fill=colour)
            canvas.paste(thumbnail(paths[item]), (x + FRAME, y + FRAME))
            draw.text((x + 1, y + TILE + 1), fitted(draw, caption, font, TILE + PAD - 2), fill=TEXT, font=font)
    return canvas


def save_grids(directory, paths, labels, queries, neighbours, rows_per_grid=ROWS_PER_GRID, names=None):
    """Write `retrievals_000.png`, ... (rows_per_grid queries each) to `directory` as
    one set: grids of an earlier run there that this one does not overwrite are
    removed, other files are left alone. `names`: {class id: name} for the captions.
    Return the written paths."""
    os.makedirs(directory, exist_ok=True)
    writers = {}
    for number, start in enumerate(range(0, len(queries), rows_per_grid)):
        part = slice(start, start + rows_per_grid)
        image = draw_grid(paths, labels, queries[part], neighbours[part], names)
        writers[os.path.join(directory, f"retrievals_{number:03d}.png")] = \
            lambda handle, image=image: image.save(handle, format="PNG")
    write_set(writers, stale=earlier_grids(directory))
    return list(writers)


def earlier_grids(directory):
    """The `retrievals_<number>.png` files already in `directory`."""
    return [os.path.join(directory, name) for name in os.listdir(directory) if GRID_NAME.fullmatch(name)]
