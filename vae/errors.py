"""The one exception type for problems the user can fix (bad input, bad arguments).

Commands catch it and print ``error: <message>`` as one line, exiting with status 2.
"""


class InputError(Exception):
    """A problem with the user's input or arguments, reported as one clear line."""
