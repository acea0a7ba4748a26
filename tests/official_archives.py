"""Small synthetic copies of the official archives, laid out file for file like the real
ones (names, headers, field orders, 1-based ids, the .mat struct), for data/prepare.py.

Each builder returns the folder to pass as --src and a description of what it wrote, so
the tests can compute the expected lists on their own.
"""
import os

import cv2
import numpy as np

BACKGROUND, BOX_COLOUR = (30, 30, 30), (0, 200, 250)


def write_image(path, size, box=None):
    """A small JPEG; when box = (x0, y0, x1, y1) is given, that region is painted BOX_COLOUR."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    width, height = size
    pixels = np.full((height, width, 3), BACKGROUND, np.uint8)
    if box is not None:
        x0, y0, x1, y1 = box
        pixels[y0:y1, x0:x1] = BOX_COLOUR
    assert cv2.imwrite(path, pixels, [cv2.IMWRITE_JPEG_QUALITY, 100])


def cub(root, images_per_class=(2, 3, 4, 5), empty_images=False):
    """CUB_200_2011/: images.txt, image_class_labels.txt, classes.txt, bounding_boxes.txt,
    train_test_split.txt, images/NNN.Name/Name_XXXX_YYY.jpg. Class c has images_per_class[c-1]
    images; the box of image i is (3, 2) + (10 + i % 4, 8) in x, y, width, height."""
    src = os.path.join(root, "CUB_200_2011")
    os.makedirs(os.path.join(src, "images"))
    classes, images, boxes = [], [], {}
    image_id = 0
    for class_id, count in enumerate(images_per_class, start=1):
        folder = f"{class_id:03d}.Bird_{class_id}"
        classes.append((class_id, folder))
        for k in range(count):
            image_id += 1
            name = f"{folder}/Bird_{class_id}_{k:04d}_{1000 + image_id}.jpg"
            images.append((image_id, name, class_id))
            boxes[image_id] = (3, 2, 10 + image_id % 4, 8)
            path = os.path.join(src, "images", name)
            if empty_images:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                open(path, "w").close()
            else:
                x, y, w, h = boxes[image_id]
                write_image(path, (24, 16), (x, y, x + w, y + h))
    _lines(src, "classes.txt", [f"{c} {name}" for c, name in classes])
    _lines(src, "images.txt", [f"{i} {name}" for i, name, _ in images])
    _lines(src, "image_class_labels.txt", [f"{i} {c}" for i, _, c in images])
    _lines(src, "bounding_boxes.txt", [f"{i} {x:.1f} {y:.1f} {w:.1f} {h:.1f}" for i, (x, y, w, h) in boxes.items()])
    _lines(src, "train_test_split.txt", [f"{i} {i % 2}" for i, _, _ in images])
    return src, {"images": images, "boxes": boxes, "num_classes": len(images_per_class)}


def cars(root, images_per_class=(2, 1, 3, 2), mat_fields=None):
    """cars196/: cars_annos.mat ('annotations' 1xN struct: relative_im_path, bbox_x1, bbox_y1,
    bbox_x2, bbox_y2, class, test; 'class_names' 1xC cell) and car_ims/000001.jpg ...
    Image n's box is x 2..(11 + n % 3), y 3..9 (1-based, inclusive, as in the real file)."""
    import scipy.io

    src = os.path.join(root, "cars196")
    fields = mat_fields or ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    records = []
    for class_id, count in enumerate(images_per_class, start=1):
        for _ in range(count):
            n = len(records) + 1
            rel = f"car_ims/{n:06d}.jpg"
            box = (2, 3, 11 + n % 3, 9)
            write_image(os.path.join(src, rel), (20, 14), (box[0] - 1, box[1] - 1, box[2], box[3]))
            records.append({"relative_im_path": rel, "bbox_x1": box[0], "bbox_y1": box[1], "bbox_x2": box[2],
                            "bbox_y2": box[3], "class": class_id, "test": n % 2})
    annotations = np.zeros((1, len(records)), dtype=[(f, "O") for f in fields])
    for j, rec in enumerate(records):
        for f in fields:
            value = rec[f]
            annotations[0, j][f] = np.array([value]) if isinstance(value, str) else np.array(
                [[value]], dtype=np.uint8 if f in ("class", "test") else np.uint16)
    names = np.empty((1, len(images_per_class)), dtype=object)
    for c in range(len(images_per_class)):
        names[0, c] = np.array([f"Make{c + 1} Model Sedan 2012"])
    scipy.io.savemat(os.path.join(src, "cars_annos.mat"), {"annotations": annotations, "class_names": names})
    return src, {"records": records, "num_classes": len(images_per_class)}


# (item number, category, images per status)
INSHOP_ITEMS = [
    (2, "WOMEN/Dresses", {"train": 3}),
    (7, "MEN/Denim", {"train": 2}),
    (9, "WOMEN/Dresses", {"train": 1}),
    (4, "MEN/Denim", {"query": 2, "gallery": 1}),
    (12, "WOMEN/Blouses_Shirts", {"query": 1, "gallery": 2}),
]


def inshop(root, items=INSHOP_ITEMS, declared=None):
    """In-shop/: Eval/list_eval_partition.txt (count line, header line, then
    'img/CAT/SUB/id_XXXXXXXX/NN_K_view.jpg  id_XXXXXXXX  status' rows padded like the
    real file) and Img/img/... images."""
    src = os.path.join(root, "In-shop")
    rows = []
    for item, category, per_status in items:
        k = 0
        for status, count in per_status.items():
            for _ in range(count):
                k += 1
                name = f"img/{category}/id_{item:08d}/{k:02d}_{k}_front.jpg"
                write_image(os.path.join(src, "Img", name), (12, 16))
                rows.append((name, f"id_{item:08d}", status))
    lines = [str(len(rows) if declared is None else declared), "image_name item_id evaluation_status"]
    lines += [f"{name:<64}{item:<24}{status}" for name, item, status in rows]
    os.makedirs(os.path.join(src, "Eval"))
    _lines(os.path.join(src, "Eval"), "list_eval_partition.txt", lines)
    return src, {"rows": rows}


def sop(root):
    """Stanford_Online_Products/: Ebay_train.txt, Ebay_test.txt (header, 1-based ids) and
    the images they name."""
    src = os.path.join(root, "Stanford_Online_Products")
    lists = {
        "Ebay_train.txt": [(1, 1, 1, "bicycle_final/111_0.JPG"), (2, 1, 1, "bicycle_final/111_1.JPG"),
                           (3, 2, 2, "chair_final/222_0.JPG")],
        "Ebay_test.txt": [(4, 3, 1, "bicycle_final/333_0.JPG"), (5, 3, 1, "bicycle_final/333_1.JPG"),
                          (6, 4, 2, "chair_final/444_0.JPG"), (7, 4, 2, "chair_final/444_1.JPG")],
    }
    for name, rows in lists.items():
        for row in rows:
            write_image(os.path.join(src, row[3]), (10, 10))
        _lines(src, name, ["image_id class_id super_class_id path"] + [" ".join(map(str, r)) for r in rows])
    return src, lists


def _lines(folder, name, lines):
    with open(os.path.join(folder, name), "w") as handle:
        handle.write("\n".join(lines) + "\n")
