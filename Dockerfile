# Build the wheel in one stage; install only the wheel and its dependencies in the next,
# so the final image carries no compiler, no pip cache and no source tree.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY notifier notifier
COPY api api
COPY sql sql
# Every destination's client library (the [brokers] extra) is in the image.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[brokers,sentry]"

FROM python:3.12-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin notifier
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "notifier[brokers,sentry]" && rm -rf /wheels
USER notifier
ENV PYTHONUNBUFFERED=1 \
    NOTIFIER_LOG_FORMAT=json
EXPOSE 8080 8081
# Probes the daemon by default; the API's container runs `notifier healthcheck api`.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["notifier", "healthcheck"]
ENTRYPOINT ["notifier"]
CMD ["run"]
