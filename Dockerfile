# The consent-bridge daemon image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 bridge
WORKDIR /app

COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN pip install . && rm -rf /root/.cache

USER bridge
WORKDIR /home/bridge
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"

ENTRYPOINT ["bridge"]
CMD ["run"]
