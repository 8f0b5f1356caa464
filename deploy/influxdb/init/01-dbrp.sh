#!/bin/sh
# Maps the InfluxDB 1.x database/retention policy `hazardwatch/autogen` to the bucket created
# by the image's setup mode, so that InfluxQL (Grafana dashboards, `/query`) works against
# InfluxDB 2.x (contract section 2).
#
# Run by the influxdb:2.7 image's entrypoint from /docker-entrypoint-initdb.d, once, right
# after `influx setup` on an empty data volume, against a temporary server. The entrypoint
# exports DOCKER_INFLUXDB_INIT_BUCKET and DOCKER_INFLUXDB_INIT_BUCKET_ID and sets up the
# `influx` CLI with the host and the admin token. If this script fails, the entrypoint
# removes the half-initialised data so that the next start tries again.
#
# For a server set up by hand, run the same command once (with --host, --org and --token).
set -eu

db="${DOCKER_INFLUXDB_INIT_BUCKET:?not set: run by the influxdb image entrypoint only}"
bucket_id="${DOCKER_INFLUXDB_INIT_BUCKET_ID:?not set: run by the influxdb image entrypoint only}"

influx v1 dbrp create \
    --db "$db" \
    --rp autogen \
    --bucket-id "$bucket_id" \
    --default

echo "01-dbrp.sh: InfluxQL database ${db}, retention policy autogen -> bucket ${bucket_id}"
