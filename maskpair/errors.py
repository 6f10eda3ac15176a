"""The one exception type for problems with the data on disk."""


class DataError(ValueError):
    """A problem with the data on disk; `problems` holds one line per problem, each naming its file."""

    def __init__(self, problems):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))
