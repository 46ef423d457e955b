"""``podrun fetch``'s progress line: episodes, bytes and rate of a running fetch, from the checkpoint store."""

from __future__ import annotations

import sys

import click


class FetchProgress:
    """Episodes, bytes and rate of a running fetch, read from the checkpoint store (so --dagster-url too).

    On a terminal one line is redrawn every second; otherwise a line is printed when something
    changed, at most every ``quiet_s`` seconds; the last line is always printed.
    """

    def __init__(self, checkpoints, keys: list[str], interval_s: float = 1.0, quiet_s: float = 10.0):
        import threading

        self.checkpoints, self.keys, self.interval_s, self.quiet_s = checkpoints, set(keys), interval_s, quiet_s
        self.tty = sys.stderr.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fetch-progress", daemon=True)

    def line(self, elapsed: float) -> str:
        from podinsight_dagster.store.checkpoints import DOWNLOADED, FAILED, TRANSCRIBED

        done = failed = size = 0
        for rec in self.checkpoints.episodes():
            if rec.partition_key in self.keys:
                if rec.state in (DOWNLOADED, TRANSCRIBED):
                    done, size = done + 1, size + (rec.bytes or 0)
                elif rec.state == FAILED:
                    failed += 1
        rate = size / 1e6 / elapsed if elapsed > 0 else 0.0
        width = 30
        filled = int(width * (done + failed) / max(1, len(self.keys)))
        return (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{len(self.keys)} episodes"
                f"{f', {failed} failed' if failed else ''}, {size / 1e6:.1f} MB, {rate:.1f} MB/s")

    def _run(self) -> None:
        import time

        start, last, last_print = time.monotonic(), "", 0.0
        while not self._stop.wait(self.interval_s):
            now = time.monotonic()
            text = self.line(now - start)
            if self.tty:
                click.echo("\r" + text, nl=False, err=True)
            elif text != last and now - last_print >= self.quiet_s:
                click.echo(text, err=True)
                last_print = now
            last = text
        self.final = self.line(time.monotonic() - start)

    def __enter__(self) -> "FetchProgress":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        click.echo(("\r" if self.tty else "") + self.final, err=True)
