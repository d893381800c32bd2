"""The one exception type for mistakes a user can fix; the CLI turns it into exit code 2."""


class UserError(Exception):
    """A problem in the user's input or environment, with a message naming cause and fix."""

    exit_code = 2
