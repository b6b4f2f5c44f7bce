"""The one exception type the CLI turns into a one-line message instead of a traceback."""


class GalaxyDistillError(Exception):
    """A problem the user can fix (bad input, missing data, bad config).

    The message must name the file or setting at fault and say what was expected.
    """
