# syntax=docker/dockerfile:1
# One Dockerfile for every Nova process; docker-compose.yml shows the build args.
#   SERVICE      the package under services/ to install (required)
#   COMMAND      its console script; defaults to nova-<SERVICE>. The relay and
#                nova-init reuse a package: SERVICE=command-api COMMAND=nova-relay
#   HEALTH_PORT  the port its /healthz answers on: NOVA_HTTP_PORT, or
#                NOVA_RELAY_HEALTH_PORT for the relay
# Example: docker build --build-arg SERVICE=query-api --build-arg HEALTH_PORT=8002 .
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ARG SERVICE
RUN test -n "${SERVICE}" || { echo "set --build-arg SERVICE=<dir under services/>" >&2; exit 1; }
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The lock alone first, so this layer stays cached while only Nova's code changes.
COPY requirements/lock.txt requirements/lock.txt
RUN pip install --require-hashes --no-deps -r requirements/lock.txt
COPY libs/ libs/
COPY services/${SERVICE}/ services/${SERVICE}/
# Non-editable, so the runtime stage needs /opt/venv and nothing from /src.
# No build isolation: hatchling comes from the hash-checked lock, not the network.
# pip check fails the build if the lock misses a dependency of the packages.
# query-api's gRPC stubs are generated, never committed (see the Makefile).
RUN if [ "${SERVICE}" = query-api ]; then \
        out=services/query-api/src && mkdir -p $out/nova_query_api/grpc_gen \
        && python -m grpc_tools.protoc \
            -Inova_query_api/grpc_gen=services/query-api/proto/nova/query/v1 \
            -I"$(python -c 'import grpc_tools, os; print(os.path.dirname(grpc_tools.__file__) + "/_proto")')" \
            --python_out=$out --grpc_python_out=$out \
            nova_query_api/grpc_gen/query.proto \
        && touch $out/nova_query_api/grpc_gen/__init__.py; \
    fi
RUN pip install --no-deps --no-build-isolation \
        ./libs/events ./libs/platform "./services/${SERVICE}" \
    && pip check

FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE
ARG COMMAND=nova-${SERVICE}
ARG HEALTH_PORT
# A fixed non-root uid, so volume and Kubernetes securityContext rules can name it.
RUN groupadd --system --gid 10001 nova \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/nova \
        --shell /usr/sbin/nologin nova
COPY --from=builder /opt/venv /opt/venv
# NOVA_HTTP_HOST: listen on every interface, or nothing outside the container can
# reach the service. NOVA_COMMAND is read by CMD at run time (exec-form CMD does
# not expand build args).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NOVA_HTTP_HOST=0.0.0.0 \
    NOVA_COMMAND=${COMMAND} \
    HEALTH_PORT=${HEALTH_PORT}
USER 10001:10001
WORKDIR /home/nova
# Python's urllib, because the slim image has no curl; any non-2xx raises.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('HEALTH_PORT') or sys.exit('HEALTH_PORT is not set'); urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=3)"]
# exec: the service is PID 1 and gets SIGTERM from docker stop directly.
CMD ["/bin/sh", "-c", "exec \"$NOVA_COMMAND\""]
