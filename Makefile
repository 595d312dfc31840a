# lotmesh — the two commands a newcomer needs (`make run`, `make test`) and the ones a
# developer uses daily. CMake does the building; this file only chooses build trees.
JOBS      ?= $(shell nproc)
BUILD     := build/release
ASAN      := build/asan
TSAN      := build/tsan
FUZZ      := build/fuzz
FUZZ_SECS ?= 8

.PHONY: all deps build asan tsan-build tsan chaos run test unit blackbox alerts fuzz fuzz-long images delivery bench bench-services bench-gateway bench-edge bench-events bench-events-amqp format lint clean

all: build

deps:
	@scripts/deps.sh build

build: deps
	@scripts/web.sh
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

asan:
	@scripts/deps.sh test
	@scripts/web.sh
	@cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DLM_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN) -j $(JOBS)

tsan-build:
	@scripts/deps.sh test
	@cmake -S . -B $(TSAN) -DCMAKE_BUILD_TYPE=Debug -DLM_TSAN=ON >/dev/null
	@cmake --build $(TSAN) -j $(JOBS)

# The call policy's threaded unit tests, then the black-box suite against the
# ThreadSanitizer build: any data race a binary reports fails the test that started it
# (tests/blackbox/harness.py).
tsan: tsan-build
	@cd $(TSAN) && TSAN_OPTIONS=halt_on_error=1 ./test_policy && ./test_breaker
	@LOTMESH_BIN_DIR=$(CURDIR)/$(TSAN) LOTMESH_SANITIZER=thread /usr/bin/python3 -m pytest -q \
	  tests/blackbox

# Runs the whole system in the foreground on 127.0.0.1; Ctrl-C stops it cleanly.
run: build
	@scripts/run.sh $(BUILD)

# Every test: unit tests and black-box tests against the sanitizer build, then the fuzzers
# for a bounded time, then the delivery checks (images, Compose, Kubernetes, workflows).
# The services' suites run twice: on SQLite (with everything else), then on PostgreSQL
# (LOTMESH_TEST_DB=pg: one server for the session, one database per service instance).
PG_SUITES := tests/blackbox/test_articles.py tests/blackbox/test_charges.py \
             tests/blackbox/test_cache.py tests/blackbox/test_articles_contract.py \
             tests/blackbox/test_charges_contract.py tests/blackbox/test_articles_durability.py \
             tests/blackbox/test_events_producer.py \
             tests/blackbox/test_cache_redis.py
# The black-box suites run on BLACKBOX_WORKERS pytest-xdist workers (processes; 0: all in
# one), whole files to a worker (--dist loadfile: a module's shared processes start once);
# each worker starts its own session servers, stops them by PID, and takes its own share of
# the loopback ports (tests/blackbox/ports.py).
BLACKBOX_WORKERS ?= 2
PYTEST_BB := /usr/bin/python3 -m pytest -q -n $(BLACKBOX_WORKERS) --dist loadfile
# Each part prints its wall time (scripts/timed.sh; collected in build/ci-times.txt).
test:
	@scripts/timed.sh build-asan $(MAKE) --no-print-directory asan
	@scripts/timed.sh unit sh -c 'cd $(ASAN) && ctest --output-on-failure -j $(JOBS)'
	@scripts/timed.sh promtool scripts/promtool.sh
	@LOTMESH_BIN_DIR=$(CURDIR)/$(ASAN) scripts/timed.sh blackbox $(PYTEST_BB) tests/blackbox
	@LOTMESH_TEST_DB=pg LOTMESH_BIN_DIR=$(CURDIR)/$(ASAN) scripts/timed.sh blackbox-pg $(PYTEST_BB) $(PG_SUITES)
	@scripts/timed.sh fuzz $(MAKE) --no-print-directory fuzz
	@scripts/timed.sh delivery $(MAKE) --no-print-directory delivery

# Prometheus configuration and alert rules (deploy/prometheus/), with their unit tests.
alerts:
	@scripts/deps.sh test
	@scripts/promtool.sh

unit: asan
	@cd $(ASAN) && ctest --output-on-failure -j $(JOBS)

blackbox: asan
	@LOTMESH_BIN_DIR=$(CURDIR)/$(ASAN) $(PYTEST_BB) tests/blackbox
	@LOTMESH_TEST_DB=pg LOTMESH_BIN_DIR=$(CURDIR)/$(ASAN) $(PYTEST_BB) $(PG_SUITES)

fuzz:
	@scripts/deps.sh test
	@CC=clang cmake -S . -B $(FUZZ) -DCMAKE_BUILD_TYPE=Debug -DLM_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ) -j $(JOBS)
	@scripts/fuzz.sh $(FUZZ) $(FUZZ_SECS)

fuzz-long:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECS=600

# Container images lotmesh/<process>:<version> and :latest, built with podman from
# deploy/Containerfile (scripts/images.sh says where the Debian base comes from).
images:
	@scripts/deps.sh delivery
	@scripts/images.sh

# The delivery checks: the images brought up with podman-compose from deploy/compose.yaml
# and driven, deploy/k8s rendered and schema-checked, .github/workflows linted; timings and
# sizes in build/delivery/*.json.
delivery:
	@scripts/timed.sh images $(MAKE) --no-print-directory images
	@scripts/timed.sh delivery-tests /usr/bin/python3 -m pytest -q tests/delivery
	@/usr/bin/python3 -c 'import json,sys; d=json.load(open("build/delivery/compose.json")); \
	  print("delivery: images (MB)", d.get("image_sizes_mb"), "| up to gateway answering", \
	        d.get("up_to_gateway_answering_s"), "s | rolling restart", d.get("rolling_restart", {}).get("requests"), \
	        "requests,", d.get("rolling_restart", {}).get("errors"), "errors")' 2>/dev/null || true

# The chaos suite with long faults and more load (the short form runs in `make test`).
chaos: asan
	@CHAOS_SECONDS=10 CHAOS_RATE=120 LOTMESH_BIN_DIR=$(CURDIR)/$(ASAN) /usr/bin/python3 -m pytest -q -s tests/blackbox/test_chaos.py

bench: build
	@scripts/deps.sh bench
	@bench/run.sh $(BUILD)

bench-services: build
	@scripts/deps.sh bench
	@bench/services.sh $(BUILD)

bench-gateway: build
	@scripts/deps.sh bench
	@bench/gateway.sh $(BUILD)

bench-edge: build
	@scripts/deps.sh bench
	@bench/edge.sh $(BUILD)

# End-to-end event lag (commit to applied) at 1,000 and 5,000 events/s (EVENT_BROKER_URL
# selects RabbitMQ; unset: the built-in feed).
bench-events: build
	@scripts/deps.sh bench
	@bench/events.sh $(BUILD)

# RabbitMQ: relay throughput with confirms vs a bare rabbitmq-c publisher on the same broker,
# then the lag bench (bench/events.sh) over that broker; one broker for the run.
bench-events-amqp: build
	@scripts/deps.sh bench
	@bench/events_amqp.sh $(BUILD)

format:
	@clang-format -i lib/*/*.[ch] services/*/*.[ch] tests/unit/*.c fuzz/*.c

lint:
	@cppcheck --quiet --enable=warning,performance,portability --error-exitcode=1 \
	  --suppress=missingIncludeSystem $(addprefix -I ,$(wildcard lib/*)) lib services

clean:
	@rm -rf build
