"""Turn OpenAI SDK failures into short, specific messages for the thread. No stack traces, no secrets."""

from __future__ import annotations

import openai

from bot.errors import UserFacingError

_TERMINAL_CODES = {
    "rate_limit_exceeded": "The model is rate limited right now. Please try again in a minute.",
    "server_error": "OpenAI had a server error while answering. Please try again.",
    "invalid_prompt": "OpenAI refused this prompt as invalid.",
    "content_filter": "OpenAI's content filter stopped this answer.",
}


def _short(text: object, limit: int = 200) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def api_error_message(exc: openai.OpenAIError, *, model: str) -> str:
    """Map an SDK exception to what the user reads."""
    match exc:
        case openai.RateLimitError() if "quota" in str(exc).lower():
            return "The bot's OpenAI account is out of quota. An admin needs to check billing."
        case openai.RateLimitError():
            return "The model is rate limited right now (after retries). Please try again in a minute."
        case openai.AuthenticationError():
            return "The bot's OpenAI API key was rejected. An admin needs to check OPENAI_API_KEY."
        case openai.PermissionDeniedError():
            return f"The bot's OpenAI key may not use `{model}` or one of its tools."
        case openai.NotFoundError():
            return f"The model `{model}` isn't available to this bot. An admin can pick another model."
        case openai.BadRequestError():
            return f"OpenAI rejected the request: {_short(getattr(exc, 'message', exc))}"
        case openai.APITimeoutError():
            return "The model took too long to answer. Please try again."
        case openai.APIConnectionError():
            return "I couldn't reach OpenAI (connection error). Please try again shortly."
        case openai.InternalServerError():
            return "OpenAI had a server error. Please try again."
        case openai.APIStatusError():
            return f"OpenAI answered with an error (HTTP {exc.status_code}). Please try again."
    return "Something went wrong talking to OpenAI. Please try again."


def terminal_event_error(kind: str, code: str | None, message: str | None) -> UserFacingError:
    """A ``response.failed`` or ``error`` stream event as a user-facing error."""
    if code and code in _TERMINAL_CODES:
        return UserFacingError(_TERMINAL_CODES[code])
    detail = f": {_short(message)}" if message else "."
    return UserFacingError(f"The model {kind}{detail}")
