"""Paddle's import without its OMP_NUM_THREADS notice.

Whenever OMP_NUM_THREADS is above 1, Paddle's import prints two lines to stderr
("WARNING: OMP_NUM_THREADS set to N, not 1. ..." and "PLEASE USE OMP_NUM_THREADS
WISELY."), so every command would answer with them before its own output. Their advice
(leave OMP at one thread) is for Paddle's data-parallel programs; the toolkit applies
the user's count itself (dml.runtime.threads). `hide_thread_notice` drops exactly those
two lines, and only while `paddle.base` (whose bootstrap prints them) is imported;
anything else written to stderr meanwhile passes through, and the environment is left
as the user set it.
"""
import contextlib
import importlib.abc
import importlib.util
import sys

NOTICE_MODULE = "paddle.base"
NOTICE_LINES = ("WARNING: OMP_NUM_THREADS set to ", "PLEASE USE OMP_NUM_THREADS WISELY.")


class WithoutNotice:
    """A text stream that passes everything to `stream` but the lines starting with
    NOTICE_LINES (`print` writes a line's text and its newline in two calls)."""

    def __init__(self, stream):
        self.stream = stream
        self._in_notice = False

    def write(self, text):
        ends_notice = self._in_notice and text == "\n"
        self._in_notice = text.startswith(NOTICE_LINES)
        if self._in_notice or ends_notice:
            return len(text)
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


class _NoticeFilteringFinder(importlib.abc.MetaPathFinder):
    """Finds NOTICE_MODULE once (through the other finders) and makes its loader run
    it with stderr behind WithoutNotice."""

    def find_spec(self, name, path=None, target=None):
        if name != NOTICE_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            run = spec.loader.exec_module

            def exec_module(module):
                with contextlib.redirect_stderr(WithoutNotice(sys.stderr)):
                    run(module)
            spec.loader.exec_module = exec_module
        return spec


def hide_thread_notice():
    """Drop the notice from Paddle's coming import (nothing to do once it is imported)."""
    if NOTICE_MODULE not in sys.modules and not any(isinstance(f, _NoticeFilteringFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoticeFilteringFinder())
