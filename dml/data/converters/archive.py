"""What a reader gives back: the lists to write, and the boxes if the set has them."""
import collections

# lists: {list file name: [image_lists.Entry]}; boxes: {image path: (x0, y0, x1, y1)} in
# 0-based pixel coordinates, x1/y1 exclusive, or None; image_root: where crops are mirrored from.
Archive = collections.namedtuple("Archive", "lists boxes image_root")


def split_half(num_classes):
    """The literature's class split of CUB and Cars: the first half of the class ids trains."""
    return num_classes // 2
