"""The errors gtrun reports to the user: one base class, one subclass per stage."""

from __future__ import annotations


class GtrunError(Exception):
    """A problem the user can fix; the CLI prints it on one line and exits 2."""


class ConfigError(GtrunError):
    """A config value breaks a rule; the message starts with its key path."""

    def __init__(self, key: str, problem: str, hint: str = "") -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}" + (f"\n  hint: {hint}" if hint else ""))


class ConfigErrors(GtrunError):
    """Several config problems, reported together."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        lines = [str(e) for e in errors]
        super().__init__(lines[0] if len(lines) == 1 else
                         f"{len(lines)} config problems:\n" + "\n".join(f"- {x}" for x in lines))


class QueryError(GtrunError):
    """The source query cannot be built or run."""


class ManifestError(GtrunError):
    """The query's rows cannot become an input manifest."""


class LineError(ManifestError):
    """A line of an output manifest is not what Ground Truth writes: "line <n>: <what is wrong>",
    which collect prefixes with the manifest's file (`in_file`)."""

    def in_file(self, where: str) -> LineError:
        return LineError(f"{where}: {self}")


class TemplateError(GtrunError):
    """The worker template does not parse or does not render."""


class StoreError(GtrunError):
    """An artifact cannot be read from or written to storage."""


class SubmitError(GtrunError):
    """The labeling service refused the job or could not be reached. `refused`: the service answered
    that it did not carry the request out (a 4xx answer), so no job was made by it."""

    def __init__(self, message: str, refused: bool = False) -> None:
        self.refused = refused
        super().__init__(message)


class RecordError(GtrunError):
    """A run directory is missing, incomplete, or already taken."""


def collect_errors(errors: list[ConfigError]) -> None:
    """Raise all collected problems at once, or nothing when there are none."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)
