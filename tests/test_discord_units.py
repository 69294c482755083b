"""The Discord adapter's pure parts: keys, mention handling, thread names, attachments, the channel throttle."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import discord
import pytest

from adapters.discord import convert
from adapters.discord.reply import Nonces
from adapters.discord.setup import invite_permissions, invite_url
from adapters.discord.throttle import (
    ChannelThrottle,
    OverBudget,
    Priority,
    RequestBudget,
    budget_requests,
    route_priority,
)
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


# --- mentions, stickers, embeds, forwards, replies --------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("<@7>, can you help?", "can you help?"),
        ("<@!7>: summarise this", "summarise this"),
        ("<@7> <@&99> - hello", "hello"),
        ("what do you think, <@7>?", "what do you think?"),
        ("thanks <@7>!", "thanks!"),
        ("You can count on <@7> for an honorable mention", "You can count on threadline for an honorable mention"),
        ("ask <@&99> and <@5> together", "ask threadline and @Bob together"),
        ("<@7>", ""),
        ("<@7>\n\nfirst line\nsecond <@7> line", "first line\nsecond threadline line"),
    ],
)
def test_the_bots_mention_goes_where_it_addresses_the_bot_and_is_its_name_mid_sentence(
    content: str, expected: str
) -> None:
    assert convert.clean_text(content, bot_id=7, bot_role_id=99, bot_name="threadline", user_names={5: "Bob"}) == (
        expected
    )


def test_stickers_embeds_forwards_are_words_for_the_model() -> None:
    assert convert.sticker_text(["wave", None]) == "[sticker: wave] [sticker: sticker]"
    assert convert.embed_text("Stats", None, [("Users", "4"), ("Roles", "")]) == "Stats · Users: 4 · Roles"
    assert convert.embed_text(None, "", []) == ""
    assert convert.forwarded_text("hi\nthere") == "[forwarded] hi\nthere"
    assert convert.compose("", " own words ", "[sticker: wave]") == "own words\n[sticker: wave]"


def test_a_reply_is_quoted_in_full_once_then_only_named() -> None:
    assert convert.reply_context("Bob", "The meeting  moved\nto 3pm.", seen=False) == (
        "[replying to Bob's message: The meeting moved to 3pm.]"
    )
    assert convert.reply_context(None, "An answer.", seen=False) == "[replying to your message: An answer.]"
    assert convert.reply_context(None, "An answer.", seen=True) == '[replying to your earlier answer: "An answer."]'
    assert convert.reply_context("Bob", "", seen=True) == "[replying to Bob's earlier message]"
    long = convert.reply_context("Bob", "word " * 1000, seen=False)
    assert len(long) < convert.QUOTE_CHARS + 40 and long.endswith("…]")
    excerpt = convert.reply_context("Bob", "word " * 1000, seen=True)
    assert len(excerpt) < convert.EXCERPT_CHARS + 40


def test_message_nonces_come_from_the_turn_and_the_part_and_fit_discord() -> None:
    assert convert.message_nonce(1300000000000000001, 0) == "1300000000000000001.0"
    biggest = convert.message_nonce(2**64 - 1, 10**6)
    assert len(biggest) <= 25 and biggest != convert.message_nonce(2**64 - 1, 10**6 + 1)
    first, again = Nonces(42), Nonces(42)  # the same turn after a crash: the same nonces, part by part
    assert [first.next() for _ in range(3)] == [again.next() for _ in range(3)] == ["42.0", "42.1", "42.2"]
    assert Nonces().next() != Nonces().next(), "without a turn id, random"


# --- the bot-wide request budget -------------------------------------------------------------------------------
async def test_budget_lets_limit_requests_through_per_window_then_makes_the_next_wait() -> None:
    now = [0.0]
    budget = RequestBudget(3, 1.0, clock=lambda: now[0])
    cells = [await budget.acquire(Priority.POST) for _ in range(3)]
    for cell in cells:
        budget.release(cell)
    waiting = asyncio.ensure_future(budget.acquire(Priority.POST))
    await asyncio.sleep(0)
    assert not waiting.done() and budget.pressed
    now[0] = 1.0  # the window has passed
    budget._serve()
    budget.release(await waiting)
    assert budget.used() == 1


async def test_budget_counts_a_running_request_until_it_finishes() -> None:
    now = [0.0]
    budget = RequestBudget(1, 1.0, clock=lambda: now[0])
    cell = await budget.acquire(Priority.POST)
    now[0] = 5.0  # long past the window, but the request still runs: Discord may count it any time until it ends
    assert budget.used() == 1
    budget.release(cell)
    now[0] = 5.5
    assert budget.used() == 1, "a finished request counts for one window from its end"


async def test_when_the_budget_is_short_answer_text_goes_first() -> None:
    budget = RequestBudget(2, 0.05)
    held = [await budget.acquire(Priority.OTHER) for _ in range(2)]
    order: list[str] = []

    async def request(name: str, priority: Priority) -> None:
        async with budget.slot(priority):
            order.append(name)

    queued = [
        asyncio.create_task(request("reaction", Priority.DEFERRED)),
        asyncio.create_task(request("edit", Priority.EDIT)),
        asyncio.create_task(request("thread", Priority.OTHER)),
        asyncio.create_task(request("first post", Priority.POST)),
    ]
    await asyncio.sleep(0)
    for cell in held:
        budget.release(cell)
    await asyncio.gather(*queued)
    assert order == ["first post", "thread", "edit", "reaction"]


async def test_typing_is_dropped_when_the_budget_is_pressed() -> None:
    now = [0.0]
    budget = RequestBudget(10, 1.0, spare=2, clock=lambda: now[0])
    for _ in range(7):
        await budget.acquire(Priority.POST)
    budget.release(await budget.acquire(Priority.OPTIONAL))  # the 8th: below limit − spare
    with pytest.raises(OverBudget):
        await budget.acquire(Priority.OPTIONAL)  # the spare slots are kept for answer text
    assert budget.pressed and budget.dropped == 1
    await budget.acquire(Priority.POST)  # answer text still gets them


async def test_a_waiter_that_gives_up_as_its_slot_comes_does_not_keep_it() -> None:
    now = [0.0]
    budget = RequestBudget(2, 1.0, clock=lambda: now[0])
    first, second = await budget.acquire(Priority.POST), await budget.acquire(Priority.POST)
    waiting = asyncio.ensure_future(budget.acquire(Priority.POST))
    await asyncio.sleep(0)
    budget.release(first)
    now[0] = 1.5
    budget.release(second)  # the first's window is over: its slot is granted to the waiter…
    assert budget.used() == 2
    waiting.cancel()  # …whose caller gives up before it runs again
    with pytest.raises(asyncio.CancelledError):
        await waiting
    now[0] = 3.0
    assert budget.used() == 0, "the granted slot was handed back, not held forever"


def test_routes_are_prioritised_answer_text_first() -> None:
    assert route_priority("POST", "/channels/{channel_id}/messages") is Priority.POST
    assert route_priority("POST", "/channels/{channel_id}/messages/{message_id}/threads") is Priority.OTHER
    assert route_priority("PATCH", "/channels/{channel_id}/messages/{message_id}") is Priority.EDIT
    reaction = "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me"
    assert route_priority("PUT", reaction) is Priority.DEFERRED
    assert route_priority("POST", "/channels/{channel_id}/typing") is Priority.OPTIONAL


async def test_every_request_of_the_wrapped_http_client_takes_a_slot() -> None:
    class Http:
        def __init__(self) -> None:
            self.seen: list[int] = []

        async def request(self, route: discord.http.Route, **kwargs: object) -> str:
            self.seen.append(budget.used())
            return route.path

    budget = RequestBudget(5, 1.0)
    http = Http()
    budget_requests(http, budget)
    route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=1)
    assert await http.request(route) == "/channels/{channel_id}/messages"
    assert http.seen == [1] and budget.used() == 1
    with pytest.raises(OverBudget):
        for _ in range(5):
            await http.request(discord.http.Route("POST", "/channels/{channel_id}/typing", channel_id=1))
