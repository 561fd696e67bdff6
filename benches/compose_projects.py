#!/usr/bin/env python3
"""Writes the two Compose projects of benches/compose.sh.

usage: compose_projects.py big DIR N IMAGE BASE_PORT   (the no-op plan project, N services)
       compose_projects.py stack DIR IMAGE PORT [--no-healthcheck]
                                                       (the 10-service stack, both tools)

Every long-running command traps SIGTERM (busybox sh, sleep and httpd as PID 1 would ignore
it), so `down` stops containers at once on both tools instead of after the grace period."""
import os, sys

# A process that runs until SIGTERM. `sleep & wait` keeps the shell as PID 1 to take the trap.
def forever(inner="sleep 2147483647"):
    return f'["sh", "-c", "trap \'exit 0\' TERM; {inner} & wait"]'


def big(d, n, image, base_port):
    """N services, as a real project of that size looks: shared env file and config file
    (both hashed into every service's config hash), per-service environment, one published
    port and one exposed port each, healthchecks everywhere, labels; groups of ten whose first
    service serves HTTP and has a named volume, and the other nine depend on it."""
    os.makedirs(os.path.join(d, "conf"), exist_ok=True)
    with open(os.path.join(d, "common.env"), "w") as f:
        f.write("LOG_LEVEL=info\nTZ=UTC\nFEATURE_FLAGS=a,b,c\n")
    with open(os.path.join(d, "conf", "app.conf"), "w") as f:
        f.write("listen 80\nworkers 2\n")
    with open(os.path.join(d, ".env"), "w") as f:
        f.write(f"IMAGE={image}\n")
    out = ["x-common: &common",
           "  image: ${IMAGE}",
           "  env_file: common.env",
           "  restart: unless-stopped",
           "  stop_grace_period: 2s",
           "  healthcheck:",
           '    test: ["CMD-SHELL", "test -f /conf/app.conf"]',
           "    interval: 30s",
           "    timeout: 3s",
           "    retries: 3",
           "    start_period: 60s",
           "    start_interval: 1s",
           "  labels:",
           "    team: bench",
           "    tier: backend",
           "",
           "services:"]
    for i in range(n):
        name = f"svc{i:03d}"
        out += [f"  {name}:",
                "    <<: *common",
                f"    command: {forever('httpd -f -p 80 -h /var/www') if i % 10 == 0 else forever()}",
                "    environment:",
                f"      SERVICE_NAME: {name}",
                f"      SERVICE_INDEX: \"{i}\"",
                "      DATABASE_URL: postgres://app:secret@db:5432/app",
                f"    ports: [\"{base_port + i}:80\"]",
                "    expose: [\"9090\"]",
                "    volumes:",
                "      - ./conf/app.conf:/conf/app.conf:ro"]
        if i % 10 == 0:
            out += [f"      - data{i:03d}:/data"]
        else:
            out += ["    depends_on:", f"      svc{i - i % 10:03d}:", "        condition: service_started"]
    out += ["", "volumes:"]
    out += [f"  data{i:03d}: {{}}" for i in range(0, n, 10)]
    with open(os.path.join(d, "compose.yaml"), "w") as f:
        f.write("\n".join(out) + "\n")


def stack(d, image, port, healthcheck=True):
    """Ten services: a database with a named volume and the only healthcheck (interval 1s:
    Docker 20.10 knows no start_interval, so both tools probe first 1 s after the start), an
    api publishing a port that waits for the database to be healthy, a web front, workers,
    a scheduler and a few side services, some of them with depends_on.
    Without the healthcheck (the "plain" variant), the api waits for the database to be
    started only: what is left is creating and starting containers."""
    os.makedirs(d, exist_ok=True)
    httpd = forever("httpd -f -p 80 -h /var/www")
    text = f"""services:
  db:
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' TERM; mkdir -p /data/db && touch /data/db/ready; sleep 2147483647 & wait"]
    environment:
      POSTGRES_PASSWORD: secret
    volumes:
      - dbdata:/data
%HEALTHCHECK%
  cache:
    image: {image}
    command: {forever()}
  queue:
    image: {image}
    command: {forever()}
  api:
    image: {image}
    command: {httpd}
    environment:
      DATABASE_URL: postgres://app:secret@db:5432/app
      CACHE_URL: redis://cache:6379
    ports:
      - "{port}:80"
    depends_on:
      db:
        condition: %DB_CONDITION%
      cache:
        condition: service_started
  web:
    image: {image}
    command: {httpd}
    depends_on: [api]
  worker-a:
    image: {image}
    command: {forever()}
    environment:
      QUEUE_URL: amqp://queue
    depends_on: [queue, db]
  worker-b:
    image: {image}
    command: {forever()}
    environment:
      QUEUE_URL: amqp://queue
    depends_on: [queue, db]
  scheduler:
    image: {image}
    command: {forever()}
    depends_on: [api]
  metrics:
    image: {image}
    command: {forever()}
  mailer:
    image: {image}
    command: {forever()}
    depends_on: [queue]

volumes:
  dbdata: {{}}
"""
    if healthcheck:
        text = text.replace("%HEALTHCHECK%", """    healthcheck:
      test: ["CMD-SHELL", "test -f /data/db/ready"]
      interval: 1s
      timeout: 2s
      retries: 3""").replace("%DB_CONDITION%", "service_healthy")
    else:
        text = text.replace("%HEALTHCHECK%\n", "").replace("%DB_CONDITION%", "service_started")
    with open(os.path.join(d, "compose.yaml"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "big":
        big(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
    elif len(sys.argv) in (5, 6) and sys.argv[1] == "stack":
        if len(sys.argv) == 6 and sys.argv[5] != "--no-healthcheck":
            sys.exit(__doc__)
        stack(sys.argv[2], sys.argv[3], int(sys.argv[4]), healthcheck=len(sys.argv) == 5)
    else:
        sys.exit(__doc__)
