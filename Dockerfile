# gravd in a container. Build: docker build -t gravd .
# Run (mDNS needs the host's network): docker run --rm --network host gravd --discovery mdns
# See docs/operations.md ("Container") for bridge networking and mounting a config or mesh key.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/gravpy
COPY pyproject.toml README.md ./
COPY gravpy ./gravpy
COPY transports ./transports
COPY discovery ./discovery
RUN pip install --no-cache-dir . \
    && groupadd --system --gid 10001 gravd \
    && useradd --system --uid 10001 --gid gravd --create-home --home-dir /home/gravd \
       --shell /usr/sbin/nologin gravd

# numeric, so a runtime can check it is not root without reading /etc/passwd
USER 10001:10001
WORKDIR /home/gravd

# 8080: peers and apps (WebSocket); 8082: peers (TCP, the fastest link between gravd); 8222:
# monitoring (set GRAVD_MONITOR=0.0.0.0:8222 to publish it)
EXPOSE 8080 8082 8222

HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-m", "gravpy.daemon.healthcheck"]

ENTRYPOINT ["gravd"]
