# The mcpsift image of docker-compose.yml: one image, every command
# (`docker run IMAGE worker`, `... api --host 0.0.0.0`, `... topics create`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# a non-root user; the directories named volumes are mounted on belong to it, so a new
# volume (api-keys, alerts-out) starts out writable by mcpsift and by no one else
RUN groupadd --system --gid 10001 mcpsift \
 && useradd --system --uid 10001 --gid mcpsift --home-dir /var/lib/mcpsift --shell /usr/sbin/nologin mcpsift \
 && mkdir -p /var/lib/mcpsift/keys /var/lib/mcpsift/alerts /etc/mcpsift \
 && chown -R mcpsift:mcpsift /var/lib/mcpsift \
 && chmod 0700 /var/lib/mcpsift/keys

WORKDIR /opt/mcpsift/src
# only what the distribution is built from (pyproject.toml package-dir)
COPY pyproject.toml README.md ./
COPY mcpsift ./mcpsift
COPY collectors ./collectors
COPY streams ./streams
COPY detectors ./detectors
COPY api ./api
COPY bench ./bench
COPY dashboards ./dashboards
RUN pip install ".[all]"

USER mcpsift
WORKDIR /var/lib/mcpsift
# 8765: mcpsift api / serve; 9464: mcpsift worker /healthz and /metrics
EXPOSE 8765 9464
ENTRYPOINT ["mcpsift"]
CMD ["--help"]
