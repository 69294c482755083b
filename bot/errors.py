"""Errors that carry a short message meant for the user (never a stack trace, never a secret)."""


class UserFacingError(Exception):
    """Raised anywhere in a turn; the turn handler shows ``str(exc)`` in the thread and logs it."""


class AttachmentError(UserFacingError):
    """A file the user sent cannot be used (too big, wrong type, unreadable, not allowed)."""


class StartupError(Exception):
    """An adapter cannot start (bad token, missing intent…). The CLI prints the message and exits non-zero."""
