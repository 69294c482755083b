"""The Discord adapter's pure parts: keys, mention handling, thread names, attachments, the channel throttle."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from adapters.discord import convert
from adapters.discord.setup import invite_permissions, invite_url
from adapters.discord.throttle import ChannelThrottle
from adapters.discord.voice import VoiceMessageError, voice_metadata, waveform_bytes
from bot.errors import AttachmentError
from bot.types import AttachmentKind
from tests.fakes import media


def test_keys_put_guild_threads_under_their_channel_and_give_each_dm_one_conversation() -> None:
    assert str(convert.guild_key(1, 2, 3)) == "discord:1:2:3"
    assert str(convert.dm_key(9)) == "discord:dm:9:9"
    assert convert.message_dedupe_key(42) == "discord:msg:42"


def test_mention_of_the_bot_or_its_managed_role_counts() -> None:
    assert convert.mentions_bot(user_ids=[5, 7], role_ids=[], bot_id=7)
    assert convert.mentions_bot(user_ids=[], role_ids=[99], bot_id=7, bot_role_id=99)
    assert not convert.mentions_bot(user_ids=[5], role_ids=[98], bot_id=7, bot_role_id=99)


def test_clean_text_drops_the_bot_mention_and_names_the_others() -> None:
    text = convert.clean_text(
        "<@7> ask <@!5> about <#3> and <@&8>, not <@&99>",
        bot_id=7,
        bot_role_id=99,
        user_names={5: "Bob"},
        role_names={8: "admins"},
        channel_names={3: "general"},
    )
    assert text == "ask @Bob about #general and @admins, not"


def test_thread_name_is_the_first_words_and_fits_discord() -> None:
    assert convert.thread_name("How do I bake bread?") == "How do I bake bread?"
    assert convert.thread_name("one two three four five six seven eight nine ten") == (
        "one two three four five six seven eight…"
    )
    long = convert.thread_name("x" * 500)
    assert len(long) <= 90 and long.endswith("…")
    assert convert.thread_name("   ") == "Conversation"


def test_text_commands_are_recognised_only_for_known_names() -> None:
    assert convert.text_command("/reset") == "reset"
    assert convert.text_command("/model gpt-x") == "model gpt-x"
    assert convert.text_command("/usr/bin is a folder") is None
    assert convert.text_command("reset") is None


def test_archive_minutes_round_up_to_what_discord_accepts() -> None:
    assert [convert.archive_minutes(v) for v in (1, 60, 61, 1440, 5000, 99999)] == [60, 60, 1440, 1440, 10080, 10080]


async def test_attachment_is_lazy_and_size_checked_before_download() -> None:
    reads: list[str] = []

    async def read() -> bytes:
        reads.append("read")
        return b"OggS..."

    voice = convert.AttachmentInfo("voice-message.ogg", "audio/ogg", 7, True, 3.5, read)
    att = convert.core_attachment(voice, max_bytes=100)
    assert (att.kind, att.duration_secs, att.size) == (AttachmentKind.VOICE, 3.5, 7)
    assert reads == [], "nothing is downloaded until the engine asks"
    assert await att.fetch() == b"OggS..."
    big = convert.core_attachment(convert.AttachmentInfo("big.pdf", None, 500, False, None, read), max_bytes=100)
    assert big.kind is AttachmentKind.DOCUMENT and big.mime == "application/pdf"
    with pytest.raises(AttachmentError, match=r"big\.pdf"):
        await big.fetch()
    assert reads == ["read"]


def test_invite_asks_for_exactly_the_permissions_used() -> None:
    bits = {
        "add_reactions": 1 << 6,
        "send_messages": 1 << 11,
        "attach_files": 1 << 15,
        "read_message_history": 1 << 16,
        "use_application_commands": 1 << 31,
        "create_public_threads": 1 << 35,
        "send_messages_in_threads": 1 << 38,
        "send_voice_messages": 1 << 46,
    }
    assert invite_permissions().value == sum(bits.values())
    url = invite_url(123)
    assert "client_id=123" in url and f"permissions={sum(bits.values())}" in url
    assert "scope=bot+applications.commands" in url


async def test_throttle_allows_max_writes_per_window_per_channel() -> None:
    now = [0.0]
    throttle = ChannelThrottle(5, 5.0, clock=lambda: now[0])
    for _ in range(5):
        async with throttle.write(1):
            pass
    assert throttle.delay(1) == pytest.approx(5.0)
    assert throttle.delay(2) == 0.0, "channels are independent"
    now[0] = 2.0
    assert throttle.delay(1) == pytest.approx(3.0)
    now[0] = 5.0
    assert throttle.delay(1) == 0.0


async def test_throttle_counts_a_write_from_when_it_finished() -> None:
    now = [0.0]
    throttle = ChannelThrottle(1, 5.0, clock=lambda: now[0])
    async with throttle.write(1):
        now[0] = 2.0  # the request took two seconds; Discord may have stamped it at its end
    assert throttle.delay(1) == pytest.approx(5.0)


async def test_throttle_makes_the_sixth_write_wait() -> None:
    throttle = ChannelThrottle(5, 0.2)
    loop = asyncio.get_running_loop()
    stamps = []
    for _ in range(7):
        async with throttle.write(1):
            stamps.append(loop.time())
    assert stamps[5] - stamps[0] >= 0.19 and stamps[6] - stamps[1] >= 0.19


def test_voice_metadata_measures_the_audio_and_samples_a_waveform() -> None:
    duration, waveform = voice_metadata(media.ogg_opus_voice(2.0))
    assert duration == pytest.approx(2.0, abs=0.1)
    samples = base64.b64decode(waveform)
    assert len(samples) == 20, "about ten samples a second"
    assert max(samples) == 255 and min(samples[1:-1]) > 200, "a steady tone is loud throughout"
    long_duration, long_waveform = voice_metadata(media.ogg_opus_voice(40.0))
    assert long_duration == pytest.approx(40.0, abs=0.1) and len(base64.b64decode(long_waveform)) == 256


def test_waveform_follows_loudness() -> None:
    levels = [0.5] * 800 + [0.0] * 800 + [0.25] * 800
    assert list(waveform_bytes(levels, 0.3)) == [255, 0, 128]
    assert waveform_bytes([0.0] * 100, 0.1) == b"\x00"


def test_undecodable_audio_is_refused_for_a_voice_message() -> None:
    with pytest.raises(VoiceMessageError):
        voice_metadata(b"not audio at all")


def test_the_adapter_module_named_discord_does_not_shadow_discord_py() -> None:
    import discord

    import adapters.discord.adapter as adapter_module

    assert Path(discord.__file__).parent.name == "discord" and hasattr(discord, "Client")
    assert adapter_module.discord is discord and Path(adapter_module.__file__).parent.parent.name == "adapters"
