"""threadline: OpenAI models in Slack, Discord and the console."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("threadline")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"
