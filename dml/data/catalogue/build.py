"""prepare folders / prepare csv, step by step: scan the source, check every file,
split, and write the lists, classes.txt and the report into --out as one set (nothing
is written when anything stops it)."""
import json
import os
import shlex

from dml.data import class_names
from dml.data.converters import image_lists
from dml.errors import UserError
from dml.index.untrusted import printable
from dml.outputs import write_set

from . import checks, folders, report, splits, table

#: Every image kept, whichever list it went to: what an index of the whole catalogue holds.
CATALOGUE = "catalogue.txt"
#: Every file prepare may write into --out: those of an earlier run that this one does
#: not write again are removed with the new set, so no stale list stays beside it.
OUTPUTS = ("train.txt", "test.txt", "query.txt", "gallery.txt", CATALOGUE, class_names.FILE, report.REPORT)


def split_mode(args):
    if getattr(args, "split_column", None):
        if args.split is not None:
            raise UserError("give --split or --split_column, not both: the split column decides the split")
        return "column"
    return args.split or "classes"


def strict_stop(found):
    """The --strict refusal: what would be left out, and the first case."""
    first = [f"{printable(c.path)}: {why}" for c, why in found.unlistable + found.unreadable]
    first += [f"{printable(c.path)} is in {len(copies)} classes"
              for _, copies in found.conflicts for c in copies[:1]]
    return UserError(f"--strict: {len(found.unreadable)} unreadable image(s), {len(found.conflicts)} label "
                     f"conflict(s), {len(found.unlistable)} unlistable name(s) (first: {first[0]}): nothing written")


def check_every_class_has_an_image(scan, found, remedy):
    """Every class the source names keeps at least one image; else one line naming it."""
    kept = {c.class_name for c in found.kept}
    empty = [name for name in scan.classes if name not in kept]
    if not empty:
        return
    name = empty[0]
    why = {"unreadable": sum(c.class_name == name for c, _ in found.unreadable),
           "unlistable": sum(c.class_name == name for c, _ in found.unlistable),
           "in a label conflict": sum(c.class_name == name for _, copies in found.conflicts for c in copies)}
    detail = ", ".join(f"{n} {what}" for what, n in why.items() if n) or "no image file"
    more = f" ({len(empty)} such classes)" if len(empty) > 1 else ""
    raise UserError(f"class {name!r} has no readable image ({detail}){more}: {remedy}")


def written_lists(split, kept):
    """(list name, images) of every list written: the split's, then CATALOGUE (the
    `kept` images of every class with an id)."""
    return (*split.lists.items(), (CATALOGUE, [c for c in kept if c.class_name in split.ids]))


def list_texts(split, kept, out):
    """{list name: SOP-format text}, each image with its class id."""
    texts = {}
    for name, items in written_lists(split, kept):
        entries = [image_lists.Entry(0, split.ids[c.class_name], 1, c.path) for c in items]
        texts[name] = image_lists.render(image_lists.number(entries), out)
    return texts


def write_outputs(out, texts):
    os.makedirs(out, exist_ok=True)
    # backslashreplace: a file name that is not UTF-8 shows escaped in the report (lists never hold one)
    writers = {os.path.join(out, name): (lambda handle, text=text: handle.write(text.encode("utf-8",
                                                                                          "backslashreplace")))
               for name, text in texts.items()}
    write_set(writers, stale=[os.path.join(out, name) for name in OUTPUTS])


def run(scan, args, remedy):
    """Check, split and write; print the summary. Returns the report's content."""
    out = os.path.abspath(args.out)
    mode = split_mode(args)
    found = checks.check(scan.candidates, out, args.num_workers)
    if args.strict and found.problems:
        raise strict_stop(found)
    check_every_class_has_an_image(scan, found, remedy)
    split = splits.split(found.kept, mode, args.test_fraction, args.seed)
    settings = dict(sorted(vars(args).items()), split=mode, src=os.path.abspath(args.src), out=out)
    content = report.content(scan, found, split, settings)
    texts = list_texts(split, found.kept, out)
    texts[class_names.FILE] = class_names.render({i: name for name, i in split.ids.items()})
    texts[report.REPORT] = json.dumps(content, indent=1, ensure_ascii=False) + "\n"
    write_outputs(out, texts)
    for line in report.summary_lines(scan, found, split):
        print(line)
    print_lists(split, found.kept, out)
    return content


def print_lists(split, kept, out):
    train_classes = len({c.class_name for c in split.lists["train.txt"]})
    for name, items in written_lists(split, kept):
        extra = f" (train with --class_dim={train_classes})" if name == "train.txt" else \
            " (every image kept: the catalogue to index)" if name == CATALOGUE else ""
        print(f"{name}: {len(items):,} images, {len({c.class_name for c in items}):,} classes{extra}")
    print(f"report: {os.path.join(out, report.REPORT)}")
    evaluate = "--test_list=test.txt" if "test.txt" in split.lists else \
        "--query_list=query.txt --gallery_list=gallery.txt"
    data_dir = shlex.quote(out)
    print(f"wrote {', '.join(split.lists)}, {CATALOGUE} and {class_names.FILE} into {out}: pass "
          f"--data_dir={data_dir} --train_list=train.txt {evaluate}; index the whole catalogue with "
          f"index.py build --image_list={shlex.quote(os.path.join(out, CATALOGUE))} --data_dir={data_dir}")


def prepare_folders(args):
    return run(folders.scan(args.src, os.path.abspath(args.out)), args, "fix or remove its folder")


def prepare_csv(args):
    scan = table.scan(args.src, args.image_root, args.path_column, args.label_column, args.split_column,
                      args.delimiter)
    return run(scan, args, "fix or remove its rows")
