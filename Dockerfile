# syntax=docker/dockerfile:1
# Build: docker build -t ralph .      Run: docker run --rm -v "$PWD:/work" -w /work ralph validate recipes/

FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir build
COPY pyproject.toml README.md ./
COPY ralph ./ralph
RUN python -m build --wheel --outdir /dist

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 ralph
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-cache-dir /tmp/*.whl && rm /tmp/*.whl
USER ralph
WORKDIR /work
ENTRYPOINT ["ralph"]
CMD ["--help"]
