# Production image: API by default (`rappit serve` applies migrations, then runs uvicorn),
# the worker with `rappit worker`. No volumes; configuration is all environment variables.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY requirements.lock pyproject.toml README.md ./
COPY rappit ./rappit
# Runtime dependencies only (no embedded PostgreSQL/Redis, no pytest), pinned by the lock.
RUN /opt/venv/bin/pip install -c requirements.lock . \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} + \
 && rm -rf /opt/venv/lib/python3.11/site-packages/pip /opt/venv/lib/python3.11/site-packages/setuptools

FROM python:3.11-slim
RUN groupadd --system --gid 10001 rappit && useradd --system --uid 10001 --gid rappit --home-dir /app rappit
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY alembic.ini ./
COPY migrations ./migrations
ENV PATH=/opt/venv/bin:$PATH \
    RAPPIT_HOME=/app \
    RAPPIT_ENV=production \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8000
USER 10001:10001
EXPOSE 8000
CMD ["rappit", "serve"]
