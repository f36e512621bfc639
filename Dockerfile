# syntax=docker/dockerfile:1.7
#
# GPU image for the gwm API and worker (one image, two roles: `api` / `worker`).
#
#   docker build -t gwm:latest .
#   docker run --gpus all -p 8000:8000 gwm:latest api
#
# CPU-only variant: docker/Dockerfile.cpu. Compose files: docker-compose.yml (+ docker-compose.cpu.yml).
#
# torch 2.14.1 and onnxruntime-gpu 1.31.1 from PyPI are both CUDA 13 / cuDNN 9 builds, so the
# base is CUDA 13.0 (host driver >= 580). Ubuntu 24.04 ships Python 3.12 (the project needs
# >=3.11,<3.13). Builder and runtime share one base so the venv's interpreter path matches.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS builder

ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
# PyPI's default torch wheels are the CUDA 13.0 build; https://download.pytorch.org/whl/cu130 works too.
ARG TORCH_INDEX_URL=https://pypi.org/simple

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Only the interpreter and venv support: every dependency ships manylinux wheels, so no compiler.
# Ubuntu's security pocket replaces point releases, so apt versions are not pinned (DL3008);
# the base image tag and every Python package are.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3.12 -m venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

COPY docker/constraints.txt /tmp/constraints.txt

# 1) torch first: the largest layer, cached independently of the project's sources.
RUN pip install --index-url "${TORCH_INDEX_URL}" -c /tmp/constraints.txt \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

# 2) the project's dependencies (the `gpu` extra = onnxruntime-gpu), installed from stub
#    packages so this layer is rebuilt only when pyproject.toml or the pins change.
COPY pyproject.toml README.md ./
RUN mkdir -p models training service \
    && touch models/__init__.py training/__init__.py service/__init__.py \
    && pip install -c /tmp/constraints.txt ".[gpu]" \
    && pip uninstall -y gwm \
    && rm -rf /src/*

# 3) the project itself (non-editable, so models/weights/* is copied into site-packages).
COPY pyproject.toml README.md ./
COPY models ./models
COPY training ./training
COPY service ./service
COPY gwm_cli ./gwm_cli
RUN pip install --no-deps . \
    && pip check \
    && python -c "import importlib.metadata as m, sys; d={x.metadata['Name'].lower() for x in m.distributions()}; sys.exit('onnxruntime and onnxruntime-gpu are both installed' if {'onnxruntime', 'onnxruntime-gpu'} <= d else 0)"

# ---------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS runtime

# Set to 1 to build an image without baked weights (then mount them and set GWM_MODEL_PATH).
ARG ALLOW_NO_WEIGHTS=0

LABEL org.opencontainers.image.title="gwm" \
      org.opencontainers.image.description="Guess What Moves: unsupervised object segmentation service (GPU)" \
      org.opencontainers.image.licenses="MIT"

ENV DEBIAN_FRONTEND=noninteractive

# Runtime only: the interpreter (no -dev, no pip, no compiler) and tini as PID 1.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 gwm \
    && useradd --system --uid 10001 --gid gwm --home-dir /home/gwm --create-home --shell /usr/sbin/nologin gwm \
    && mkdir -p /data /models \
    && chown gwm:gwm /data /models

COPY --from=builder /opt/venv /opt/venv
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/gwm-entrypoint
COPY --chmod=0755 docker/healthcheck.py /usr/local/bin/gwm-healthcheck

# GWM_MODEL_PATH / GWM_CHECKPOINT_PATH are deliberately unset: the service then uses the
# weights baked into the package (site-packages/models/weights/gwm-default.{onnx,pt}). To
# override, mount a folder at /models and set e.g. GWM_MODEL_PATH=/models/gwm-default.onnx
# GWM_CHECKPOINT_PATH=/models/gwm-default.pt.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/gwm \
    GWM_DATA_DIR=/data \
    GWM_DEVICE=auto \
    GWM_PORT=8000

# Build-time smoke test: the stack imports, the CLI starts, and the default weights
# (service.settings: models/weights/gwm-default.onnx and gwm-default.pt) are baked in.
RUN python -c "import torch, torchvision, onnxruntime, cv2, av; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())" \
    && gwm --help > /dev/null \
    && python -c "import sys; from service.settings import Settings; s = Settings(); missing = [str(p) for p in (s.model_path, s.checkpoint_path) if not p.is_file()]; print('baked weights:', s.model_path, s.checkpoint_path); sys.exit('missing weights (commit them to models/weights/, or build with --build-arg ALLOW_NO_WEIGHTS=1): ' + ', '.join(missing) if missing and '${ALLOW_NO_WEIGHTS}' != '1' else 0)"

# numeric, so Kubernetes runAsNonRoot can verify it (10001 = gwm)
USER 10001:10001
WORKDIR /home/gwm
EXPOSE 8000

# Role-aware: checks GET /healthz for `api`, Redis + RQ worker registration for `worker`.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["gwm-healthcheck"]

ENTRYPOINT ["tini", "--", "gwm-entrypoint"]
CMD ["api"]
