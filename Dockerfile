# The gateway as a container: slim Python, a non-root user, a health check on the
# admin listener. Configuration comes from /etc/gateway/gateway.toml (see config/).
FROM python:3.11-slim

RUN useradd --system --uid 10001 --home-dir /var/lib/gateway --create-home gateway
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir . && rm -rf /src

USER gateway
WORKDIR /var/lib/gateway
EXPOSE 8080 9901
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9901/healthz', timeout=2)"]
ENTRYPOINT ["gateway"]
CMD ["serve", "--config", "/etc/gateway/gateway.toml"]
