"""Default model ids and voices that more than one module needs (settings and the code that uses them).

Kept apart so that reading the settings does not import the OpenAI SDK.
"""

from __future__ import annotations

from typing import Final

# OpenAI's named replacement for /v1/audio/speech (whose models shut down 2027-01-06), on the Realtime API.
DEFAULT_REALTIME_MODEL: Final = "gpt-realtime-2.1-mini"
DEFAULT_VOICE: Final = "marin"
