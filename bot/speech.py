"""Spoken replies: text in, an encoded audio file out, behind one small interface.

OpenAI's ``/v1/audio/speech`` and every model on it shut down on 2027-01-06; speech now comes from a voice model
on the Realtime API (WebSocket). ``RealtimeSpeaker`` opens one session per reply and asks for one out-of-band
response per piece of text (``conversation: "none"``, so nothing accumulates in a session conversation), reading
the piece word for word. ``EndpointSpeaker`` keeps the old endpoint for servers that still offer it. Both collect
raw PCM and encode it once, so every reply is one file whatever the number of pieces.
"""

from __future__ import annotations

import asyncio
import base64
import difflib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol, cast, runtime_checkable

import openai
from openai import AsyncOpenAI

from bot.audio_encode import AudioFormat, encode_pcm16, pcm_duration, playable_format, waveform_from_pcm
from bot.defaults import DEFAULT_REALTIME_MODEL, DEFAULT_VOICE
from bot.errors import UserFacingError

if TYPE_CHECKING:
    from openai.resources.realtime.realtime import AsyncRealtimeConnection
    from openai.types.realtime import (
        RealtimeResponseCreateParamsParam,
        RealtimeSessionCreateRequestParam,
        ResponseDoneEvent,
    )
    from openai.types.websocket_connection_options import WebSocketConnectionOptions

__all__ = [
    "DEFAULT_MAX_CHARS",
    "DEFAULT_REALTIME_MODEL",
    "DEFAULT_VOICE",
    "AudioFormat",
    "EndpointSpeaker",
    "RealtimeSpeaker",
    "Speaker",
    "SpeechError",
    "SpokenAudio",
    "speaker_for",
    "speech_pieces",
]

log = logging.getLogger("threadline.speech")

DEFAULT_MAX_CHARS = 4_096
"""Longest text read aloud; a longer reply is cut at a sentence boundary (the text reply stays complete)."""
DEFAULT_REALTIME_PIECE_CHARS = 600
"""Shorter pieces keep a voice model on script and far from its output-token limit."""
ENDPOINT_PIECE_CHARS = 4_096
"""``/v1/audio/speech`` takes at most 4,096 characters of input."""
PCM_RATE: Final = 24_000
"""Both APIs send 16-bit little-endian mono PCM at 24 kHz."""

REWORD_SIMILARITY = 0.9
"""Below this word-level similarity between text and transcript, the voice model said something else."""
MAX_WS_MESSAGE_BYTES = 16 * 1024 * 1024
SECONDS_PER_PIECE_BASE = 15.0
CHARS_PER_SECOND_FLOOR = 4.0
"""A reading longer than base + len(piece)/floor seconds is a voice model off script: stop it."""

READ_ALOUD_INSTRUCTIONS = (
    "Read the following text aloud, word for word, in the language it is written in, with a natural, friendly "
    "voice. Do not add, drop, translate, summarise or comment on anything, and do not answer questions in it: "
    "only read it. Do not pronounce markdown symbols such as asterisks, hashes or backticks."
)

_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)|[。！？]+[”’」』）]*")
_CLAUSE_END = re.compile(r"(?<=[,;:—–])\s+")
_WORD = re.compile(r"\w+")


class SpeechError(UserFacingError):
    """A spoken reply could not be made. The message is short and safe to show in the thread."""


@dataclass(frozen=True, slots=True)
class SpokenAudio:
    """An encoded spoken reply, with what Discord's voice messages need (duration and waveform)."""

    data: bytes
    mime: str
    filename: str
    duration_secs: float
    waveform: bytes
    """Up to 256 amplitude bytes (0-255), about ten a second."""


@runtime_checkable
class Speaker(Protocol):
    """Turns reply text into an audio file. Raises SpeechError; never hangs."""

    async def speak(self, text: str, *, audio_format: AudioFormat) -> SpokenAudio: ...


# --- text to pieces --------------------------------------------------------------------------------


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``; a line break always ends one (lists and headings read as separate sentences)."""
    sentences: list[str] = []
    for line in text.splitlines():
        start = 0
        for end in _SENTENCE_END.finditer(line):
            sentences.append(line[start : end.end()].strip())
            start = end.end()
        sentences.append(line[start:].strip())
    return [sentence for sentence in sentences if sentence]


def _cut_long(sentence: str, limit: int) -> Iterator[str]:
    """Cut one over-long sentence into parts of at most ``limit`` characters: after a clause if one fits, else
    between words, else (one giant word) anywhere."""
    rest = sentence
    while len(rest) > limit:
        window = rest[: limit + 1]
        cut = max((m.start() for m in _CLAUSE_END.finditer(window) if m.start() <= limit), default=0)
        if cut < limit // 3:
            cut = window.rfind(" ")
        if cut <= 0:
            cut = limit
        yield rest[:cut].strip()
        rest = rest[cut:].strip()
    if rest:
        yield rest


def _capped(sentences: list[str], max_chars: int) -> list[str]:
    """The leading sentences that fit in ``max_chars`` (joined by one space); if not even the first fits, the
    first cut at a word boundary."""
    kept: list[str] = []
    used = 0
    for sentence in sentences:
        used += len(sentence) + (1 if kept else 0)
        if used > max_chars:
            break
        kept.append(sentence)
    if not kept and sentences:
        kept.append(next(_cut_long(sentences[0], max_chars)))
    return kept


def speech_pieces(text: str, *, max_piece_chars: int, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """The text to read, capped at ``max_chars`` at a sentence boundary, then packed into pieces of whole
    sentences of at most ``max_piece_chars`` each (a longer sentence is cut at a clause or word boundary)."""
    if max_piece_chars < 1 or max_chars < 1:
        raise ValueError("max_piece_chars and max_chars must be positive")
    sentences = split_sentences(text)
    kept = _capped(sentences, max_chars)
    if kept != sentences:
        total = sum(map(len, sentences)) + len(sentences) - 1
        log.info("reading aloud the first %d of %d characters", sum(map(len, kept)) + len(kept) - 1, total)
    pieces: list[str] = []
    current = ""
    for sentence in kept:
        for part in _cut_long(sentence, max_piece_chars):
            if current and len(current) + 1 + len(part) <= max_piece_chars:
                current = f"{current} {part}"
            else:
                if current:
                    pieces.append(current)
                current = part
    if current:
        pieces.append(current)
    return pieces


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def transcript_similarity(text: str, transcript: str) -> float:
    """Word-level similarity (0..1) between what was asked to be read and what the voice model says it read."""
    return difflib.SequenceMatcher(a=_words(text), b=_words(transcript), autojunk=False).ratio()


# --- encoding --------------------------------------------------------------------------------------


def _spoken(pcm: bytes, audio_format: AudioFormat) -> SpokenAudio:
    """CPU work (run in a thread): encode once, measure, draw the waveform."""
    fmt = playable_format(audio_format)
    try:
        data = encode_pcm16(pcm, PCM_RATE, fmt)
    except Exception as exc:  # PyAV raises a family of FFmpegError/OSError/ValueError subclasses
        log.warning("encoding the spoken reply as %s failed: %s", fmt.value, exc)
        raise SpeechError("I couldn't encode the voice reply.") from exc
    return SpokenAudio(
        data=data,
        mime=fmt.mime,
        filename=f"reply.{fmt.extension}",
        duration_secs=round(pcm_duration(pcm, PCM_RATE), 3),
        waveform=waveform_from_pcm(pcm, PCM_RATE),
    )


async def _encode(pcm: bytes, audio_format: AudioFormat) -> SpokenAudio:
    if len(pcm) < 2:
        raise SpeechError("The voice service sent no audio.")
    return await asyncio.to_thread(_spoken, pcm, audio_format)


def _redact(message: str) -> str:
    return re.sub(r"sk-[\w*-]+", "sk-***", message)[:300]


# --- Realtime --------------------------------------------------------------------------------------


class RealtimeSpeaker:
    """Speech from a voice model on the Realtime API: one WebSocket session per reply, one out-of-band response
    per piece, audio deltas gathered until ``response.done``. Every wait (connect, each event, close) is bounded
    by ``timeout_secs``."""

    def __init__(
        self,
        client: AsyncOpenAI,
        *,
        model: str = DEFAULT_REALTIME_MODEL,
        voice: str = DEFAULT_VOICE,
        timeout_secs: float,
        max_piece_chars: int = DEFAULT_REALTIME_PIECE_CHARS,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        self._client = client
        self._model = model
        self._voice = voice
        self._timeout = timeout_secs
        self._max_piece_chars = max_piece_chars
        self._max_chars = max_chars

    async def speak(self, text: str, *, audio_format: AudioFormat) -> SpokenAudio:
        pieces = speech_pieces(text, max_piece_chars=self._max_piece_chars, max_chars=self._max_chars)
        if not pieces:
            raise SpeechError("There is no text to read aloud.")
        pcm = await self._session_pcm(pieces)
        return await _encode(pcm, audio_format)

    async def _session_pcm(self, pieces: list[str]) -> bytes:
        """All pieces read in one session, as one PCM stream; every failure becomes a SpeechError."""
        try:
            from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
        except ImportError as exc:  # the openai[realtime] extra is missing
            log.error("spoken replies need the websockets package (pip install 'openai[realtime]')")
            raise SpeechError("Voice replies are not set up on this server.") from exc
        stage = "connecting"
        try:
            async with asyncio.timeout(self._timeout):
                connection = await self._connect()
            try:
                stage = "setting up the session"
                await self._configure(connection)
                pcm = bytearray()
                for number, piece in enumerate(pieces, start=1):
                    stage = f"reading piece {number} of {len(pieces)}"
                    pcm += await self._read_piece(connection, piece)
                return bytes(pcm)
            finally:
                await self._close(connection)
        except SpeechError:
            raise
        except InvalidStatus as exc:
            status = exc.response.status_code
            log.warning("the Realtime API refused the WebSocket upgrade: HTTP %d", status)
            raise SpeechError(f"The voice service refused the connection (HTTP {status}).") from exc
        except TimeoutError as exc:
            log.warning("the Realtime API did not answer within %.1f s while %s", self._timeout, stage)
            raise SpeechError("The voice service did not answer in time.") from exc
        except ConnectionClosed as exc:
            log.warning("the Realtime API closed the session while %s (code %s)", stage, _close_code(exc))
            raise SpeechError("The voice service hung up in the middle of the reply.") from exc
        except (OSError, WebSocketException) as exc:
            log.warning("could not reach the Realtime API: %s", type(exc).__name__)
            raise SpeechError("I couldn't reach the voice service.") from exc
        except openai.OpenAIError as exc:
            log.warning("the Realtime API call failed: %s", type(exc).__name__)
            raise SpeechError("The voice service failed.") from exc

    async def _connect(self) -> AsyncRealtimeConnection:
        options = cast(
            "WebSocketConnectionOptions",
            {
                "max_size": MAX_WS_MESSAGE_BYTES,
                "compression": None,
                # plain websockets options the SDK passes through: bound the handshake and the closing handshake
                "open_timeout": self._timeout,
                "close_timeout": min(self._timeout, 2.0),
            },
        )
        # No on_reconnecting handler: the SDK never reconnects, a cut session is an error (we can't resume).
        manager = self._client.realtime.connect(model=self._model, websocket_connection_options=options)
        return await manager.enter()

    async def _configure(self, connection: AsyncRealtimeConnection) -> None:
        session: RealtimeSessionCreateRequestParam = {
            "type": "realtime",
            "output_modalities": ["audio"],
            "audio": {"output": {"voice": self._voice, "format": {"type": "audio/pcm", "rate": PCM_RATE}}},
        }
        async with asyncio.timeout(self._timeout):
            await connection.session.update(session=session)

    async def _read_piece(self, connection: AsyncRealtimeConnection, piece: str) -> bytes:
        """One out-of-band response reading ``piece``; its PCM."""
        response: RealtimeResponseCreateParamsParam = {
            "conversation": "none",
            "output_modalities": ["audio"],
            "instructions": READ_ALOUD_INSTRUCTIONS,
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": piece}]}],
        }
        async with asyncio.timeout(self._timeout):
            await connection.response.create(response=response)
        longest = SECONDS_PER_PIECE_BASE + len(piece) / CHARS_PER_SECOND_FLOOR
        max_bytes = int(longest * PCM_RATE) * 2
        # The Realtime event types are imported on first use: start-up does not pay for them.
        from openai.types.realtime import (
            RealtimeErrorEvent,
            ResponseAudioDeltaEvent,
            ResponseAudioTranscriptDeltaEvent,
            ResponseAudioTranscriptDoneEvent,
            ResponseDoneEvent,
        )

        audio = bytearray()
        transcript_parts: list[str] = []
        transcript: str | None = None
        # Realtime audio streams at least as fast as it plays: a piece not done by then never will be.
        async with asyncio.timeout(self._timeout + longest):
            while True:
                async with asyncio.timeout(self._timeout):
                    event = await connection.recv()
                if isinstance(event, ResponseAudioDeltaEvent):
                    audio += base64.b64decode(event.delta)
                    if len(audio) > max_bytes:
                        log.warning("the voice model talked for over %.0f s on %d characters", longest, len(piece))
                        raise SpeechError("The voice service went off script.")
                elif isinstance(event, ResponseAudioTranscriptDeltaEvent):
                    transcript_parts.append(event.delta)
                elif isinstance(event, ResponseAudioTranscriptDoneEvent):
                    transcript = event.transcript
                elif isinstance(event, RealtimeErrorEvent):
                    error = event.error
                    log.warning(
                        "the Realtime API sent an error: %s/%s: %s",
                        error.type,
                        error.code,
                        _redact(error.message or ""),
                    )
                    raise SpeechError(f"The voice service reported an error ({error.code or error.type or 'unknown'}).")
                elif isinstance(event, ResponseDoneEvent):
                    self._check_done(event, len(audio))
                    break
        if not audio:
            log.warning("the voice response for a piece of %d characters had no audio", len(piece))
            raise SpeechError("The voice service sent no audio.")
        said = transcript if transcript is not None else "".join(transcript_parts)
        similarity = transcript_similarity(piece, said)
        if similarity < REWORD_SIMILARITY:
            log.info(
                "the voice model reworded a piece (similarity %.2f, %d characters asked, %d said)",
                similarity,
                len(piece),
                len(said),
            )
            log.debug("asked to read %r, said %r", piece, said)
        return bytes(audio)

    def _check_done(self, event: ResponseDoneEvent, audio_bytes: int) -> None:
        result = event.response
        usage = result.usage
        if usage is not None:
            log.debug("voice response usage: %s in, %s out", usage.input_tokens, usage.output_tokens)
        details = result.status_details
        if result.status in {"failed", "cancelled"}:
            error = details.error if details else None
            reason = (error.code if error else None) or (details.reason if details else None) or result.status
            log.warning("the voice response ended %s: %s", result.status, reason)
            raise SpeechError(f"The voice service could not read the reply ({reason}).")
        if result.status == "incomplete":
            why = details.reason if details else None
            log.warning("the voice response was cut short (%s); keeping %d bytes of audio", why, audio_bytes)

    async def _close(self, connection: AsyncRealtimeConnection) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await connection.close()
        except Exception as exc:  # closing is best effort: the reply (or the real error) matters more
            log.debug("closing the Realtime session failed: %s", type(exc).__name__)


def _close_code(exc: Exception) -> str:
    rcvd = getattr(exc, "rcvd", None)
    return str(rcvd.code) if rcvd is not None else "none"


# --- /v1/audio/speech ------------------------------------------------------------------------------


class EndpointSpeaker:
    """Speech from ``/v1/audio/speech`` (raw 24 kHz PCM, one request per piece of at most 4,096 characters).
    Only for servers that still serve it: OpenAI shuts the endpoint down on 2027-01-06."""

    def __init__(
        self,
        client: AsyncOpenAI,
        *,
        model: str,
        voice: str,
        timeout_secs: float,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        self._client = client
        self._model = model
        self._voice = voice
        self._timeout = timeout_secs
        self._max_chars = max_chars

    async def speak(self, text: str, *, audio_format: AudioFormat) -> SpokenAudio:
        pieces = speech_pieces(text, max_piece_chars=ENDPOINT_PIECE_CHARS, max_chars=self._max_chars)
        if not pieces:
            raise SpeechError("There is no text to read aloud.")
        pcm = bytearray()
        for piece in pieces:
            pcm += await self._piece_pcm(piece)
        return await _encode(bytes(pcm), audio_format)

    async def _piece_pcm(self, piece: str) -> bytes:
        try:
            async with asyncio.timeout(self._timeout):
                speech = await self._client.audio.speech.create(
                    model=self._model,
                    voice=self._voice,
                    input=piece,
                    response_format="pcm",
                    timeout=self._timeout,
                )
                return await speech.aread()
        except (TimeoutError, openai.APITimeoutError) as exc:
            log.warning("the speech endpoint did not answer within %.1f s", self._timeout)
            raise SpeechError("The voice service did not answer in time.") from exc
        except openai.APIStatusError as exc:
            log.warning("the speech endpoint refused the request: HTTP %d", exc.status_code)
            raise SpeechError(f"The voice service refused the request (HTTP {exc.status_code}).") from exc
        except openai.APIConnectionError as exc:
            log.warning("could not reach the speech endpoint: %s", type(exc).__name__)
            raise SpeechError("I couldn't reach the voice service.") from exc
        except openai.OpenAIError as exc:
            log.warning("the speech endpoint failed: %s", type(exc).__name__)
            raise SpeechError("The voice service failed.") from exc


# --- choosing ---------------------------------------------------------------------------------------

_ENDPOINT_MODEL = re.compile(r"tts-1(-hd)?(-\d{4})?|.*-tts(-\d{4}-\d{2}-\d{2})?")


def speaker_for(
    client: AsyncOpenAI, *, model: str, voice: str, timeout_secs: float, max_chars: int = DEFAULT_MAX_CHARS
) -> Speaker:
    """The speaker that serves ``model``, decided by its id (case-insensitive):

    - ``tts-1``, ``tts-1-hd`` (and their dated variants) and ids ending in ``-tts``, optionally with a date
      snapshot (``gpt-4o-mini-tts``, ``gpt-4o-mini-tts-2025-12-15``): ``/v1/audio/speech`` (``EndpointSpeaker``);
    - everything else, in particular ids containing ``realtime``: the Realtime API (``RealtimeSpeaker``), the only
      speech surface OpenAI keeps after 2027-01-06.
    """
    if _ENDPOINT_MODEL.fullmatch(model.strip().lower()):
        return EndpointSpeaker(client, model=model, voice=voice, timeout_secs=timeout_secs, max_chars=max_chars)
    return RealtimeSpeaker(client, model=model, voice=voice, timeout_secs=timeout_secs, max_chars=max_chars)
