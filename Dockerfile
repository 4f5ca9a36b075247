# One image for every role: `fitserve serve` (API), `fitserve worker` (Celery worker),
# `fitserve db upgrade` (migrations). TORCH_INDEX picks the torch build: the CPU wheel by
# default; a CUDA one for the gpu-worker (docker-compose.yml passes it).
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service service
COPY models models
RUN pip install --no-cache-dir --extra-index-url "${TORCH_INDEX}" -e '.[server]' \
    && useradd --create-home --uid 10001 fitserve \
    && mkdir -p /data && chown fitserve /data
USER fitserve
ENV FITSERVE_DATA_DIR=/data
EXPOSE 8000
CMD ["fitserve", "serve", "--host", "0.0.0.0"]
