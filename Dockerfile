# The management API and dashboard image: `docker run IMAGE` serves `aegis manage`; `docker run IMAGE dashboard`
# the dashboard. Configure with AEGIS_* / AEGIS_MGMT_* / AEGIS_DASH_* variables and *_FILE secrets (README).
# Stage 1 builds wheels of aegis and its dependencies; the final stage installs them into a venv and keeps no build
# tools, no pip and no source.
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY aegis ./aegis
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[management,dashboard]'

FROM python:3.11.11-slim-bookworm
RUN groupadd --system --gid 10001 aegis \
    && useradd --system --uid 10001 --gid aegis --home-dir /var/lib/aegis --create-home --shell /usr/sbin/nologin aegis
COPY --from=build /wheels /tmp/wheels
# The wheels are the ones built above, from this source's pins: pip resolves nothing from an index here.
# hadolint ignore=DL3013
RUN python -m venv /opt/aegis \
    && /opt/aegis/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels 'aegis[management,dashboard]' \
    && /opt/aegis/bin/pip uninstall --yes pip \
    && rm -rf /tmp/wheels
ENV PATH=/opt/aegis/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AEGIS_MGMT_HOST=0.0.0.0 \
    AEGIS_DASH_HOST=0.0.0.0
USER 10001:10001
WORKDIR /var/lib/aegis
EXPOSE 8080 8090
ENTRYPOINT ["aegis"]
CMD ["manage"]
