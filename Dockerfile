# threadline in a container: `docker build -t threadline .`, then `docker run --env-file .env threadline`.
# compose.yaml runs three replicas on PostgreSQL (README, "More than one replica").

# --- builder: a virtualenv with threadline and its dependencies --------------------------------------------------
FROM python:3.12-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/venv
# Only what the package is built from (pyproject.toml names README.md as its readme).
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY adapters ./adapters
# Our own wheel first, then everything from binary wheels only: every dependency (psycopg[binary,pool], pillow,
# pillow-heif, av, aiohttp, pydantic-core…) ships manylinux wheels, so no compiler is needed, and a dependency
# without one fails the build here instead of pulling in gcc.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: /wheels/*.whl

# --- runtime: the virtualenv alone, run as an unprivileged user -----------------------------------------------
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    XDG_DATA_HOME=/data
# A fixed uid/gid, so a mounted volume's owner is known in advance. /data holds the SQLite database when no
# PostgreSQL is configured (mount a volume there); /app is the working directory (.env, threadline.toml).
RUN groupadd --system --gid 10001 threadline \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin threadline \
    && mkdir -p /app /data \
    && chown threadline:threadline /app /data
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001

# No HEALTHCHECK: threadline serves no health endpoint, and `threadline doctor` calls OpenAI, Slack and Discord
# on every run (rate limits, cost), too heavy to repeat every few seconds. A process that fails exits non-zero,
# and the orchestrator's restart policy (compose: restart: unless-stopped) brings it back.
# SIGTERM (docker stop) ends `threadline run` cleanly: it closes the adapters and gives running answers up to 10 s.
ENTRYPOINT ["threadline"]
CMD ["run"]
