"""One ``[providers.NAME]`` table of ``threadline.toml``: an OpenAI-compatible server a model id can name.

A model id ``NAME/model`` goes to provider ``NAME`` (as llmcord writes them); any other id goes to OpenAI. Kept
apart from ``bot.providers`` (which talks to the servers) so the settings can validate it without importing HTTP.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

PROVIDER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# How threadline talks to the server: Conversations + Responses (OpenAI's own API, elsewhere), chat completions,
# or stateless Responses (history sent each turn).
ProviderApi = Literal["openai", "chat", "responses"]


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(pattern=r"^https?://\S+$")
    api_key: SecretStr | None = None
    # The name of an environment variable holding the key (instead of ``api_key`` in the file).
    api_key_env: str | None = None
    api: ProviderApi = "chat"
    vision: bool = False
    tools: bool = True
    # The context budget of this provider's models (tokens); unset: what GET /v1/models says, else
    # THREADLINE_LOCAL_CONTEXT_TOKENS.
    context_tokens: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_key(self) -> ProviderConfig:
        if self.api_key is not None and self.api_key_env is not None:
            raise ValueError("give api_key or api_key_env, not both")
        return self


def split_model(model: str, providers: dict[str, ProviderConfig]) -> tuple[str | None, str]:
    """(provider name, model id on that server) for a model id; (None, model) when it goes to OpenAI."""
    prefix, slash, rest = model.partition("/")
    if slash and rest and prefix in providers:
        return prefix, rest
    return None, model
