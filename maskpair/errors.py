"""The exceptions a user is shown as one clear line: problems with the data on disk (`DataError`) and settings that
cannot be used here (`ConfigError`)."""


class DataError(ValueError):
    """A problem with the data on disk; `problems` holds one line per problem, each naming its file."""

    def __init__(self, problems):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ConfigError(ValueError):
    """A setting that cannot be used here, e.g. pretrained encoder weights that cannot be downloaded offline."""
