# The logins flow: `docker run IMAGE` runs `python -m bytewax.run flows.logins -w 2`;
# `docker run IMAGE flows.logins -w 4 -r /recovery ...` replaces the arguments.
# No key or credential is in the image: key files are mounted at run time (see docs/docker.md).
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the project and its wheels into a virtualenv ---------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# README.m[d]: pyproject names README.md; the glob copies it when present and is a no-op otherwise.
COPY pyproject.toml README.m[d] ./
COPY logins/ logins/
COPY flows/ flows/
COPY connectors/ connectors/
# config/ is package data too (logins.core.config.shipped, pyproject.toml's package-dir)
COPY config/ config/
# Optional extras, e.g. --build-arg LOGINS_EXTRAS='[otlp]' for LOGINS_TRACES=otlp.
ARG LOGINS_EXTRAS=""
RUN pip install --no-cache-dir "/src${LOGINS_EXTRAS}" \
 && python -I -c "import bytewax, flows.builder, connectors.sqs.source, logins.cli"

# --- runtime --------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /app --shell /usr/sbin/nologin app \
 && mkdir -p /keys /recovery \
 && chown app:app /keys /recovery \
 && chmod 0750 /keys
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The shipped YAML at a fixed path, read-only for the app user: the Kubernetes overlays and
# mounted files extend /app/config/prod.yaml (the installed package holds the same files).
COPY config/ /app/config/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOGINS_CONFIG_DIR=/app/config \
    LOGINS_ENV=docker \
    BYTEWAX_DATAFLOW_API_ENABLED=1 \
    BYTEWAX_DATAFLOW_API_CACHE_PATH=/tmp
USER 10001:10001
# Bytewax's dataflow API: /metrics (Bytewax's and the flow's Prometheus metrics), /dataflow.
EXPOSE 3030
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3030/metrics', timeout=4)"]
# Python is PID 1: the kernel drops a signal PID 1 has no handler for. SIGINT always has one
# (KeyboardInterrupt, or the flow's graceful stop), so `docker stop` never waits for SIGKILL.
STOPSIGNAL SIGINT
ENTRYPOINT ["python", "-m", "bytewax.run"]
CMD ["flows.logins", "-w", "2"]
