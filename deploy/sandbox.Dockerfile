# The local NHS sandbox (libs/devstack) as an image, for the compose `dev` profile and the dev
# Kubernetes overlay. Build context: the repository root.
#   docker build -f deploy/sandbox.Dockerfile -t xcagw/sandbox:dev .
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY constraints.txt ./
COPY libs/contracts libs/contracts
COPY libs/common libs/common
COPY libs/devstack libs/devstack
# Pins from the lock (constraints.txt) so the image runs what the tests ran.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt \
      ./libs/contracts ./libs/common ./libs/devstack

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    SANDBOX_HOST=0.0.0.0 \
    SANDBOX_PORT=9000
COPY --from=build /opt/venv /opt/venv
# A numeric non-root user: no passwd entry needed, works with a read-only root filesystem.
USER 10001:10001
EXPOSE 9000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python", "-c", "import sys,urllib.request as u; sys.exit(0 if u.urlopen('http://127.0.0.1:9000/_health', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["python", "-m", "xcagw_devstack", "sandbox"]
