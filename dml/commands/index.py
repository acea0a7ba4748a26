"""Build and maintain a gallery index: the embeddings search.py searches.

    python index.py build  --index_dir DIR (--features F.npy | --image_dir D | --image_list L) [network flags]
    python index.py add    --index_dir DIR (--features F.npy | --image_dir D | --image_list L) [--replace]
    python index.py remove --index_dir DIR (--paths_file F | --prefix P)
    python index.py info   --index_dir DIR
    python index.py set-threshold --index_dir DIR (--threshold_file threshold.json | --threshold T | --clear)

build from infer.py's --save_features output (F.npy with F.paths.txt, F.meta.json and
F.labels.npy when present), or from images embedded like infer.py with --pretrained_model
(and --model/--image_shape/--embedding_size, which come from the weights' record when
left out). index.json records the network (dml.run_record): F.meta.json's, or the
weights', which must be the network that made the features. Features made by another
network than the index's are refused by build, add and search. add embeds only the
images not yet in the index; a path already present is an error unless --replace. Every
change is written beside the live index and switched in atomically: a kill leaves the
old or the new one.

Class names: a labelled build stores classes.txt (`<class_id> <name>` lines) from
--classes, or found beside the input: classes.txt in the --image_list's folder or
--data_dir, F.classes.txt beside --features F.npy (infer.py writes it). search.py shows
them. The match threshold (index.json's `threshold`: eval.py --calibrate's
threshold.json given to --threshold_file on build, or set-threshold) makes search.py and
serve.py answer "no match" when the best hit scores below it.
"""
import argparse
import os
import sys

# utility first, before anything imports paddle: it quiets Paddle's import-time notices
from dml.cli import ArgumentParser, add_arguments, run_cli
from dml.data import class_names
from dml.errors import UserError
from dml.flag_types import float_in
from dml.index import backends, embed, flags, gallery, manifest, store, untrusted
from dml.retrieval import feature_files, image_inputs, threshold_file
from dml.runtime import data_workers, ranks
from dml.runtime.device import choose_device

INPUTS = ("features", "image_dir", "image_list")


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    build = commands.add_parser("build", help="Create an index from features or images.")
    add = commands.add_parser("add", help="Add features or images (only new ones are embedded).")
    for sub in (build, add):
        flags.add_index_dir(sub)
        flags.add_image_inputs(sub, "infer.py's features (.npy, with its .paths.txt, .meta.json and optional "
                                    ".labels.npy).")
        flags.add_network_arguments(sub, building=sub is build)
        flags.add_backend_arguments(sub, building=sub is build)
    flags.add_dba_arguments(build)
    for sub in (build, add):
        sub.add_argument("--classes", help="classes.txt naming the labels (`<class_id> <name>` lines); add: replaces "
                         "the index's. Default on build: found beside the labelled input")
    build.add_argument("--threshold_file", help="eval.py --calibrate's threshold.json: store its match threshold")
    add.add_argument("--replace", action="store_true", help="Embed again the images already in the index.")
    remove = commands.add_parser("remove", help="Remove images by path.")
    flags.add_index_dir(remove)
    flags.add_backend_arguments(remove, building=False)
    remove.add_argument("--paths_file", help="The paths to remove, one a line.")
    remove.add_argument("--prefix", help="Remove every path starting with this (made absolute first).")
    info = commands.add_parser("info", help="Describe an index.")
    flags.add_index_dir(info)
    threshold = commands.add_parser("set-threshold", help="Store or clear the match threshold.")
    flags.add_index_dir(threshold)
    flags.add_backend_arguments(threshold, building=False)
    threshold.add_argument("--threshold_file", help="eval.py --calibrate's threshold.json.")
    add_arguments("threshold", float_in(-1, 1, high_inclusive=True), None, "A threshold of your own (cosine "
                  "similarity).", threshold)
    threshold.add_argument("--clear", action="store_true", help="Remove the stored threshold.")
    return parser


def found_class_names(args, labelled):
    """{label: name} for a labelled build: --classes, or classes.txt beside the input."""
    if args.classes:
        return class_names.read(args.classes)
    if not labelled:
        return None
    if args.features:
        beside = feature_files.companion(feature_files.features_path(args.features), ".classes.txt")
        return class_names.read(beside) if os.path.isfile(beside) else None
    if args.image_list:
        for folder in (os.path.dirname(os.path.abspath(args.image_list)), args.data_dir):
            names = class_names.in_directory(folder)
            if names is not None:
                return names
    return None


def given_threshold(args, meta):
    """The threshold a command was given (--threshold_file or --threshold), checked
    against the index's network; None when neither."""
    if getattr(args, "threshold_file", None):
        value, sha256 = threshold_file.read(args.threshold_file)
        manifest.check_threshold_network(meta, sha256, f"--threshold_file {args.threshold_file!r}")
        return value
    return getattr(args, "threshold", None)


def gallery_input(args):
    """--features: (unit vectors, absolute paths, labels or None); images: (ImageList
    with absolute paths, labelled), embedded later by embed_images."""
    flags.one_input(args, INPUTS)
    if args.features:
        fea, paths, labels = feature_files.read_features(args.features)
        return embed.flat.normalised(fea), flags.absolute(paths), labels
    images, labelled = image_inputs.selected_images(args.image_dir, args.image_list, args.data_dir)
    images.paths = flags.absolute(images.paths)
    return images, labelled


def embed_images(args, meta, images, labelled, world=ranks.SINGLE):
    device = choose_device(args.use_gpu)
    network = embed.load_network(manifest.network_of(meta, args.index_dir))
    workers = data_workers.worker_count(args.num_workers, device, world.nranks)
    vectors, kept, unreadable = embed.embed(network, images, embed.image_size(meta), args.batch_size, workers,
                                            args.engine, world)
    if not len(kept):
        raise UserError(f"none of the {len(images)} images can be read (the first: "
                        f"{untrusted.printable(images.paths[unreadable[0]])}): nothing written")
    for i in unreadable:
        print(f"skipped unreadable image {untrusted.printable(images.paths[i])}")
    labels = images.labels[kept] if labelled else None
    return vectors, [images.paths[i] for i in kept], labels


def check_features_dim(vectors, meta):
    if vectors.shape[1] != meta["dim"]:
        raise UserError(f"--features have dimension {vectors.shape[1]}, the index {meta['dim']}")


def cmd_build(args):
    """Under paddle.distributed.launch every rank embeds its share of the images and
    rank 0 writes the index."""
    world = ranks.current()
    with ranks.leader_prints(world):
        build(args, world)


def build(args, world):
    record = manifest.model_record(args, args.features)
    if not args.features and record["weights"] is None:
        raise UserError("building from images needs --pretrained_model (and --model/--image_shape/--embedding_size)")
    options, session = backends.options(args)
    threshold = given_threshold(args, record)
    source = gallery_input(args)
    if args.features:
        vectors, paths, labels = source
    else:
        if os.path.lexists(os.path.join(args.index_dir, store.CURRENT)):
            raise UserError(f"--index_dir {args.index_dir!r} already holds an index: use `index.py add`")
        vectors, paths, labels = embed_images(args, record, *source, world)
    if not world.leader:
        return
    names = found_class_names(args, labels is not None)
    snapshot = gallery.build(args.index_dir, vectors, paths, labels, record, args.backend, options, session,
                             names, threshold, flags.dba_settings(args))
    print(f"index {args.index_dir}: {len(snapshot)} vectors of dimension {snapshot.meta['dim']} ({args.backend})"
          + (f", {len(names)} class names" if names else "")
          + (f", match threshold {threshold:g}" if threshold is not None else ""))


def one_process(command):
    """Refuse add/remove under the launcher. Only rank 0 fails: the launcher kills the
    other ranks once one fails, and a rank killed while exiting prints Paddle's C++
    termination report into its log after our one line."""
    if not ranks.launched():
        return
    if ranks.launched_rank() != 0:
        raise SystemExit(0)
    raise UserError(f"index.py {command} changes the index from one process: run it without "
                        f"paddle.distributed.launch (only build splits its images over ranks)")


def cmd_add(args):
    one_process("add")
    note = None
    with store.writer(args.index_dir) as writer:
        snapshot = writer.current()
        session = backends.session(args, snapshot.meta, args.index_dir)
        manifest.check_same_network(snapshot.meta, args, args.index_dir)
        source = gallery_input(args)
        if args.features:
            vectors, paths, labels = source
            check_features_dim(vectors, snapshot.meta)
            note = manifest.check_same_vectors(snapshot.meta, args.features, len(vectors), args.index_dir)
        else:
            images, labelled = source
            gallery.plan_add(snapshot, images.paths, args.replace)
            vectors, paths, labels = embed_images(args, snapshot.meta, images, labelled)
        before = len(snapshot)
        names = class_names.read(args.classes) if args.classes else None
        snapshot = gallery.add(writer, snapshot, vectors, paths, labels, args.replace, session, names)
    print(f"index {args.index_dir}: {len(snapshot) - before} added, {len(paths) - (len(snapshot) - before)} "
          f"replaced, {len(snapshot)} in all")
    if note:
        print(note, file=sys.stderr)


def cmd_remove(args):
    one_process("remove")
    if bool(args.paths_file) == bool(args.prefix):
        raise UserError("give exactly one of --paths_file, --prefix")
    with store.writer(args.index_dir) as writer:
        snapshot = writer.current()
        session = backends.session(args, snapshot.meta, args.index_dir)
        if args.paths_file:
            try:
                paths = flags.absolute(feature_files.read_paths(args.paths_file))
            except OSError as err:
                raise UserError(f"--paths_file {args.paths_file!r}: {err.strerror}") from None
        else:
            prefix = os.path.abspath(args.prefix)
            paths = [p for p in snapshot.paths if p.startswith(prefix)]
            if not paths:
                raise UserError(f"no path in the index starts with {prefix!r}")
        before = len(snapshot)
        snapshot = gallery.remove(writer, snapshot, paths, session)
    print(f"index {args.index_dir}: {before - len(snapshot)} removed, {len(snapshot)} left")


def cmd_info(args):
    snapshot = store.open_index(args.index_dir)
    for key in ("count", "dim", "metric", "backend", "backend_options", "labelled", *manifest.MODEL_KEYS, "threshold",
                "dba", "created", "updated", "format_version"):
        print(f"{key}: {snapshot.meta.get(key)}")
    print(f"class_names: {len(snapshot.class_names) if snapshot.class_names else None}")
    print(f"generation: {snapshot.directory}")


def cmd_set_threshold(args):
    if sum((bool(args.threshold_file), args.threshold is not None, args.clear)) != 1:
        raise UserError("give exactly one of --threshold_file, --threshold, --clear")
    with store.writer(args.index_dir) as writer:
        snapshot = writer.current()
        session = backends.session(args, snapshot.meta, args.index_dir)
        threshold = None if args.clear else given_threshold(args, snapshot.meta)
        gallery.set_threshold(writer, snapshot, threshold, session)
    print(f"index {args.index_dir}: " + ("match threshold cleared" if threshold is None else
                                          f"match threshold {threshold:g}"))


COMMANDS = {"build": cmd_build, "add": cmd_add, "remove": cmd_remove, "info": cmd_info,
            "set-threshold": cmd_set_threshold}


def main(argv=None):
    args = build_parser().parse_args(argv)
    COMMANDS[args.command](args)


if __name__ == "__main__":
    run_cli(main)
