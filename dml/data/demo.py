"""Build the bundled demo data set: synthetic "products" in the SOP list format.

Each class is one object (a few coloured shapes with a texture, built from the class
seed); each of its images shows that object under a new pose, scale, position,
colour cast and background, saved as JPEG or PNG like SOP's photos. Train and test
classes are disjoint. The output is the same on every run for the same arguments.

    python data/make_demo.py                      # -> data/demo/
    python data/make_demo.py --out DIR --train_classes 100 --test_classes 100
    python data/make_demo.py --layout folders --out data/shop   # a folder per class, no lists

--layout folders writes every class (train and test classes alike) as a folder named
after it ("chair 0002", "coffee maker 0003", ...), the way a catalogue of your own
arrives: `data/prepare.py folders` then checks and splits it.
"""
import argparse
import os
import sys

import cv2
import numpy as np

NUM_SUPER_CLASSES = 12  # SOP's super classes: bicycle, cabinet, chair, ...
SUPER_NAMES = ("bicycle", "cabinet", "chair", "coffee maker", "fan", "kettle", "lamp", "mug", "sofa", "stapler",
               "table", "toaster")


def object_spec(class_seed):
    """The fixed look of one class: shapes with colours, sizes and offsets."""
    rng = np.random.default_rng([7, class_seed])
    shapes = []
    for _ in range(int(rng.integers(2, 5))):
        shapes.append(
            {
                "kind": int(rng.integers(0, 3)),  # ellipse, polygon, rectangle
                "color": rng.integers(20, 236, size=3),
                "center": rng.uniform(-0.15, 0.15, size=2),
                "size": rng.uniform(0.2, 0.4, size=2),
                "angle": rng.uniform(0, 180),
                "sides": int(rng.integers(3, 7)),
                "stripes": int(rng.integers(0, 4)),
            }
        )
    return shapes


def background(rng, size):
    """A smooth two-colour gradient with noise, like a photo backdrop."""
    c0, c1 = rng.integers(0, 256, size=3), rng.integers(0, 256, size=3)
    ramp = np.linspace(0, 1, size)[:, None, None]
    grad = c0 * (1 - ramp) + c1 * ramp
    if rng.integers(0, 2):
        grad = grad.transpose(1, 0, 2)
    img = np.broadcast_to(grad, (size, size, 3)) + rng.normal(0, 8, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8).copy()


def draw_shape(canvas, shape, size, rng):
    center = (np.array([0.5, 0.5]) + shape["center"]) * size
    axes = shape["size"] * size
    color = tuple(int(c) for c in np.clip(shape["color"] + rng.normal(0, 12, 3), 0, 255))
    if shape["kind"] == 0:
        cv2.ellipse(canvas, _pt(center), _pt(axes), shape["angle"], 0, 360, color, -1, cv2.LINE_AA)
    else:
        sides = 4 if shape["kind"] == 2 else shape["sides"]
        angles = np.deg2rad(shape["angle"]) + np.arange(sides) * 2 * np.pi / sides
        pts = center + np.stack([np.cos(angles) * axes[0], np.sin(angles) * axes[1]], 1)
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], color, cv2.LINE_AA)
    for k in range(shape["stripes"]):
        offset = (k - shape["stripes"] / 2) * axes[1] * 0.5
        p0 = center + np.array([-axes[0] * 0.7, offset])
        p1 = center + np.array([axes[0] * 0.7, offset])
        cv2.line(canvas, _pt(p0), _pt(p1), (255 - color[0], 255 - color[1], 255 - color[2]), 2, cv2.LINE_AA)


def _pt(xy):
    return int(round(xy[0])), int(round(xy[1]))


def render(shapes, image_seed, size):
    """One photo of the object: new pose, scale, shift, colour cast and backdrop."""
    rng = np.random.default_rng([11, image_seed])
    obj = np.zeros((size, size, 3), np.uint8)
    for shape in shapes:
        draw_shape(obj, shape, size, rng)
    mask = (obj.sum(axis=2) > 0).astype(np.float32)
    warp = cv2.getRotationMatrix2D(
        (size / 2, size / 2), rng.uniform(-30, 30), rng.uniform(0.8, 1.2)
    )
    warp[:, 2] += rng.uniform(-0.08, 0.08, size=2) * size
    obj = cv2.warpAffine(obj, warp, (size, size), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(mask, warp, (size, size), flags=cv2.INTER_LINEAR)[..., None]
    cast = rng.uniform(0.8, 1.2, size=3) * rng.uniform(0.85, 1.15)
    obj = np.clip(obj * cast, 0, 255)
    img = background(rng, size) * (1 - mask) + obj * mask
    if rng.integers(0, 2):
        img = img[:, ::-1]
    return np.clip(img, 0, 255).astype(np.uint8)


def write_images(out_dir, rel_dir, class_seed, per_class, size):
    """Write one class's images into out_dir/rel_dir; return their paths relative to out_dir."""
    shapes = object_spec(class_seed)
    os.makedirs(os.path.join(out_dir, rel_dir), exist_ok=True)
    written = []
    for i in range(per_class):
        ext = ".png" if (class_seed + i) % 5 == 0 else ".jpg"
        rel = os.path.join(rel_dir, f"{class_seed:04d}_{i}{ext}")
        rgb = render(shapes, class_seed * 1000 + i, size)
        params = [cv2.IMWRITE_JPEG_QUALITY, 90] if ext == ".jpg" else []
        cv2.imwrite(os.path.join(out_dir, rel), rgb[..., ::-1], params)
        written.append(rel)
    return written


def super_class(class_seed):
    return class_seed % NUM_SUPER_CLASSES + 1


def write_split(out_dir, split, first_class, num_classes, per_class, size):
    """Write the images of one split; return list rows (image_id, class_id, super, path)."""
    rows = []
    for c in range(num_classes):
        class_seed = first_class + c
        super_id = super_class(class_seed)
        rel_dir = os.path.join(f"super{super_id:02d}_final", f"{split}_{class_seed:04d}")
        for rel in write_images(out_dir, rel_dir, class_seed, per_class, size):
            rows.append((len(rows) + 1, c + 1, super_id, rel))
    return rows


def class_folder_name(class_seed):
    """A product-like class name, e.g. "coffee maker 0003"."""
    return f"{SUPER_NAMES[super_class(class_seed) - 1]} {class_seed:04d}"


def write_folders(out_dir, num_classes, per_class, size):
    """Every class as a folder named after it; return the number of images."""
    return sum(len(write_images(out_dir, class_folder_name(seed), seed, per_class, size))
               for seed in range(num_classes))


def write_list(path, rows):
    with open(path, "w") as handle:
        handle.write("image_id class_id super_class_id path\n")
        for row in rows:
            handle.write("%d %d %d %s\n" % row)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("data", "demo"), help="output directory (default data/demo)")
    parser.add_argument("--train_classes", type=int, default=100)
    parser.add_argument("--test_classes", type=int, default=100)
    parser.add_argument("--images_per_class", type=int, default=6)
    parser.add_argument("--size", type=int, default=96, help="image side in pixels")
    parser.add_argument("--layout", choices=("lists", "folders"), default="lists",
                        help="lists: SOP-style folders with Ebay_train.txt / Ebay_test.txt (default); folders: one "
                             "folder per class named after it, no lists (for data/prepare.py folders)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.layout == "folders":
        num_classes = args.train_classes + args.test_classes
        count = write_folders(args.out, num_classes, args.images_per_class, args.size)
        print(f"demo data: {count} images of {num_classes} classes in {args.out}, one folder per class")
        return
    train = write_split(args.out, "train", 0, args.train_classes, args.images_per_class, args.size)
    test = write_split(
        args.out, "test", args.train_classes, args.test_classes, args.images_per_class, args.size
    )
    write_list(os.path.join(args.out, "Ebay_train.txt"), train)
    write_list(os.path.join(args.out, "Ebay_test.txt"), test)
    print(f"demo data: {len(train)} train / {len(test)} test images in {args.out}")


if __name__ == "__main__":
    sys.exit(main())
