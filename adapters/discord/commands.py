"""Slash commands: ``/ask`` (with ``json`` for a JSON answer) and ``/imagine`` run a turn; ``/stop`` stops the
running one; ``/reset``, ``/model``, ``/voice`` and ``/usage`` are the shared commands; ``/access`` and ``/budget``
are for admins.

Registered per guild when ``DISCORD_COMMAND_GUILDS`` lists guild ids (updates are instant), else globally.
"""

from __future__ import annotations

import logging
from typing import Protocol

import discord
from discord import app_commands

from bot.imaging import QUALITIES, SIZES

log = logging.getLogger("threadline.discord")


class SlashHandler(Protocol):
    async def ask(
        self, interaction: discord.Interaction, prompt: str, file: discord.Attachment | None, as_json: bool = False
    ) -> None: ...

    async def command(self, interaction: discord.Interaction, line: str) -> None: ...

    async def imagine(self, interaction: discord.Interaction, prompt: str, size: str, quality: str) -> None: ...

    async def stop(self, interaction: discord.Interaction) -> None: ...


def build_command_tree(client: discord.Client, handler: SlashHandler) -> app_commands.CommandTree[discord.Client]:
    tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(client)

    @tree.command(name="ask", description="Ask threadline; the answer streams into a new thread")
    @app_commands.describe(
        prompt="Your question",
        file="An image, voice note or file to go with it",
        as_json="Answer with a JSON object (shown as a code block)",
    )
    @app_commands.rename(as_json="json")
    async def ask(
        interaction: discord.Interaction,
        prompt: str,
        file: discord.Attachment | None = None,
        as_json: bool = False,
    ) -> None:
        await handler.ask(interaction, prompt, file, as_json)

    @tree.command(name="imagine", description="Draw an image; reply in its thread to change it")
    @app_commands.describe(prompt="What to draw", size="Width × height", quality="Higher takes longer")
    @app_commands.choices(
        size=[app_commands.Choice(name=s, value=s) for s in SIZES],
        quality=[app_commands.Choice(name=q, value=q) for q in QUALITIES],
    )
    async def imagine(
        interaction: discord.Interaction,
        prompt: str,
        size: app_commands.Choice[str] | None = None,
        quality: app_commands.Choice[str] | None = None,
    ) -> None:
        await handler.imagine(interaction, prompt, size.value if size else "auto", quality.value if quality else "auto")

    @tree.command(name="stop", description="Stop the answer I'm writing in this thread or DM")
    async def stop(interaction: discord.Interaction) -> None:
        await handler.stop(interaction)

    @tree.command(name="reset", description="Start a fresh conversation in this thread or DM")
    async def reset(interaction: discord.Interaction) -> None:
        await handler.command(interaction, "reset")

    @tree.command(name="model", description="Show the model this channel uses, or set it")
    @app_commands.describe(name="A model id to use in this channel from now on")
    async def model(interaction: discord.Interaction, name: str | None = None) -> None:
        await handler.command(interaction, f"model {name or ''}".strip())

    @tree.command(name="voice", description="Spoken replies in this thread: on, off, or show the setting")
    @app_commands.describe(state="on or off; leave empty to see the current setting")
    @app_commands.choices(state=[app_commands.Choice(name=s, value=s) for s in ("on", "off")])
    async def voice(interaction: discord.Interaction, state: app_commands.Choice[str] | None = None) -> None:
        await handler.command(interaction, f"voice {state.value if state else ''}".strip())

    @tree.command(name="usage", description="Your token usage today and this month (admins: a channel's, everyone's)")
    @app_commands.describe(scope="Admins: this channel, or everyone this month")
    @app_commands.choices(scope=[app_commands.Choice(name=s, value=s) for s in ("channel", "all")])
    async def usage(interaction: discord.Interaction, scope: app_commands.Choice[str] | None = None) -> None:
        await handler.command(interaction, f"usage {scope.value if scope else ''}".strip())

    @tree.command(name="budget", description="Admins: token limits per user or channel")
    @app_commands.describe(rule="e.g. show, user @someone daily 50000, channel monthly 1000000, reset user @someone")
    async def budget(interaction: discord.Interaction, rule: str | None = None) -> None:
        await handler.command(interaction, f"budget {rule or ''}".strip())

    @tree.command(name="access", description="Admins: show or change who may use the bot")
    @app_commands.describe(rule="e.g. show, deny user @someone, allow role @helpers, dms off, reset")
    async def access(interaction: discord.Interaction, rule: str | None = None) -> None:
        await handler.command(interaction, f"access {rule or ''}".strip())

    @tree.error
    async def on_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        log.error("slash command /%s failed", interaction.command.name if interaction.command else "?", exc_info=error)
        text = "⚠️ Sorry, that command failed on my side."
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not report the failed command to the user")

    return tree


async def sync_commands(tree: app_commands.CommandTree[discord.Client], guild_ids: list[str]) -> str:
    """Bulk-overwrite the commands per guild (instant) or globally; returns a line for the log."""
    if not guild_ids:
        synced = await tree.sync()
        return f"registered {len(synced)} slash commands globally (Discord may take up to an hour to show them)"
    for guild_id in guild_ids:
        guild = discord.Object(id=int(guild_id))
        tree.copy_global_to(guild=guild)
        await tree.sync(guild=guild)
    return f"registered the slash commands in guild(s) {', '.join(guild_ids)}"
