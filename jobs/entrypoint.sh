#!/bin/bash
# Entry point of the jobs image (/opt/cryptolake/entrypoint.sh).
#
# Spark drivers run `cryptolake-jobs <command>` (the operator passes the command as the
# container's arguments). The executor pods a driver creates on Kubernetes run this image with
# the single argument `executor` and their settings in SPARK_* variables; for them this starts
# the executor backend as Spark's own image does (resource-managers/kubernetes/docker/.../
# entrypoint.sh), with pyspark's jars and the Delta/Kafka/S3A jars of the image on the classpath.
set -euo pipefail

if [ "${1:-}" != executor ]; then
  exec cryptolake-jobs "$@"
fi
shift

if [ -z "${SPARK_HOME:-}" ]; then
  for pyspark in /opt/cryptolake/lib/python3*/site-packages/pyspark; do
    export SPARK_HOME="$pyspark"
  done
fi
classpath="$SPARK_HOME/jars/*:${CRYPTOLAKE_SPARK_JARS_DIR:-/opt/spark-jars}/*"
if [ -n "${SPARK_CLASSPATH:-}" ]; then
  classpath="$SPARK_CLASSPATH:$classpath"
fi
if [ -n "${SPARK_EXTRA_CLASSPATH:-}" ]; then
  classpath="$classpath:$SPARK_EXTRA_CLASSPATH"
fi
if [ -n "${SPARK_CONF_DIR:-}" ]; then
  classpath="$SPARK_CONF_DIR:$classpath"
fi

# SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, … in numeric order (the driver's executor JVM options).
java_opts=()
for name in $(compgen -e | grep '^SPARK_JAVA_OPT_' | sort -t_ -k4 -n || true); do
  java_opts+=("${!name}")
done

exec "${JAVA_HOME:+$JAVA_HOME/bin/}java" \
  "${java_opts[@]}" \
  -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" \
  -cp "$classpath" \
  org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
  --driver-url "$SPARK_DRIVER_URL" \
  --executor-id "$SPARK_EXECUTOR_ID" \
  --cores "$SPARK_EXECUTOR_CORES" \
  --app-id "$SPARK_APPLICATION_ID" \
  --hostname "$SPARK_EXECUTOR_POD_IP" \
  --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}" \
  --podName "$SPARK_EXECUTOR_POD_NAME"
