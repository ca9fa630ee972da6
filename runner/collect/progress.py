"""What collect is doing and how far it got, for the command line to show while it works."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

EVERY = 4096  # lines between two reports of a pass over the manifest


class Progress:
    """Collect's current step ("counting for the report", "writing jsonl", ...) and how far it got,
    passed to `show` as one line of text (the command line's spinner shows it); silent when `show`
    is None."""

    def __init__(self, show: Callable[[str], None] | None = None) -> None:
        self.show = show
        self.step = ""

    def at(self, step: str) -> None:
        """A new step begins."""
        self.step = step
        self.say("")

    def say(self, how_far: str) -> None:
        if self.show is not None:
            self.show(f"{self.step}: {how_far}" if how_far else self.step)

    def lines(self, src: Iterable[bytes], total_bytes: int | None) -> Iterable[bytes]:
        """The lines of `src` (a pass over a manifest of `total_bytes`, when known), saying how far
        the pass is every EVERY lines (`src` itself when nobody listens)."""
        return src if self.show is None else self._lines(src, total_bytes)

    def _lines(self, src: Iterable[bytes], total_bytes: int | None) -> Iterator[bytes]:
        done = 0
        for i, line in enumerate(src):
            if not i % EVERY:
                self.say(how_far(i, done, total_bytes))
            done += len(line)
            yield line


def how_far(lines: int, done_bytes: float, total_bytes: int | None) -> str:
    """"1,234,567 lines (45%)", or without the share when the size is not known."""
    share = f" ({min(done_bytes / total_bytes, 1):.0%})" if total_bytes else ""
    return f"{lines:,} lines{share}"
