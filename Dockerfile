# imgsynth for GPU training and generation (Azure ML compute clusters, any CUDA host).
#   docker build -t imgsynth:latest .
#   docker run --gpus all -v $PWD/data:/data imgsynth:latest train /data/ds /data/run --config ldm_2d
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev git ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv

# CUDA build of torch first, so the project's "torch>=2.4" is already satisfied.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

WORKDIR /opt/imgsynth
COPY pyproject.toml setup.py README.md ./
COPY imgsynth ./imgsynth
COPY configs ./configs
COPY scripts ./scripts
COPY azureml ./azureml
RUN pip install ".[azure]" && imgsynth --version

ENTRYPOINT ["imgsynth"]
CMD ["--help"]
