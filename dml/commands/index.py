"""Build and maintain a gallery index: the embeddings search.py searches.

    python index.py build  --index_dir DIR (--features F.npy | --image_dir D | --image_list L) [network flags]
    python index.py add    --index_dir DIR (--features F.npy | --image_dir D | --image_list L) [--replace]
    python index.py remove --index_dir DIR (--paths_file F | --prefix P)
    python index.py info   --index_dir DIR

build from infer.py's --save_features output (F.npy with F.paths.txt, F.meta.json and
F.labels.npy when present), or from images embedded like infer.py with --pretrained_model
(and --model/--image_shape/--embedding_size, which come from the weights' record when
left out). index.json records the network (dml.run_record): F.meta.json's, or the
weights', which must be the network that made the features. Features made by another
network than the index's are refused by build, add and search. add embeds only the
images not yet in the index; a path already present is an error unless --replace. Every
change is written beside the live index and switched in atomically: a kill leaves the
old or the new one.
"""
import argparse
import os
import sys

# utility first, before anything imports paddle: it quiets Paddle's import-time notices
from dml.cli import ArgumentParser, run_cli
from dml.errors import UserError
from dml.index import backends, embed, flags, gallery, manifest, store
from dml.retrieval import feature_files, image_inputs
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
    add.add_argument("--replace", action="store_true", help="Embed again the images already in the index.")
    remove = commands.add_parser("remove", help="Remove images by path.")
    flags.add_index_dir(remove)
    flags.add_backend_arguments(remove, building=False)
    remove.add_argument("--paths_file", help="The paths to remove, one a line.")
    remove.add_argument("--prefix", help="Remove every path starting with this (made absolute first).")
    info = commands.add_parser("info", help="Describe an index.")
    flags.add_index_dir(info)
    return parser


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


def embed_images(args, meta, images, labelled):
    choose_device(args.use_gpu)
    network = embed.load_network(manifest.network_of(meta, args.index_dir))
    vectors, kept, unreadable = embed.embed(network, images, embed.image_size(meta), args.batch_size,
                                            args.num_workers, args.engine)
    for i in unreadable:
        print(f"skipped unreadable image {images.paths[i]}")
    labels = images.labels[kept] if labelled else None
    return vectors, [images.paths[i] for i in kept], labels


def check_features_dim(vectors, meta):
    if vectors.shape[1] != meta["dim"]:
        raise UserError(f"--features have dimension {vectors.shape[1]}, the index {meta['dim']}")


def cmd_build(args):
    record = manifest.model_record(args, args.features)
    if not args.features and record["weights"] is None:
        raise UserError("building from images needs --pretrained_model (and --model/--image_shape/--embedding_size)")
    options, session = backends.options(args)
    source = gallery_input(args)
    if args.features:
        vectors, paths, labels = source
    else:
        if os.path.lexists(os.path.join(args.index_dir, store.CURRENT)):
            raise UserError(f"--index_dir {args.index_dir!r} already holds an index: use `index.py add`")
        vectors, paths, labels = embed_images(args, record, *source)
    snapshot = gallery.build(args.index_dir, vectors, paths, labels, record, args.backend, options, session,
                             flags.dba_settings(args))
    print(f"index {args.index_dir}: {len(snapshot)} vectors of dimension {snapshot.meta['dim']} ({args.backend})")


def cmd_add(args):
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
        snapshot = gallery.add(writer, snapshot, vectors, paths, labels, args.replace, session)
    print(f"index {args.index_dir}: {len(snapshot) - before} added, {len(paths) - (len(snapshot) - before)} "
          f"replaced, {len(snapshot)} in all")
    if note:
        print(note, file=sys.stderr)


def cmd_remove(args):
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
    for key in ("count", "dim", "metric", "backend", "backend_options", "labelled", *manifest.MODEL_KEYS, "dba",
                "created", "updated", "format_version"):
        print(f"{key}: {snapshot.meta.get(key)}")
    print(f"generation: {snapshot.directory}")


COMMANDS = {"build": cmd_build, "add": cmd_add, "remove": cmd_remove, "info": cmd_info}


def main(argv=None):
    args = build_parser().parse_args(argv)
    COMMANDS[args.command](args)


if __name__ == "__main__":
    run_cli(main)
