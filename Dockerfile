# The consent-bridge daemon image. The sandbox (emulators, demo) is never copied in.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 bridge
WORKDIR /app

# Exactly the locked runtime dependencies, each checked against its hash (`make lock`
# regenerates the lock from pyproject.toml); then the bridge itself, without dependencies.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN pip install --no-deps . && rm -rf /root/.cache

# The state that must outlive the container (the suppression list, the audit log, open
# requests) lives on the volume. SQLite suits one container; use PostgreSQL in production
# (BRIDGE_DATABASE_URL=postgresql://...), and for more than one instance.
RUN mkdir /data && chown bridge:bridge /data
VOLUME /data
ENV BRIDGE_DATABASE_URL=sqlite:////data/bridge.db \
    BRIDGE_WEB__HOST=0.0.0.0 \
    BRIDGE_WEB__PORT=8080

USER bridge
WORKDIR /home/bridge
EXPOSE 8080
# Follows the port the daemon listens on: set it with BRIDGE_WEB__PORT, not with --port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import os, sys, urllib.request; port = os.environ.get('BRIDGE_WEB__PORT') or '8080'; sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status != 200)"

ENTRYPOINT ["bridge"]
CMD ["run"]
