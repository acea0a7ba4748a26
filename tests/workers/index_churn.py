"""Worker for the kill test: flips an index between two known states forever
(add the rows of B.npy, then remove them again), one commit each, printing
`committed <n>` after each; the test kills it with SIGKILL at random moments."""
import sys

import numpy as np

from dml.index import gallery, store


def main(index_dir, extra):
    vectors = np.load(extra)
    paths = [f"/extra/{i}.jpg" for i in range(len(vectors))]
    labels = np.arange(len(vectors)) + 1000
    count = 0
    while True:
        with store.writer(index_dir) as writer:
            snapshot = writer.current()
            if snapshot.paths[-1] in paths:
                gallery.remove(writer, snapshot, paths)
            else:
                gallery.add(writer, snapshot, vectors, paths, labels)
        count += 1
        print(f"committed {count}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
