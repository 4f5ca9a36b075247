FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service service
COPY models models
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu -e .
EXPOSE 8000
CMD ["fitserve", "serve", "--host", "0.0.0.0"]
