# Slim, non-root image running `gateway serve`. Build: docker build -t llm-gateway .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    LITELLM_OFFLINE_MODE=true

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY routing_policies ./routing_policies
RUN pip install --no-cache-dir ".[postgres]" \
    && useradd --create-home --uid 10001 gateway

USER gateway
EXPOSE 4000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:4000/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["gateway", "serve", "--host", "0.0.0.0", "--port", "4000"]
