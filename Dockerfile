# One image for every process of the service; docker-compose.yml picks the
# process with `command:`, the same argv `ticker run` starts on one machine.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TICKER_ACCOUNTS_FILE=/app/config/accounts.example.yaml

WORKDIR /app
COPY pyproject.toml README.md celeryconfig.py ./
COPY ticker ticker
COPY tasks tasks
COPY web web
COPY config config
RUN pip install . \
    && useradd --create-home --uid 10001 --user-group ticker

USER ticker
CMD ["ticker", "--help"]
