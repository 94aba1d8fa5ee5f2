# One image for every scale-out process: `tracker collector`, `tracker pipeline`, `tracker api`,
# `tracker migrate` (the command is the container's argument). Configured only by TRACKER_*
# environment variables (tracker/settings.py); docs/deploy.md shows the compose and k8s wiring.
#
#   docker build -t inference-sovereignty-tracker:0.1.0 .
#   docker run --rm inference-sovereignty-tracker:0.1.0 --help

# --- build: resolve the package and its pinned dependencies into a virtualenv ---------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/tracker
ENV PATH=/opt/tracker/bin:$PATH

WORKDIR /src
# Only what the package is built from (see .dockerignore): no tests, virtualenvs or local state.
COPY pyproject.toml constraints.txt README.md ./
COPY tracker ./tracker
COPY collector ./collector
COPY pipeline ./pipeline
COPY api ./api
COPY dashboards ./dashboards
# constraints.txt pins every distribution the tests ran with (dev tools included; pins of
# packages that are not installed are simply unused).
RUN pip install --constraint constraints.txt . \
    && tracker --help > /dev/null

# --- runtime: the virtualenv only, as an unprivileged user ----------------------------------
FROM python:3.11-slim

# Container defaults of two settings (listen on every interface; local state in one place, the
# collector's spool being TRACKER_DATA_DIR/spool); every other setting keeps its
# tracker/settings.py default unless the orchestrator sets it.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/tracker/bin:$PATH \
    TRACKER_DATA_DIR=/var/lib/tracker \
    TRACKER_HOST=0.0.0.0

# tini as PID 1: the kernel delivers to PID 1 only the signals it has a handler for, and the
# tracker installs its handlers only once it is up (the pipeline after Kafka and ClickHouse
# answer), so a stop during a slow start waited out the whole grace period and ended in
# SIGKILL (found in review). tini forwards SIGTERM to the tracker, whose default action then
# ends it, and reaps any child.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid/gid so Kubernetes runAsNonRoot/fsGroup and volume ownership line up.
RUN groupadd --system --gid 10001 tracker \
    && useradd --system --uid 10001 --gid tracker --home-dir /var/lib/tracker \
       --shell /usr/sbin/nologin tracker \
    && mkdir -p /var/lib/tracker \
    && chown tracker:tracker /var/lib/tracker

COPY --from=build /opt/tracker /opt/tracker

# No VOLUME: only the collector needs state (its spool); the orchestrator mounts a volume
# here for it, and an empty named volume takes this directory's ownership.
WORKDIR /var/lib/tracker
USER 10001:10001

# api 8000, collector 8001, pipeline metrics 9100 (when TRACKER_METRICS_PORT is set).
EXPOSE 8000 8001 9100

ENTRYPOINT ["/usr/bin/tini", "--", "tracker"]
CMD ["--help"]
