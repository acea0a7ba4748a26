"""The user's own catalogue to lists: `data/prepare.py folders` and `data/prepare.py csv`.

    candidates.py  what a source offers: image files with their class (and split)
    folders.py     a folder per class; table.py  a CSV of path and label columns
    checks.py      every file decoded and hashed: unreadable, duplicates, label conflicts
    splits.py      held-out classes, held-out images, or the CSV's split column
    report.py      the printed summary and OUT/prepare_report.json
    build.py       the steps in order, and the lists written as one set
"""
