# CUDA image for training and inference. Build: docker build -t opensora .
# Run:   docker run --gpus all -it -v /path/to/data:/data opensora
FROM pytorch/pytorch:2.4.0-cuda12.1-cudnn9-devel

ARG WITH_FLASH_ATTN=1
ENV PIP_NO_CACHE_DIR=1 \
    HF_HOME=/root/.cache/huggingface

WORKDIR /workspace/opensora

# Dependencies first, so editing the code does not reinstall them. The image's torch 2.4.0 already
# satisfies requirements.txt, so pip keeps it.
COPY requirements/ requirements/
RUN pip install -r requirements/requirements.txt
# flash-attn builds against the image's torch, so build isolation stays off.
RUN if [ "$WITH_FLASH_ATTN" = "1" ]; then pip install flash-attn --no-build-isolation; fi

COPY . .
RUN pip install --no-deps -e .
